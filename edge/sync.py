"""Upload the outbox to the cloud: one recorded batch at a time, acked before it counts as synced.

Network errors, 5xx and 429 are retried with jittered exponential back-off (honouring
Retry-After). Any other 4xx means the cloud will never take this batch as it is: it goes to
the sync dead-letter table and the next batch goes on. 401/403 are the exception: they say the
token is wrong, not the data, so the batch stays queued and uploads pause (data is not thrown
away because someone revoked a token).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from edge.cloud_token import CloudToken, TokenError
from edge.exceptions import SyncRetryableError
from edge.outbox import BatchInfo, Outbox
from edge.settings import GatewaySettings
from edge.store import now_ms
from shared import batchcodec
from shared.schemas import DesiredState, GatewayState, SyncAck

log = logging.getLogger(__name__)

SYNC_PATH = "/api/v1/sync/batches"
_RETRY_AFTER_MAX_S = 900.0
_REASON_MAX = 2000

Outcome = Literal["idle", "acked", "rejected", "auth", "failed", "disabled"]


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one :meth:`Uploader.sync_once` call did."""

    outcome: Outcome
    batch_seq: int | None = None
    detail: str = ""


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _RETRY_AFTER_MAX_S)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), _RETRY_AFTER_MAX_S)


class Uploader:
    """Drains the outbox to ``{cloud_url}/api/v1/sync/batches``."""

    def __init__(self, settings: GatewaySettings, outbox: Outbox,
                 client: httpx.AsyncClient | None = None, *, token: CloudToken | None = None,
                 state: Callable[[], GatewayState] | None = None,
                 on_desired: Callable[[DesiredState], None] | None = None) -> None:
        self.settings = settings
        self.token = token or CloudToken(settings)
        # Hands each ack's desired state on (edge.rollout: the models the cloud wants).
        self._on_desired = on_desired
        # The actual state reported with each upload (models run, config applied).
        self._state = state or (lambda: GatewayState(backlog=outbox.backlog()))
        self.outbox = outbox
        self._client = client
        self._own_client = client is None
        self.last_ack_ms: int | None = None
        self._started_ms = now_ms()
        self.last_error: str | None = None
        # Pause between idle uploads; the desired config may change it (edge.desired_config).
        self.interval_s = settings.sync.interval_s
        self._backoff = wait_random_exponential(multiplier=0.5, max=settings.sync.retry_max_s)

    @property
    def enabled(self) -> bool:
        """Uploads need a token (or a code to enrol for one); else readings stay local."""
        return self.token.configured

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.settings.sync.timeout_s)
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if this uploader created it."""
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run(self, stop: asyncio.Event) -> None:
        """Upload until ``stop``: back to back while there is a backlog, else every interval."""
        s = self.settings
        if not self.enabled:
            log.warning("no cloud token (SMAINT_GATEWAY_SYNC__TOKEN, or __ENROL_CODE to enrol):"
                        " readings are kept locally and not synced")
        while not stop.is_set():
            result = await self._enrol() if self.enabled and not self.token.value else None
            if result is None:
                result = await self.sync_once() if self.enabled else SyncResult("disabled")
            if result.outcome in {"acked", "rejected"}:
                continue
            pause = s.sync.auth_backoff_s if result.outcome == "auth" else self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)

    async def sync_once(self) -> SyncResult:
        """Upload the pending batch (recording a new one first if none is pending)."""
        s = self.settings
        now = now_ms()
        # An idle gateway still reports in: its state goes up, the cloud's decisions (models,
        # config, alert reviews, scenarios) come down, and the fleet sees it online.
        heartbeat = now - (self.last_ack_ms or self._started_ms) >= s.sync.heartbeat_s * 1000
        info = self.outbox.pending() or self.outbox.record(
            s.sync.batch_max, now, backlog_max=s.sync.backlog_max,
            catchup_after=s.sync.catchup_after, heartbeat=heartbeat)
        if info is None:
            return SyncResult("idle")
        body = await self._encode(info)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(SyncRetryableError),
                wait=self._wait,
                stop=stop_after_attempt(self.settings.sync.retry_attempts),
                before_sleep=before_sleep_log(log, logging.WARNING),
                reraise=True,
            ):
                with attempt:
                    return await self._post(info, body)
        except SyncRetryableError as exc:
            self.last_error = exc.reason
            log.warning("batch %d not uploaded after %d tries: %s; will retry",
                        info.batch_seq,
                        self.settings.sync.retry_attempts, exc.reason)
            return SyncResult("failed", info.batch_seq, exc.reason)
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _enrol(self) -> SyncResult | None:
        """First contact with an enrolment code: None once a token is stored."""
        try:
            await self.token.enrol(self._http())
        except TokenError as exc:
            self.last_error = str(exc)
            log.error("%s; uploads paused %.0f s", exc, self.settings.sync.auth_backoff_s)
            return SyncResult("auth", None, str(exc))
        return None

    async def _rotate(self) -> None:
        """Fetch the new token the cloud asked for; a failure is retried at the next ack."""
        if not self.token.rotatable:
            log.warning("the cloud asks for a new token, but this gateway's token is "
                        "provisioned (SMAINT_GATEWAY_SYNC__TOKEN): issue one with `smaint cloud "
                        "gateway add` or enrol with a code")
            return
        try:
            await self.token.rotate(self._http())
        except TokenError as exc:
            log.warning("%s; trying again after the next upload", exc)

    def _wait(self, state: RetryCallState) -> float:
        """The server's Retry-After if it gave one, else jittered exponential back-off."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, SyncRetryableError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        return float(self._backoff(state))

    async def _encode(self, info: BatchInfo) -> bytes:
        # The actual state goes with the batch but is not part of its identity: a retry may
        # report a newer state, and the cloud keeps the one of the first application.
        batch = self.outbox.load(info, self.settings.gateway_id, self._state())
        # In a worker thread: a 5,000-reading batch takes milliseconds of CPU that the event
        # loop (ingest) should not wait for.
        if self.settings.sync.encoding == "json-gzip":
            return await asyncio.to_thread(gzip.compress, batch.model_dump_json().encode(), 6)
        return await asyncio.to_thread(batchcodec.encode, batch)

    async def _post(self, info: BatchInfo, body: bytes) -> SyncResult:
        s = self.settings
        url = s.sync.cloud_url.rstrip("/") + SYNC_PATH
        columnar = s.sync.encoding == "columnar-zstd"
        headers = {"Authorization": f"Bearer {self.token.value}",
                   "Content-Type": batchcodec.MEDIA_TYPE if columnar else "application/json",
                   "Content-Encoding": "zstd" if columnar else "gzip"}
        try:
            resp = await self._http().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.outbox.note_attempt(info.batch_seq, f"network: {exc!r}")
            raise SyncRetryableError(info.batch_seq, f"network error: {exc!r}") from exc
        code = resp.status_code
        if code == 429 or code >= 500:
            reason = f"HTTP {code}: {resp.text[:200]}"
            self.outbox.note_attempt(info.batch_seq, reason)
            raise SyncRetryableError(info.batch_seq, reason,
                                     _retry_after(resp.headers.get("Retry-After")))
        if code in (401, 403):
            reason = f"HTTP {code}: the cloud refused this gateway's token: {resp.text[:500]}"
            self.outbox.note_attempt(info.batch_seq, reason)
            self.outbox.note_dead_letter(info.batch_seq, code, reason, now_ms())
            self.last_error = reason
            log.error("batch %d: %s; uploads paused %.0f s, batch kept",
                      info.batch_seq, reason, s.sync.auth_backoff_s)
            return SyncResult("auth", info.batch_seq, reason)
        if 400 <= code < 500:
            reason = f"HTTP {code}: {resp.text[:_REASON_MAX]}"
            self.outbox.note_attempt(info.batch_seq, reason)
            self.outbox.mark_rejected(info, code, reason, now_ms())
            self.last_error = reason
            log.error("batch %d rejected (%d readings dead-lettered): %s",
                      info.batch_seq, info.n_readings, reason)
            return SyncResult("rejected", info.batch_seq, reason)
        if code != 200:
            reason = f"HTTP {code}: unexpected answer"
            self.outbox.note_attempt(info.batch_seq, reason)
            raise SyncRetryableError(info.batch_seq, reason)
        try:
            ack = SyncAck.model_validate_json(resp.content)
        except ValidationError as exc:
            reason = f"unreadable SyncAck: {exc.errors(include_url=False)[:1]}"
            self.outbox.note_attempt(info.batch_seq, reason)
            raise SyncRetryableError(info.batch_seq, reason) from exc
        if ack.batch_seq != info.batch_seq or ack.gateway != s.gateway_id:
            reason = f"ack for {ack.gateway}/{ack.batch_seq}, sent {s.gateway_id}/{info.batch_seq}"
            self.outbox.note_attempt(info.batch_seq, reason)
            raise SyncRetryableError(info.batch_seq, reason)
        self.outbox.note_attempt(info.batch_seq, None)
        self.outbox.mark_acked(info, now_ms(), ack.desired, body_bytes=len(body))
        if ack.desired is not None and self._on_desired is not None:
            self._on_desired(ack.desired)
        if ack.rotate_token:
            await self._rotate()
        self.last_ack_ms = now_ms()
        self.last_error = None
        log.info("%s batch %d acked: %d readings (%d new, %d duplicate), %d alerts, "
                 "%d aggregates%s", info.kind, info.batch_seq, info.n_readings,
                 ack.readings_inserted, ack.readings_duplicate, info.n_alerts, info.n_aggregates,
                 "" if ack.first_time else " (again)")
        return SyncResult("acked", info.batch_seq)
