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
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable

import aiomqtt

from edge.degraded import StorageHealth, is_storage_failure
from edge.metrics import GatewayMetrics
from edge.mqtt_session import MqttSession, Received, keep_connected, login_options
from edge.pipeline import Pipeline
from edge.retention import Retention
from edge.settings import GatewaySettings
from edge.store import now_ms
from edge.validate import Incoming
from shared.topics import STATUS_SUBSCRIPTION, TELEMETRY_SUBSCRIPTION

log = logging.getLogger(__name__)
# Per-batch stage timings as one JSON object per line, at DEBUG (off unless configured):
# bench/edge.py turns it on to break the gateway's latency down by stage.
stage_log = logging.getLogger("edge.ingest.stages")


# A micro-batch closes once no message arrived for this long (see Ingestor._next_batch).
IDLE_GAP_S = 0.002


class WalCheckpointer:
    """Checkpoints the database's WAL from a thread of its own, off the ingest path.

    SQLite otherwise checkpoints inside the COMMIT that takes the WAL past 1,000 pages: at
    1,000 readings/s that is every few dozen batches, and its two fdatasyncs (10-60 ms on a
    busy disk) land on that batch's latency. A PASSIVE checkpoint on another connection runs
    beside the writer (the GIL is released while SQLite works) and keeps the WAL under that
    threshold, so the ingest connection's own checkpoints become a rare backstop.
    """

    def __init__(self, db_path: str, interval_s: float = 0.25) -> None:
        self.db_path = db_path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a no-op for an in-memory database, which has no WAL)."""
        if self.db_path == ":memory:" or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.wait(self.interval_s):
            try:
                if conn is None:
                    conn = sqlite3.connect(self.db_path, isolation_level=None,
                                           check_same_thread=False)
                    conn.execute("PRAGMA busy_timeout=1000")
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                # A full or read-only disk is handled by ingest (degraded mode); the ingest
                # connection's own checkpoints go on meanwhile.
                log.debug("background WAL checkpoint of %s failed: %s", self.db_path, exc)
        if conn is not None:
            conn.close()


class _OverflowError(Exception):
    """The incoming queue overflowed: reconnect so the broker resends what was shed."""


class _ResumeError(Exception):
    """Writes work again after degraded mode: reconnect so the broker resends unacked messages."""


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
        checkpointer = WalCheckpointer(s.storage.path)
        checkpointer.start()
        try:
            await keep_connected(
                lambda: self._session(stop), stop,
                name=f"broker {s.mqtt.host}:{s.mqtt.port}",
                retry_on=(aiomqtt.MqttError, sqlite3.Error, _OverflowError, _ResumeError),
                at_once=(_OverflowError, _ResumeError))
        finally:
            await asyncio.to_thread(checkpointer.stop)

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        session = MqttSession(s.mqtt.host, s.mqtt.port, s.gateway_id,
                              keepalive=s.mqtt.keepalive_s, queue_max=s.ingest.queue_max,
                              login=login_options(s.mqtt))
        try:
            async with session:
                self.queue_depth = session.depth
                log.info("connected to %s:%d (persistent session)", s.mqtt.host, s.mqtt.port)
                # Consume while the SUBACK is pending: the broker sends the session's queued
                # messages right after the CONNACK and before the SUBACK, and after an outage
                # they would overflow the incoming queue if nobody took them meanwhile.
                subscribing = asyncio.ensure_future(self._subscribe(session))
                consuming = asyncio.ensure_future(self._consume(session, stop))
                try:
                    # Cancelling the consumer (a failed subscribe) loses no message for good:
                    # whatever it holds unacked comes back after the reconnect.
                    await asyncio.wait({subscribing, consuming},
                                       return_when=asyncio.FIRST_EXCEPTION)
                    if subscribing.done():
                        subscribing.result()
                    await consuming
                finally:
                    subscribing.cancel()
                    consuming.cancel()
        except sqlite3.Error:
            # Nothing of the failed batch was acked: the broker resends it on reconnect.
            log.exception("database error; reconnecting after a pause")
            raise
        finally:
            self.connected = False

    async def _subscribe(self, session: MqttSession) -> None:
        await session.subscribe([(TELEMETRY_SUBSCRIPTION, 1), (STATUS_SUBSCRIPTION, 1)])
        # Connected means subscribed: a reading published from now on is queued for us.
        self.connected = True
        log.info("subscribed")

    async def _consume(self, session: MqttSession, stop: asyncio.Event) -> None:
        while True:
            batch = await self._next_batch(session, stop)
            if batch is None:
                self._probe()  # degraded and idle: is the disk back?
                continue
            if not batch:
                return
            if not self._commit(batch, session):
                continue  # not acked: the broker keeps the batch
            self._recovered()
            if session.overflowed:
                raise _OverflowError(f"incoming queue full ({self.settings.ingest.queue_max}); "
                                     "reconnecting to shed load")

    def _recovered(self) -> None:
        """A write committed: leave degraded mode; reconnect if messages were left unacked."""
        if self.storage.degraded:
            log.warning("leaving degraded mode: database writable again")
            self.storage.leave()
        if self.unacked:
            n, self.unacked = self.unacked, 0
            raise _ResumeError(f"database writable again; reconnecting so that the broker "
                               f"resends {n} unacked messages")

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

    async def _next_batch(self, session: MqttSession, stop: asyncio.Event
                          ) -> list[Received] | None:
        """Wait for one message (or ``stop``), then gather a micro-batch (see below).

        None: degraded mode and no message for ``degraded_retry_s``, time to probe the disk.

        The batch closes at ``batch_max`` messages, ``batch_wait_ms`` after its first message
        *arrived* (a message that already waited behind the previous batch is not held
        longer), or as soon as no message arrived for ``IDLE_GAP_S``: devices publish in
        bursts, and waiting on after a burst only adds latency. Under load the queue is never
        idle and batches fill up, which is what amortises a commit over many readings.
        """
        s = self.settings
        idle = s.storage.degraded_retry_s if self.storage.degraded else None
        try:
            first = await session.wait_message(stop, idle_s=idle)
        except TimeoutError:
            return None
        if first is None:
            return []
        batch = [first]
        batch_max = s.ingest.batch_max
        session.take_into(batch, batch_max)
        deadline = first.arrived + s.ingest.batch_wait_ms / 1000
        while len(batch) < batch_max:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            # Sleep rather than wait per message: one timer per step, not one per message.
            await asyncio.sleep(min(IDLE_GAP_S, left))
            if not session.take_into(batch, batch_max):
                break  # nothing arrived for a whole step: the burst is over
        return batch

    def _commit(self, batch: list[Received], session: MqttSession) -> bool:
        """Run a batch through the pipeline and ack it; False if the disk refused it."""
        started = time.perf_counter()
        received = self.clock()
        incoming = [Incoming(str(r.message.topic), _payload_bytes(r.message.payload), received)
                    for r in batch]
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
        committed = time.perf_counter()
        for r in batch:
            # After the commit: from here on the broker may forget the message.
            session.ack(r.message)
        acked = time.perf_counter()
        if self.metrics is not None:
            self.metrics.observe_batch(len(batch), committed - started)
        log.debug("batch n=%d stored=%d dup=%d dead=%d in %.1f ms",
                  result.received, result.stored, result.duplicates,
                  result.dead_letters, (acked - started) * 1000)
        if stage_log.isEnabledFor(logging.DEBUG):
            st = result.stages
            stage_log.debug("%s", json.dumps({
                "at": time.time(), "n": len(batch),
                "queue_wait_ms": [round((started - r.arrived) * 1000, 3) for r in batch],
                "decode_ms": st.decode * 1000, "dedupe_ms": st.dedupe * 1000,
                "score_ms": st.score * 1000, "prepare_ms": st.prepare * 1000,
                "commit_ms": st.commit * 1000, "ack_ms": (acked - committed) * 1000,
                "batch_ms": (acked - started) * 1000}))
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
