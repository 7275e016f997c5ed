"""The console's only way to the cloud: its HTTP API, called in process over ASGI with the
signed-in user's API key, so the API decides (401, 403, 409) exactly as it does for curl."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import httpx
from starlette.types import ASGIApp

log = logging.getLogger(__name__)

# Never sent anywhere: the transport hands requests straight to the API app in this process.
_BASE = "http://cloud-api.internal"
_TIMEOUT_S = 30.0
MAX_RAW_PAGE = 5000


class ApiError(Exception):
    """The API refused or failed a request; ``detail`` is its own explanation."""

    def __init__(self, status: int, detail: str, what: str) -> None:
        super().__init__(f"{what}: {detail} (HTTP {status})")
        self.status = status
        self.detail = detail
        self.what = what


class SignedOutError(ApiError):
    """HTTP 401: the key is unknown or was revoked; the console session is over."""


class NotAllowedError(ApiError):
    """HTTP 403: the user's role may not do this."""


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(str(d.get("msg", d)) for d in detail)
    return str(detail if detail is not None else body)


def iso(at: datetime) -> str:
    """A query-string time the API reads as UTC."""
    return at.isoformat()


class CloudApi:
    """The API app of this process; :meth:`as_user` gives a client acting as one user."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def as_user(self, key: str, address: str, forwarded_for: str | None = None) -> UserApi:
        """Calls carrying ``key``; ``address`` (the browser's peer) is what the API
        rate-limits failed sign-ins by, or the ``X-Forwarded-For`` the page request carried
        when that peer is a proxy the API trusts (SMAINT_CLOUD_API__TRUSTED_PROXIES)."""
        return UserApi(self.app, key, address or "unknown", forwarded_for)


class UserApi:
    """The API as one user: each method is one route, each error an :class:`ApiError`."""

    def __init__(self, app: ASGIApp, key: str, address: str,
                 forwarded_for: str | None = None) -> None:
        self._app, self._address = app, address
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        if forwarded_for:
            self._headers["X-Forwarded-For"] = forwarded_for

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: object = None) -> httpx.Response:
        """One API call; raises ApiError (SignedOutError, NotAllowedError) unless 2xx."""
        transport = httpx.ASGITransport(app=self._app, client=(self._address, 0))
        async with httpx.AsyncClient(transport=transport, base_url=_BASE,
                                     timeout=_TIMEOUT_S) as client:
            resp = await client.request(
                method, path, params=params, json=body,
                headers=self._headers)
        if resp.is_success:
            return resp
        what = f"{method} {path}"
        detail = _detail(resp)
        log.info("console: %s refused (%d): %s", what, resp.status_code, detail)
        if resp.status_code == 401:
            raise SignedOutError(401, detail, what)
        if resp.status_code == 403:
            raise NotAllowedError(403, detail, what)
        raise ApiError(resp.status_code, detail, what)

    async def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` with the non-None ``params``; the decoded JSON answer."""
        query = {k: v for k, v in params.items() if v is not None}
        return (await self.request("GET", path, params=query)).json()

    async def send(self, method: str, path: str, body: object) -> Any:
        """``method`` ``path`` with a JSON body; the decoded JSON answer."""
        return (await self.request(method, path, body=body)).json()

    # -- reads ------------------------------------------------------------------------------

    async def sign_in(self, name: str, password: str) -> dict[str, Any]:
        """A session key for ``name`` (``POST /api/v1/sessions``; call on a key-less client)."""
        return dict(await self.send("POST", "/api/v1/sessions",
                                    {"name": name, "password": password}))

    async def sign_out(self) -> None:
        """Revoke the session key this client carries."""
        await self.request("DELETE", "/api/v1/sessions/current")

    async def me(self) -> dict[str, Any]:
        """Who the key belongs to: name, role, key_id."""
        return dict(await self.get("/api/v1/me"))

    async def system(self) -> dict[str, Any]:
        """Environment, versions and connection states."""
        return dict(await self.get("/api/v1/system"))

    async def gateways(self) -> list[dict[str, Any]]:
        """The gateway registry with reported state."""
        return list(await self.get("/api/v1/gateways"))

    async def devices(self) -> list[dict[str, Any]]:
        """The device registry."""
        return list((await self.get("/api/v1/devices"))["devices"])

    async def running_models(self) -> list[dict[str, Any]]:
        """Per gateway and profile, the model version it runs."""
        return list(await self.get("/api/v1/models/running"))

    async def alerts(self, *, limit: int = 200, **filters: Any) -> tuple[list[dict[str, Any]],
                                                                       bool]:
        """Alerts newest first matching ``filters``, at most ``limit``; (alerts, more exist)."""
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = await self.get("/api/v1/alerts", limit=min(1000, limit - len(found)),
                                  after=after, **filters)
            found.extend(page["alerts"])
            after = page["next"]
            if after is None or len(found) >= limit:
                return found, after is not None

    async def alert_audit(self, gateway: str, alert_id: str) -> list[dict[str, Any]]:
        """The alert's audit trail, oldest first."""
        return list(await self.get(f"/api/v1/alerts/{gateway}/{alert_id}/audit"))

    async def decisions_csv(self) -> bytes:
        """Every resolved alert with its decision, as the API's CSV."""
        return (await self.request("GET", "/api/v1/alerts/decisions.csv")).content

    async def orders(self, **filters: Any) -> list[dict[str, Any]]:
        """Maintenance orders newest first."""
        return list(await self.get("/api/v1/orders", limit=1000, **filters))

    async def order_history(self, order_id: int) -> list[dict[str, Any]]:
        """An order's audit trail, oldest first."""
        return list(await self.get(f"/api/v1/orders/{order_id}/history"))

    async def buckets(self, device: str, metric: str, since: datetime, until: datetime,
                      width_s: int) -> dict[str, Any]:
        """One metric of one device bucketed from the rollups."""
        return dict(await self.get("/api/v1/readings/buckets", device=device, metric=metric,
                                   since=iso(since), until=iso(until), width_s=width_s))

    async def readings(self, device: str, since: datetime, until: datetime,
                       most: int, origin: str | None = None
                       ) -> tuple[list[dict[str, Any]], bool]:
        """Raw readings in [since, until) (of ``origin`` only, if given), at most ``most``;
        (readings, more exist)."""
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = await self.get("/api/v1/readings", device=device, since=iso(since),
                                  until=iso(until), after=after, origin=origin,
                                  limit=min(MAX_RAW_PAGE, most + 1 - len(found)))
            found.extend(page["readings"])
            after = page["next"]
            if len(found) > most:
                return found[:most], True
            if after is None:
                return found, False

    # -- actions ----------------------------------------------------------------------------

    async def acknowledge(self, gateway: str, alert_id: str, comment: str) -> dict[str, Any]:
        """open → acknowledged."""
        return dict(await self.send("POST", f"/api/v1/alerts/{gateway}/{alert_id}/acknowledge",
                                    {"comment": comment}))

    async def resolve(self, gateway: str, alert_id: str, decision: str,
                      comment: str) -> dict[str, Any]:
        """→ resolved with a decision."""
        return dict(await self.send("POST", f"/api/v1/alerts/{gateway}/{alert_id}/resolve",
                                    {"decision": decision, "comment": comment}))

    async def create_order(self, gateway: str, alert_id: str,
                           spec: dict[str, Any]) -> dict[str, Any]:
        """A maintenance order for the alert's device."""
        return dict(await self.send("POST", f"/api/v1/alerts/{gateway}/{alert_id}/orders", spec))

    async def change_order(self, order_id: int, change: dict[str, Any]) -> dict[str, Any]:
        """Move an order along its workflow (or re-prioritise, re-assign)."""
        return dict(await self.send("PATCH", f"/api/v1/orders/{order_id}", change))

    # -- models -----------------------------------------------------------------------------

    async def rollouts(self, limit: int = 50) -> list[dict[str, Any]]:
        """Rollouts newest first, each with its gateways' stage, status and readings scored."""
        return list(await self.get("/api/v1/rollouts", limit=limit))

    async def deploy(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Start a rollout: ``spec`` is the API's RolloutCreate (canaries, then the fleet)."""
        return dict(await self.send("POST", "/api/v1/rollouts", spec))

    async def rollback(self, rollout_id: int, reason: str) -> dict[str, Any]:
        """Order every gateway of the rollout back to its previous model."""
        return dict(await self.send("POST", f"/api/v1/rollouts/{rollout_id}/rollback",
                                    {"reason": reason}))

    async def cancel(self, rollout_id: int, reason: str) -> dict[str, Any]:
        """Halt the rollout where it stands."""
        return dict(await self.send("POST", f"/api/v1/rollouts/{rollout_id}/cancel",
                                    {"reason": reason}))

    async def training_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """MLflow's training runs newest first, with metrics and the gate's decision."""
        return list(await self.get("/api/v1/training/runs", limit=limit))

    async def retrain(self, spec: dict[str, Any]) -> int:
        """Queue a training job (``spec`` is the API's TrainingRunCreate); its job id."""
        return int((await self.send("POST", "/api/v1/training/runs", spec))["job_id"])

    async def training_job(self, job_id: int) -> dict[str, Any]:
        """A training job: queued, running, done or failed, with its last error."""
        return dict(await self.get(f"/api/v1/training/jobs/{job_id}"))

    async def drift_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """Drift events newest first, with the features that moved and the retraining's gate."""
        return list(await self.get("/api/v1/drift/events", limit=limit))

    # -- reports ----------------------------------------------------------------------------

    async def report(self, fmt: str, since: datetime, until: datetime,
                     device: str | None) -> tuple[bytes, str]:
        """The range report of ``device`` (None: the fleet) as csv, html or pdf; (bytes, the
        file name the API gave it)."""
        resp = await self.request("GET", "/api/v1/reports/devices", params={
            "format": fmt, "since": iso(since), "until": iso(until),
            **({"device": device} if device else {})})
        disposition = resp.headers.get("content-disposition", "")
        name = disposition.partition('filename="')[2].rstrip('"') or f"report.{fmt}"
        return resp.content, name
