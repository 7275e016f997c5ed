"""The gateway's MQTT session: aiomqtt plus what it does not offer, in one place.

Why this module exists: the gateway must PUBACK a reading only after the SQLite transaction
holding it committed (see edge/ingest.py), and aiomqtt 2.5.1 has no manual-ack API. So we
reach into the paho client aiomqtt wraps (``_client.manual_ack_set``, ``_client.ack``), and
we read aiomqtt's incoming queue and its disconnect future (``_queue``, ``_disconnected``)
directly instead of iterating ``client.messages``: cancelling that iterator (on a timeout or
on stop) can drop a message it had already dequeued, and an unacked, dropped message stays
stuck in flight until the next reconnect. Every private access is here and nowhere else;
aiomqtt is pinned (``aiomqtt==2.5.1`` in pyproject.toml) for this reason, and
tests/test_edge_ingest.py and tests/test_edge_kill.py exercise each access on a real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiomqtt
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from edge.settings import MqttSettings

log = logging.getLogger(__name__)


def login_options(mqtt: MqttSettings) -> dict[str, Any]:
    """aiomqtt.Client keyword arguments for the gateway's broker account and TLS settings."""
    options: dict[str, Any] = {}
    if mqtt.username:
        options["username"] = mqtt.username
        options["password"] = mqtt.secret()
    if mqtt.tls_ca_file:
        options["tls_params"] = aiomqtt.TLSParameters(ca_certs=mqtt.tls_ca_file)
    return options


def settle_disconnect(client: aiomqtt.Client) -> None:
    """Retrieve a lost connection's error from aiomqtt's disconnect future (private).

    ``client.messages`` raises on a disconnect but leaves the future's exception unread, and
    asyncio then logs "Future exception was never retrieved" when it is collected.
    """
    disconnected = client._disconnected  # private: see the module docstring
    if disconnected.done() and not disconnected.cancelled():
        disconnected.exception()


class ArrivalQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's incoming queue, bounded; remembers overflows and each message's arrival.

    Arrival times (``time.perf_counter``) sit in a parallel FIFO: messages leave the queue
    only through :meth:`MqttSession.take_nowait` and :meth:`MqttSession.wait_message`,
    which pop both together.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.overflowed = False
        self.arrivals: deque[float] = deque()

    def put_nowait(self, item: aiomqtt.Message) -> None:
        """Enqueue (aiomqtt calls this for every message); note an overflow, stamp arrival."""
        try:
            super().put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            raise
        self.arrivals.append(time.perf_counter())


@dataclass(frozen=True, slots=True)
class Received:
    """One message off the broker with its arrival time (``time.perf_counter``)."""

    message: aiomqtt.Message
    arrived: float


class MqttSession:
    """A persistent QoS 1 session whose messages are acknowledged by the caller, not paho."""

    def __init__(self, host: str, port: int, identifier: str, *, keepalive: int,
                 queue_max: int, login: Mapping[str, Any] | None = None) -> None:
        self.client = aiomqtt.Client(
            host, port, identifier=identifier, clean_session=False, keepalive=keepalive,
            queue_type=ArrivalQueue, max_queued_incoming_messages=queue_max, **(login or {}),
        )
        # Private: no manual-ack option in aiomqtt; must be set before connecting.
        self.client._client.manual_ack_set(True)
        queue = self.client._queue  # private: see the module docstring
        if not isinstance(queue, ArrivalQueue):
            raise TypeError(f"aiomqtt built a {type(queue).__name__}, not the ArrivalQueue "
                            "asked for: check the pinned aiomqtt version")
        self.queue: ArrivalQueue = queue

    async def __aenter__(self) -> MqttSession:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(*exc)  # type: ignore[arg-type]

    async def subscribe(self, topics: list[tuple[str, int]]) -> None:
        """Subscribe to (filter, qos) pairs; waits as long as the SUBACK takes.

        No timeout: the broker sends a persistent session's queued messages first, so after
        an outage the SUBACK can come thousands of messages later. A dead connection ends
        the wait anyway (keepalive, and the consumer sees the disconnect).
        """
        await self.client.subscribe(topics, timeout=math.inf)

    def depth(self) -> int:
        """Messages waiting in the incoming queue."""
        return self.queue.qsize()

    @property
    def overflowed(self) -> bool:
        """True once the incoming queue had to discard a message (it was never acked)."""
        return self.queue.overflowed

    def ack(self, message: aiomqtt.Message) -> None:
        """PUBACK one message: only after the transaction holding it committed."""
        if message.qos > 0:
            self.client._client.ack(message.mid, message.qos)  # private: no aiomqtt API

    def take_nowait(self) -> Received | None:
        """The next queued message, or None if the queue is empty."""
        if self.queue.empty():
            return None
        return Received(self.queue.get_nowait(), self.queue.arrivals.popleft())

    def take_into(self, batch: list[Received], limit: int) -> int:
        """Move queued messages into ``batch`` until it holds ``limit``; how many were moved."""
        queue, arrivals = self.queue, self.queue.arrivals
        n = min(queue.qsize(), limit - len(batch))
        for _ in range(max(n, 0)):
            batch.append(Received(queue.get_nowait(), arrivals.popleft()))
        return max(n, 0)

    async def wait_message(self, stop: asyncio.Event, idle_s: float | None = None
                           ) -> Received | None:
        """The next message; None once ``stop`` is set; MqttError if the connection drops.

        TimeoutError after ``idle_s`` seconds without a message. Cancel-safe until a
        message is taken: asyncio.Queue.get() removes an item only when it returns.
        """
        got = self.take_nowait()
        if got is not None:
            return got
        getter = asyncio.ensure_future(self.queue.get())
        stopping = asyncio.ensure_future(stop.wait())
        disconnected = self.client._disconnected  # private: aiomqtt's disconnect future
        waiting: set[asyncio.Future[Any]] = {getter, stopping, disconnected}
        try:
            done, _ = await asyncio.wait(waiting, timeout=idle_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            getter.cancel()  # no-op if it already holds a message
        if getter.done() and not getter.cancelled():
            return Received(getter.result(), self.queue.arrivals.popleft())
        if disconnected.done():
            cause = disconnected.exception()  # retrieving it also keeps asyncio from warning
            raise aiomqtt.MqttError(f"disconnected from the broker: {cause}") from cause
        if not done:
            raise TimeoutError(f"no message within {idle_s} s")
        return None


class _HealthyEndError(Exception):
    """A session that had run for a while ended: reconnect with the back-off started afresh."""


async def keep_connected(run_once: Callable[[], Awaitable[None]], stop: asyncio.Event, *,
                         name: str, retry_on: tuple[type[BaseException], ...],
                         at_once: tuple[type[BaseException], ...] = (),
                         healthy_after_s: float = 30.0, max_wait_s: float = 30.0) -> None:
    """Run ``run_once`` (connect, work) again whenever it fails with ``retry_on``, until ``stop``.

    Between attempts a jittered exponential back-off (tenacity: up to 0.5 * 2**n s, at most
    ``max_wait_s``; jitter so that a fleet does not reconnect at once), none after an
    ``at_once`` error (a reconnect wanted on purpose). A session that lasted
    ``healthy_after_s`` starts the back-off afresh. Logs before and after each attempt.
    """
    backoff = wait_random_exponential(multiplier=0.5, max=max_wait_s)

    def pause(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return 0.0 if isinstance(exc, at_once) else float(backoff(state))

    started = time.monotonic()

    def before(state: RetryCallState) -> None:
        nonlocal started
        started = time.monotonic()
        log.info("%s: connecting (attempt %d)", name, state.attempt_number)

    def after(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s: attempt %d ended after %.1f s: %s: %s", name, state.attempt_number,
                    time.monotonic() - started, type(exc).__name__, exc)

    def before_sleep(state: RetryCallState) -> None:
        log.info("%s: reconnecting in %.1f s", name, state.upcoming_sleep)

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    while not stop.is_set():
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(retry_on), wait=pause, sleep=sleep,
            stop=lambda _: stop.is_set(), before=before, after=after,
            before_sleep=before_sleep, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    if stop.is_set():
                        return
                    try:
                        await run_once()
                    except retry_on as exc:
                        if time.monotonic() - started < healthy_after_s:
                            raise
                        raise _HealthyEndError(f"{type(exc).__name__}: {exc}") from exc
        except _HealthyEndError as exc:
            log.warning("%s: session lost after running a while (%s); reconnecting", name, exc)
            continue
        except retry_on:
            if stop.is_set():
                return  # failing while stopping: nothing left to retry
            raise
        return
