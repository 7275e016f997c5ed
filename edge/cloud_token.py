"""The gateway's cloud token: provisioned, or enrolled with a one-time code, and rotated.

- ``SMAINT_GATEWAY_SYNC__TOKEN``: a token provisioned by hand (``smaint cloud gateway add``);
  used as is and never rotated by the gateway (it could not store the new one there).
- ``SMAINT_GATEWAY_SYNC__ENROL_CODE``: a one-time code from ``smaint cloud gateway enrol``. At
  first contact the gateway exchanges it (``POST /api/v1/enrol``) for its token, stores that in
  ``cloud-token`` beside its database (mode 0600, ``SMAINT_GATEWAY_SYNC__TOKEN_FILE``) and
  uses the file from then on; the code is spent.
- Rotation: when a sync answer says ``rotate_token``, the gateway fetches a new token
  (``POST /api/v1/sync/token``), writes it to the file, then uses it. The cloud keeps the old
  one valid for an overlap period: no upload fails in between, and if the gateway dies before
  the file is written it rotates again with the old one.
"""

from __future__ import annotations

import logging

import httpx

from edge.private_file import read_secret, write_private
from edge.settings import GatewaySettings

log = logging.getLogger(__name__)

ENROL_PATH = "/api/v1/enrol"
ROTATE_PATH = "/api/v1/sync/token"


class TokenError(Exception):
    """The cloud would not give a token (enrolment refused, rotation failed)."""


class CloudToken:
    """The token uploads and bundle downloads carry (:attr:`value`), and how it changes."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.path = settings.cloud_token_path
        self._value = settings.sync.token or read_secret(self.path) or ""

    @property
    def value(self) -> str:
        """The token now ("" until enrolled)."""
        return self._value

    @property
    def rotatable(self) -> bool:
        """Whether the gateway may replace it (not a provisioned SMAINT_GATEWAY_SYNC__TOKEN)."""
        return not self.settings.sync.token

    @property
    def configured(self) -> bool:
        """A token, or an enrolment code to get one."""
        return bool(self._value or self.settings.sync.enrol_code)

    def _url(self, path: str) -> str:
        return self.settings.sync.cloud_url.rstrip("/") + path

    async def enrol(self, http: httpx.AsyncClient) -> None:
        """Exchange the enrolment code for the token and store it; TokenError if refused."""
        s = self.settings
        try:
            resp = await http.post(self._url(ENROL_PATH), json={
                "gateway": s.gateway_id, "code": s.sync.enrol_code})
        except httpx.HTTPError as exc:
            raise TokenError(f"enrolment: network error: {exc!r}") from exc
        if resp.status_code != 200:
            raise TokenError(f"enrolment refused (HTTP {resp.status_code}): {resp.text[:300]}")
        self._store(str(resp.json()["token"]))
        log.info("enrolled with the cloud; token stored in %s", self.path)

    async def rotate(self, http: httpx.AsyncClient) -> None:
        """Fetch a new token with the current one, store it, then use it; TokenError if not."""
        try:
            resp = await http.post(self._url(ROTATE_PATH),
                                   headers={"Authorization": f"Bearer {self._value}"})
        except httpx.HTTPError as exc:
            raise TokenError(f"token rotation: network error: {exc!r}") from exc
        if resp.status_code != 200:
            raise TokenError(f"token rotation refused (HTTP {resp.status_code}): "
                             f"{resp.text[:300]}")
        self._store(str(resp.json()["token"]))
        log.info("cloud token rotated; the new one is in %s", self.path)

    def _store(self, token: str) -> None:
        write_private(self.path, token)  # on disk first: a crash now keeps the new one
        self._value = token
