"""Prometheus metrics of one app instance, in its own registry (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


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
