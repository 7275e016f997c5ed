"""Prometheus metrics of one gateway, in a registry of its own (tests run several at once)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_COUNTER_HELP = {
    "received": "MQTT messages received",
    "stored": "readings stored (new)",
    "duplicates": "redelivered readings dropped",
    "dead_letters": "messages refused and dead-lettered",
    "statuses": "device status messages applied",
    "scored": "readings given an anomaly score",
    "anomalous": "readings over the detector threshold",
    "alerts_opened": "alerts opened",
    "alerts_resolved": "alerts resolved",
    "alerts_acknowledged": "alerts acknowledged on the gateway",
    "alert_publish_dropped": "alert versions dropped from a full MQTT publish queue (this run)",
    "synced": "readings acknowledged by the cloud",
    "sync_batches": "batches acknowledged by the cloud",
    "sync_rejected_batches": "batches the cloud refused for good",
    "sync_rejected_readings": "readings in batches the cloud refused for good",
    "sync_failures": "failed upload attempts",
    "sync_bytes": "bytes of upload bodies (compressed) the cloud acknowledged",
    "synced_aggregates": "per-minute aggregate rows (folded readings) acknowledged by the cloud",
    "retention_synced_dropped": "synced readings deleted to stay under the disk budget",
    "retention_aggregated": "unsynced readings replaced by per-minute aggregates (disk budget)",
    "retention_aggregate_rows": "per-minute aggregate rows written by retention",
    "retention_dead_letters_dropped": "dead letters deleted to stay under the disk budget",
    "scenarios_published": "SIMULATED scenario requests published to simulated devices",
    "scenarios_refused": "SIMULATED scenario requests from the cloud refused (simulation off)",
}
_GAUGE_HELP = {
    "ingest_rate": "readings stored per second over the last minute",
    "queue_depth": "messages waiting in the ingest queue",
    "unacked": "messages left unacked with the broker while degraded",
    "seq_gaps": "readings that never arrived (seq gaps, all devices and boots)",
    "degraded": "1 while the database refuses writes (degraded mode)",
    "db_used_bytes": "bytes of the database in use",
    "db_budget_bytes": "disk budget of the database (0: none)",
    "devices_online": "devices whose last status is online",
}


class _StoreCollector(Collector):
    """Reads the committed counters at scrape time, so metrics never drift from the database."""

    def __init__(self, counters: Callable[[], Mapping[str, int]],
                 gauges: Callable[[], Mapping[str, float]]) -> None:
        self._counters = counters
        self._gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        values = self._counters()
        for name, help_ in _COUNTER_HELP.items():
            fam = CounterMetricFamily(f"smaint_gateway_{name}", help_)
            fam.add_metric([], float(values.get(name, 0)))
            yield fam
        for name, value in self._gauges().items():
            gauge = GaugeMetricFamily(f"smaint_gateway_{name}",
                                      _GAUGE_HELP.get(name, name.replace("_", " ")))
            gauge.add_metric([], float(value))
            yield gauge


class _BrokerCollector(Collector):
    """The broker's $SYS counters the gateway last read (edge/broker_stats.py)."""

    def __init__(self, values: Callable[[], Mapping[str, float]],
                 helps: Mapping[str, str]) -> None:
        self._values = values
        self._helps = helps

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, value in self._values().items():
            # Gauges, not counters: the broker's own counts restart with the broker.
            gauge = GaugeMetricFamily(f"smaint_broker_{name}", self._helps.get(name, name))
            gauge.add_metric([], float(value))
            yield gauge


class GatewayMetrics:
    """The gateway's registry: store counters, live gauges and batch timing histograms."""

    def __init__(self, counters: Callable[[], Mapping[str, int]],
                 gauges: Callable[[], Mapping[str, float]],
                 broker: Callable[[], Mapping[str, float]] | None = None,
                 broker_help: Mapping[str, str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StoreCollector(counters, gauges))
        if broker is not None:
            self.registry.register(_BrokerCollector(broker, broker_help or {}))
        self.batch_seconds = Histogram(
            "smaint_gateway_batch_commit_seconds",
            "validate + score + store + commit time of one micro-batch",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "smaint_gateway_batch_messages", "messages per micro-batch",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 5000), registry=self.registry,
        )

    def observe_batch(self, n: int, seconds: float) -> None:
        """Record one committed micro-batch."""
        self.batch_seconds.observe(seconds)
        self.batch_size.observe(n)
