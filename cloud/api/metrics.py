"""Prometheus metrics of one app instance, in its own registry (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cloud.db.pool import Conn
from cloud.ingest import plausibility


class CloudMetrics:
    """The counters and histograms the cloud exports on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batches = Counter(
            "smaint_cloud_sync_batches_total",
            "Sync batches acknowledged, by whether this was their first application",
            ["first_time"],
            registry=self.registry,
        )
        self.readings_inserted = Counter(
            "smaint_cloud_readings_inserted_total",
            "Readings stored for the first time",
            registry=self.registry,
        )
        self.readings_duplicate = Counter(
            "smaint_cloud_readings_duplicate_total",
            "Readings received again and not stored twice",
            registry=self.registry,
        )
        self.alerts_upserted = Counter(
            "smaint_cloud_alerts_upserted_total",
            "Alerts inserted or changed",
            registry=self.registry,
        )
        self.requests = Counter(
            "smaint_cloud_http_requests_total",
            "HTTP requests, by route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "smaint_cloud_http_request_duration_seconds",
            "HTTP request latency, by route template",
            ["method", "route"],
            registry=self.registry,
        )
        # Queue state lives in PostgreSQL, shared by every replica: read at scrape time.
        self.jobs = Gauge(
            "smaint_cloud_jobs",
            "Background jobs in the shared job table, by kind and status",
            ["kind", "status"],
            registry=self.registry,
        )
        self.deliveries = Gauge(
            "smaint_cloud_notification_deliveries",
            "Notification delivery attempts logged, by channel and outcome",
            ["channel", "ok"],
            registry=self.registry,
        )

        self.rollup_pending = Gauge(
            "smaint_cloud_rollup_pending_deltas",
            "Rollup deltas stored by ingest and not yet folded into readings_1m/readings_1h",
            registry=self.registry,
        )

        self.dead_letters = Gauge(
            "smaint_cloud_ingest_dead_letters",
            "Readings not stored because their timestamp was implausible, by reason",
            ["reason"],
            registry=self.registry,
        )

    def refresh_queues(self, conn: Conn) -> None:
        """Read the job table, delivery log and pending rollup deltas into the gauges."""
        self.jobs.clear()
        for kind, status, n in conn.execute(
                "SELECT kind, status, count(*) FROM jobs GROUP BY 1, 2"):
            self.jobs.labels(kind, status).set(n)
        self.deliveries.clear()
        for channel, ok, n in conn.execute(
                "SELECT channel, ok, count(*) FROM notification_deliveries GROUP BY 1, 2"):
            self.deliveries.labels(channel, str(ok).lower()).set(n)
        row = conn.execute("SELECT count(*) FROM rollup_pending").fetchone()
        self.rollup_pending.set(row[0] if row else 0)
        self.dead_letters.clear()
        for reason, n in plausibility.counts(conn):
            self.dead_letters.labels(reason).set(n)
