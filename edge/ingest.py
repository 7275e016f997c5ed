"""MQTT ingest: a persistent QoS 1 session, micro-batched commits, acks only after the commit.

The broker keeps every reading it has not had a PUBACK for, across our crashes and restarts
(fixed client id, clean_session=False). We PUBACK a message only once the SQLite transaction
holding it has committed, so a kill -9 at any instant loses nothing: unacked messages come back
on reconnect and the store drops the ones it already has.

Backpressure: aiomqtt's incoming queue is bounded (``queue_max``). When it is full aiomqtt
discards the message without acking it, which is safe (the broker still owns it) but it will
only be resent on reconnect (PROBES.md §2), so after an overflow we finish the batch at hand
and reconnect to have the broker redeliver what we shed.

Degraded mode: when the disk refuses a batch (full, read-only, I/O error) the batch is not
acked, so the broker keeps it; the pipeline has scored it and raised its alerts from memory.
The gateway says so (/healthz, /api/status, /metrics), keeps consuming (the broker stops
sending once its in-flight window is full), frees space by retention, probes the disk every
``degraded_retry_s`` and, once a write commits, reconnects so the broker resends what it
holds unacked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import aiomqtt

from edge.degraded import StorageHealth, is_storage_failure
from edge.metrics import GatewayMetrics
from edge.pipeline import Pipeline
from edge.retention import Retention
from edge.settings import GatewaySettings
from edge.store import now_ms
from edge.validate import Incoming
from shared.topics import STATUS_SUBSCRIPTION, TELEMETRY_SUBSCRIPTION

log = logging.getLogger(__name__)


class _OverflowError(Exception):
    """The incoming queue overflowed: reconnect so the broker resends what was shed."""


class _ResumeError(Exception):
    """Writes work again after degraded mode: reconnect so the broker resends unacked messages."""


class _BoundedQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's queue, bounded, remembering whether it ever had to refuse a message."""

    overflowed = False

    def put_nowait(self, item: aiomqtt.Message) -> None:
        try:
            super().put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            raise


class Ingestor:
    """Keeps an MQTT session alive and feeds its messages through the pipeline."""

    def __init__(self, settings: GatewaySettings, pipeline: Pipeline,
                 metrics: GatewayMetrics | None = None,
                 clock: Callable[[], int] = now_ms, *,
                 storage: StorageHealth | None = None,
                 retention: Retention | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.clock = clock
        self.storage = storage if storage is not None else StorageHealth()
        self.retention = retention
        self.connected = False
        self.queue_depth: Callable[[], int] = lambda: 0
        # Messages handled from memory but left unacked with the broker in degraded mode.
        self.unacked = 0
        self._next_probe = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, consume and reconnect with jittered exponential back-off until ``stop``."""
        s = self.settings
        delay = 0.5
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self._session(stop)
            except aiomqtt.MqttError as exc:
                log.warning("broker %s:%d unavailable or lost: %s", s.mqtt.host, s.mqtt.port, exc)
            except sqlite3.Error:
                # Nothing of the failed batch was acked: the broker resends it on reconnect.
                log.exception("database error; reconnecting after a pause")
            except _OverflowError:
                log.warning("incoming queue full (%d); reconnecting to shed load",
                            s.ingest.queue_max)
                delay = 0.0
            except _ResumeError:
                log.warning("database writable again; reconnecting to have the "
                            "broker resend %d unacked messages", self.unacked)
                self.unacked = 0
                delay = 0.0
            finally:
                self.connected = False
            if stop.is_set():
                break
            if time.monotonic() - started > 30:
                delay = 0.5  # the last session was healthy: start the back-off afresh
            pause = delay * random.uniform(0.5, 1.0)  # jitter: a fleet must not reconnect at once
            log.info("reconnecting in %.1f s", pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
            delay = min(max(delay * 2, 0.5), 30.0)

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        client = aiomqtt.Client(
            s.mqtt.host, s.mqtt.port, identifier=s.gateway_id, clean_session=False,
            keepalive=s.mqtt.keepalive_s, queue_type=_BoundedQueue,
            max_queued_incoming_messages=s.ingest.queue_max,
        )
        # aiomqtt has no manual-ack option; set it on the paho client it wraps, before
        # connecting (aiomqtt is pinned to 2.5.1 in pyproject.toml for this reason).
        client._client.manual_ack_set(True)
        return client

    async def _session(self, stop: asyncio.Event) -> None:
        client = self._client()
        async with client:
            await client.subscribe([(TELEMETRY_SUBSCRIPTION, 1), (STATUS_SUBSCRIPTION, 1)])
            self.connected = True
            log.info("connected to %s:%d, subscribed (persistent session)",
                     self.settings.mqtt.host, self.settings.mqtt.port)
            queue = client._queue
            self.queue_depth = queue.qsize
            while True:
                batch = await self._next_batch(client, stop)
                if batch is None:
                    self._probe()  # degraded and idle: is the disk back?
                    continue
                if not batch:
                    return
                if not self._commit(batch):
                    continue  # not acked: the broker keeps the batch
                for m in batch:
                    if m.qos > 0:
                        # After the commit: from here on the broker may forget the message.
                        client._client.ack(m.mid, m.qos)
                self._recovered()
                if isinstance(queue, _BoundedQueue) and queue.overflowed:
                    raise _OverflowError

    def _recovered(self) -> None:
        """A write committed: leave degraded mode; reconnect if messages were left unacked."""
        if self.storage.degraded:
            log.warning("leaving degraded mode: database writable again")
            self.storage.leave()
        if self.unacked:
            raise _ResumeError

    def _probe(self) -> None:
        """While degraded: free space by retention, then try a real write."""
        self._next_probe = time.monotonic() + self.settings.storage.degraded_retry_s
        try:
            if self.retention is not None:
                self.retention.enforce(force=True)
            self.pipeline.store.probe_write()
        except sqlite3.Error as exc:
            if not is_storage_failure(exc):
                raise
            self.storage.enter(_describe(exc))
            log.info("database still refuses writes: %s", exc)
            return
        self._recovered()

    async def _next_batch(self, client: aiomqtt.Client, stop: asyncio.Event
                          ) -> list[aiomqtt.Message] | None:
        """Wait for one message (or ``stop``), then gather up to batch_max for batch_wait_ms.

        None: degraded mode and no message for ``degraded_retry_s``, time to probe the disk.
        """
        # We read aiomqtt's queue directly instead of ``client.messages``: cancelling that
        # iterator (on a timeout or on stop) can drop a message it had already dequeued, and
        # an unacked, dropped message stays stuck in flight until the next reconnect.
        # asyncio.Queue.get() only removes an item when it returns, so it is cancel-safe.
        s = self.settings
        queue = client._queue
        idle = s.storage.degraded_retry_s if self.storage.degraded else None
        try:
            first = await asyncio.wait_for(self._first(client, queue, stop), idle)
        except TimeoutError:
            return None
        if first is None:
            return []
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.ingest.batch_wait_ms / 1000
        while len(batch) < s.ingest.batch_max:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    @staticmethod
    async def _first(client: aiomqtt.Client, queue: asyncio.Queue[aiomqtt.Message],
                     stop: asyncio.Event) -> aiomqtt.Message | None:
        """The next message; None once ``stop`` is set; MqttError if the connection drops."""
        if not queue.empty():
            return queue.get_nowait()
        getter = asyncio.ensure_future(queue.get())
        stopping = asyncio.ensure_future(stop.wait())
        disconnected = client._disconnected
        waiting: set[asyncio.Future[Any]] = {getter, stopping, disconnected}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            getter.cancel()  # no-op if it already holds a message
        if getter.done() and not getter.cancelled():
            return getter.result()
        if disconnected.done():
            cause = disconnected.exception()  # retrieving it also keeps asyncio from warning
            raise aiomqtt.MqttError(f"disconnected from the broker: {cause}") from cause
        return None

    def _commit(self, batch: list[aiomqtt.Message]) -> bool:
        """Run a batch through the pipeline; False if the disk refused it (degraded mode)."""
        received = self.clock()
        incoming = [Incoming(str(m.topic), _payload_bytes(m.payload), received) for m in batch]
        t0 = time.perf_counter()
        try:
            result = self.pipeline.handle(incoming)
        except sqlite3.Error as exc:
            if not is_storage_failure(exc):
                raise
            if self.storage.enter(_describe(exc)):
                log.error("entering degraded mode, database refuses writes: %s; "
                          "scoring from memory, leaving messages unacked with the broker",
                          exc)
            self.unacked += len(batch)
            if time.monotonic() >= self._next_probe:
                self._probe()  # traffic keeps coming: probe between batches, not only when idle
            return False
        elapsed = time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.observe_batch(len(batch), elapsed)
        log.debug("batch n=%d stored=%d dup=%d dead=%d in %.1f ms",
                  result.received, result.stored, result.duplicates,
                  result.dead_letters, elapsed * 1000)
        return True


def _describe(exc: sqlite3.Error) -> str:
    """A short reason for the status page: SQLite's error name and message."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return f"{name}: {exc}"


def _payload_bytes(payload: object) -> bytes:
    """aiomqtt hands payloads as bytes already; anything else is turned into bytes verbatim."""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
