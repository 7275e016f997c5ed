"""The gateway service: ingest, sync and the local HTTP server on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp

from edge.alert_decisions import CloudDecisions
from edge.alert_lifecycle import AlertPublisher, AlertTracker, acknowledge_alert
from edge.api_token import resolve_api_token
from edge.broker_stats import SYS_TOPICS, BrokerStats
from edge.cloud_token import CloudToken
from edge.degraded import StorageHealth
from edge.desired_config import ConfigApplier, DeviceConfigPublisher, Knob
from edge.device_tracking import DeviceTracker
from edge.exceptions import GatewayError
from edge.http import EmbeddedServer, build_app, make_server
from edge.ingest import Ingestor
from edge.manual import ManualEntryError, record_manual
from edge.metrics import GatewayMetrics
from edge.model_registry import ModelRegistry, load_trusted_keys
from edge.mqtt_session import login_options
from edge.ota import BundleDownloader
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.retention import Retention, run_retention, used_bytes
from edge.rollout import ModelRollout
from edge.scenarios import ScenarioDesk
from edge.score import ModelScorer, RuleScorer
from edge.settings import GatewaySettings
from edge.shadow import ObservedScorer
from edge.site_ca import ensure_site_ca
from edge.store import Store, now_ms
from edge.sync import Uploader
from shared.logs import bind_context
from shared.schemas import Alert, ConfigValue, DesiredState, GatewayState, Reading

log = logging.getLogger(__name__)


class Gateway:
    """The parts of a running gateway, wired together (start with :func:`run_gateway`)."""

    def __init__(self, settings: GatewaySettings) -> None:
        s = settings
        self.settings = s
        self.started = time.monotonic()
        self.store = Store.open(s.storage.path, synchronous=s.storage.synchronous)
        self.fallback = RuleScorer(warmup=s.scoring.warmup, threshold=s.scoring.threshold)
        self.models = ModelRegistry(
            s.models_path, load_trusted_keys(s.scoring.trusted_keys, s.scoring.trusted_keys_file))
        self.models.refresh()  # models present at start score the very first readings
        self.cloud_token = CloudToken(s)
        self.downloader = BundleDownloader(s.sync.cloud_url, lambda: self.cloud_token.value,
                                           s.models_path / ".ota" / "download")
        self.rollout = ModelRollout(self.models, self.downloader,
                                    shadow_readings=s.rollout.shadow_readings,
                                    max_alert_rate=s.rollout.max_alert_rate,
                                    retry_s=s.rollout.retry_s,
                                    max_run_failures=s.rollout.max_run_failures)
        # The rollout sees every scored batch: shadow models score beside the current one.
        self.scorer = ObservedScorer(ModelScorer(self.models.get, self.fallback), self.rollout)
        login = login_options(s.mqtt)
        self.publisher = AlertPublisher(s.mqtt.host, s.mqtt.port, s.gateway_id,
                                        keepalive_s=s.mqtt.keepalive_s, login=login)
        self.alerts = AlertTracker(open_after=s.alerts.open_after,
                                   resolve_after=s.alerts.resolve_after,
                                   threshold=s.scoring.threshold)
        self.alerts.load(self.store.open_alerts())
        # Acknowledgements and resolutions taken in the cloud console, applied here.
        self.decisions = CloudDecisions(
            self.store, self.alerts,
            on_alerts=self.publisher.submit if s.alerts.publish else None)
        self.outbox = Outbox(self.store)
        self.broker_stats = BrokerStats(s.mqtt.host, s.mqtt.port, s.gateway_id,
                                        keepalive_s=s.mqtt.keepalive_s, login=login)
        self.metrics = GatewayMetrics(self.counters, self.gauges, self.broker_stats.gauges,
                                      dict(SYS_TOPICS.values()))
        self.health = DeviceTracker(s.ingest.skew_tolerance_ms)
        self.health.load(self.store.boots())
        self.storage = StorageHealth()
        self.retention = Retention(self.store, int(s.storage.max_mb * 1024 * 1024),
                                   s.storage.low_water, s.gateway_id)
        self.pipeline = Pipeline(self.store, self.scorer, self.alerts, s.gateway_id,
                                 on_alerts=self.publisher.submit if s.alerts.publish else None,
                                 health=self.health)
        self.ingestor = Ingestor(s, self.pipeline, self.metrics, storage=self.storage,
                                 retention=self.retention)
        self.uploader = Uploader(s, self.outbox, token=self.cloud_token,
                                 state=self.actual_state,
                                 on_desired=self.on_desired)
        self.device_config = DeviceConfigPublisher(
            s.mqtt.host, s.mqtt.port, s.gateway_id,
            lambda: [d["device"] for d in self.store.devices()], keepalive_s=s.mqtt.keepalive_s,
            login=login)
        # Settings the cloud may change at run time; their local values are the fallback.
        self.config = ConfigApplier(self.store, {
            "scoring.threshold": Knob(s.scoring.threshold, self._set_threshold),
            "alerts.open_after": Knob(s.alerts.open_after, self._set_open_after),
            "alerts.resolve_after": Knob(s.alerts.resolve_after, self._set_resolve_after),
            "sync.interval_s": Knob(s.sync.interval_s, self._set_sync_interval),
            # 0: no interval from the cloud, each device runs its profile's default.
            "devices.interval_ms": Knob(0, self.device_config.set_interval),
        })
        self.config.load()
        # SIMULATION ONLY: scenario requests for simulated devices (off on a real plant).
        self.scenarios = ScenarioDesk(self.store, s.gateway_id, enabled=s.simulation.enabled,
                                      host=s.mqtt.host, port=s.mqtt.port,
                                      keepalive_s=s.mqtt.keepalive_s, login=login)
        desired = self.outbox.desired()
        if desired is not None:  # back from a restart or an outage: catch up with it
            self.on_desired(desired)

    def on_desired(self, desired: DesiredState) -> None:
        """The cloud's desired state (every sync ack): config applied now, models rolled out."""
        self.config.on_desired(desired)
        self.rollout.on_desired(desired)
        self.decisions.on_desired(desired)
        self.scenarios.on_desired(desired)

    def _set_threshold(self, value: ConfigValue) -> None:
        # The statistical scorer judges with it; the tracker grades severity with it.
        threshold = float(value)
        self.fallback.threshold = threshold
        self.alerts.threshold = threshold
        self.scorer.inner.threshold = threshold
        self.scorer.threshold = threshold

    def _set_open_after(self, value: ConfigValue) -> None:
        self.alerts.open_after = int(value)

    def _set_resolve_after(self, value: ConfigValue) -> None:
        self.alerts.resolve_after = int(value)

    def _set_sync_interval(self, value: ConfigValue) -> None:
        self.uploader.interval_s = float(value)

    def actual_state(self) -> GatewayState:
        """What this gateway runs now, reported to the cloud with every upload."""
        try:
            software = version("smart-maintenance")
        except PackageNotFoundError:  # running from a source tree that was never installed
            software = None
        cfg = self.config.current
        return GatewayState(models=self.models.versions(), software=software,
                            backlog=self.outbox.backlog(), rollout=self.rollout.reports(),
                            config_version=cfg.version,
                            config=None if cfg.version is None else cfg.applied,
                            config_refused=cfg.refused,
                            alert_decision=self.decisions.applied())

    def counters(self) -> Mapping[str, int]:
        """Committed store counters plus the in-memory ones, for /metrics."""
        return {**self.store.counters, "alert_publish_dropped": self.publisher.dropped}

    def gauges(self) -> Mapping[str, float]:
        """Live values for /metrics."""
        return {"sync_backlog": self.outbox.backlog(), "alerts_open": self.alerts.open_count,
                "mqtt_connected": float(self.ingestor.connected), **self.ingest_gauges()}

    def ingest_gauges(self) -> dict[str, float]:
        """Ingest, storage and device-health gauges (edge/health.py, edge/retention.py)."""
        return {"ingest_rate": self.health.ingest_rate(),
                "queue_depth": float(self.ingestor.queue_depth()),
                "unacked": float(self.ingestor.unacked),
                "seq_gaps": float(self.health.seq_gaps()),
                "degraded": float(self.storage.degraded),
                "db_used_bytes": float(used_bytes(self.store)),
                "db_budget_bytes": float(self.retention.max_bytes),
                "devices_online": float(self.store.count("devices", "state = 'online'"))}

    def ingest_status(self) -> dict[str, Any]:
        """Storage state, seq gaps, ingest rate and retention counters for /api/status."""
        c = self.store.counters
        storage = self.storage.as_dict()
        return {"status": storage["status"], "degraded_reason": storage["reason"],
                "degraded_since_ms": storage["since_ms"], "unacked": self.ingestor.unacked,
                "seq_gaps": self.health.seq_gaps(),
                "ingest_rate": round(self.health.ingest_rate(), 2),
                "db_used_bytes": used_bytes(self.store),
                "db_budget_bytes": self.retention.max_bytes,
                "retention": {k.removeprefix("retention_"): v for k, v in c.items()
                              if k.startswith("retention_")}}

    def status(self) -> dict[str, Any]:
        """The /api/status document: committed counters plus live state."""
        c = self.store.counters
        return {
            "gateway": self.settings.gateway_id,
            "mqtt_connected": self.ingestor.connected,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "received": c["received"],
            "stored": c["stored"],
            "duplicates": c["duplicates"],
            "dead_letters": c["dead_letters"],
            "statuses": c["statuses"],
            "scored": c["scored"],
            "anomalous": c["anomalous"],
            "synced": c["synced"],
            "sync_backlog": self.outbox.backlog(),
            "sync_batches": c["sync_batches"],
            "sync_rejected_batches": c["sync_rejected_batches"],
            "sync_failures": c["sync_failures"],
            "sync_bytes": c["sync_bytes"],
            "sync_enabled": self.uploader.enabled,
            "last_sync_ack_ms": self.uploader.last_ack_ms,
            "last_sync_error": self.uploader.last_error,
            "alerts": c["alerts_opened"],
            "alerts_open": self.alerts.open_count,
            "devices": self.store.count("devices"),
            "models": self.models.versions(),
            "models_refused": dict(self.models.refused),
            "rollout": [r.model_dump(mode="json") for r in self.rollout.reports()],
            **self.ingest_status(),
        }

    def ack_alert(self, alert_id: str, by: str = "api", comment: str = "") -> Alert:
        """Acknowledge an alert locally (HTTP, panel); stored, queued for sync and published.

        ``by`` and ``comment`` travel up with the alert (Alert.ack) to the cloud's review.
        """
        alert, changed = acknowledge_alert(self.alerts, self.store, alert_id, now_ms(),
                                           by=by, comment=comment)
        if changed and self.settings.alerts.publish:
            self.publisher.submit([alert])
        return alert

    def record_manual(self, device: str, metrics: Mapping[str, float], note: str | None
                      ) -> Reading:
        """Store a technician's measurement and/or note on a known device (queued for sync).

        Raises ManualEntryError (the message says what to correct) for an unknown device, a
        value outside its profile's range or an empty entry.
        """
        row = self.store.conn.execute("SELECT type FROM devices WHERE device = ?",
                                      (device,)).fetchone()
        if row is None or row[0] is None:
            raise ManualEntryError(f"no device {device!r} with a known sensor type has "
                                   "reported to this gateway")
        return record_manual(self.store, device, str(row[0]), metrics, note)

    def healthy(self) -> bool:
        """Healthy while the broker session is up (the database is local and always there)."""
        return self.ingestor.connected


async def _serve_http(server: EmbeddedServer, host: str, port: int) -> None:
    """Serve HTTP; uvicorn's sys.exit on a failed bind becomes an ordinary error here."""
    try:
        await server.serve()
    except SystemExit as exc:
        # Left as SystemExit it would tear through the event loop past our clean shutdown.
        raise GatewayError(f"HTTP server could not start on {host}:{port}") from exc


# Wraps the gateway's own HTTP app in a larger one served on the same port (the web panel,
# ui/panel, composes itself this way: the gateway never imports it).
HttpComposer = Callable[[Gateway, Starlette], ASGIApp]


async def run_gateway(settings: GatewaySettings, stop: asyncio.Event | None = None,
                      gateway: Gateway | None = None, *,
                      compose_http: HttpComposer | None = None) -> None:
    """Run the gateway until ``stop`` is set or SIGINT/SIGTERM; GatewayError if a part failed.

    ``compose_http`` builds the app the HTTP server serves around the gateway's own (its
    startup and shutdown run with the server).
    """
    stop = stop or asyncio.Event()
    # Every log line of this gateway's tasks carries its id (shared/logs.py's filter).
    bind_context(gateway=settings.gateway_id)
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Only possible in the main thread (ValueError elsewhere, NotImplementedError on
        # loops without signal support); tests running us elsewhere use ``stop`` instead.
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    gw = gateway if gateway is not None else Gateway(settings)
    s = settings
    # The site CA exists from the first start on (the panel offers its certificate).
    ensure_site_ca(s.ca_dir, s.gateway_id)
    api = build_app(gw.status, gw.metrics, gw.healthy, gw.ack_alert,
                    api_token=resolve_api_token(s), degraded=lambda: gw.storage.reason,
                    devices=lambda: gw.health.report(gw.store))
    if compose_http is None:
        server = make_server(api.asgi, s.http.host, s.http.port)
    else:
        server = make_server(compose_http(gw, api), s.http.host, s.http.port, lifespan=True)
    log.info("starting: broker %s:%d, db %s, cloud %s, status http://%s:%d/api/status",
             s.mqtt.host, s.mqtt.port, s.storage.path, s.sync.cloud_url, s.http.host,
             s.http.port)
    tasks = {
        asyncio.create_task(gw.ingestor.run(stop), name="ingest"),
        asyncio.create_task(gw.uploader.run(stop), name="sync"),
        asyncio.create_task(_serve_http(server, s.http.host, s.http.port), name="http"),
        asyncio.create_task(gw.models.watch(stop, s.scoring.model_poll_s), name="models"),
        asyncio.create_task(gw.rollout.run(stop), name="rollout"),
        asyncio.create_task(gw.device_config.run(stop), name="device-config"),
        asyncio.create_task(gw.broker_stats.run(stop), name="broker-stats"),
        asyncio.create_task(run_retention(gw.retention, stop, s.storage.retention_interval_s),
                            name="retention"),
    }
    if s.simulation.enabled:
        tasks.add(asyncio.create_task(gw.scenarios.run(stop), name="scenarios"))
    if s.alerts.publish:
        tasks.add(asyncio.create_task(gw.publisher.run(stop), name="alerts"))
    waiter = asyncio.create_task(stop.wait(), name="stop")
    failed: list[str] = []
    try:
        done, _ = await asyncio.wait(tasks | {waiter}, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {waiter} if waiter not in done else ():
            # A part ending on its own is a bug or a fatal error (e.g. port in use): stop all.
            failed.append(f"{task.get_name()}: {task.exception()!r}")
    finally:
        stop.set()
        server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, res in zip(tasks, results, strict=True):
            if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
                failed.append(f"{task.get_name()}: {res!r}")
        waiter.cancel()
        await gw.uploader.aclose()
        await gw.downloader.aclose()
        gw.store.close()
        for sig in handled:
            loop.remove_signal_handler(sig)
        log.info("stopped: %s", {k: v for k, v in gw.store.counters.items() if v})
    if failed:
        raise GatewayError(f"gateway {s.gateway_id} stopped because a part failed: "
                           + "; ".join(sorted(set(failed))))
