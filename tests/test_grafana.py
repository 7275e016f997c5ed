"""The Grafana dashboards chart what the services export: every query names a real metric.

The metric names come from scraping a real gateway (on a real broker) and a real cloud app (on
a real PostgreSQL), not from a list kept by hand: a renamed or removed metric fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from cloud.api.metrics import CloudMetrics
from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.broker_stats import SYS_TOPICS
from edge.settings import GatewaySettings
from tests.fixtures.cloud import running_biz
from tests.fixtures.gateway import running_gateway

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((REPO / "deploy" / "grafana").glob("*.json"))
# Labels Prometheus itself adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
# Series each metric type exposes (prometheus_client's text format).
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "untyped": ("",),
             "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("", "_sum", "_count", "_created")}
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                 "or", "unless", "offset", "inf", "nan"}


@dataclass
class Exported:
    """The series names a service exports and the labels seen on each."""

    labels: dict[str, set[str]] = field(default_factory=dict)

    def add(self, text: str) -> None:
        """Add the families of one /metrics scrape."""
        for family in text_string_to_metric_families(text):
            names = {family.name + s for s in _SUFFIXES[family.type]}
            seen = {label for sample in family.samples for label in sample.labels}
            for name in names:
                self.labels.setdefault(name, set()).update(seen)

    def declare(self, metrics: object) -> None:
        """Add the label names ``metrics``' attributes declare (a family with no sample yet
        shows none on /metrics), for families the scrape found."""
        for value in vars(metrics).values():
            if isinstance(value, MetricWrapperBase):
                base, kind = str(value._name), str(value._type)
                labels: tuple[str, ...] = value._labelnames
                for name in (base + s for s in _SUFFIXES[kind]):
                    if name in self.labels:
                        self.labels[name].update(labels)


def scrape_gateway(broker: PrivateMosquitto, tmp_path: Path) -> str:
    """The /metrics text of a real gateway connected to a real broker."""
    import asyncio  # noqa: PLC0415

    settings = GatewaySettings(
        gateway_id="gw-grafana", mqtt=broker.gateway_mqtt(),
        storage={"path": str(tmp_path / "gw.db")}, http={"port": free_port()},
        scoring={"models_dir": str(tmp_path / "models")})

    async def scrape() -> str:
        async with running_gateway(settings) as gw:
            return (await gw.http.get(f"{gw.base_url}/metrics")).text

    # The broker's counters (edge.broker_stats) are gauges the gateway exports once the
    # broker's $SYS publication of each reached it, which may take a while: the declared ones.
    declared = "".join(f"# TYPE smaint_broker_{name} gauge\nsmaint_broker_{name} 0\n"
                       for name, _ in SYS_TOPICS.values())
    return asyncio.run(scrape()) + declared


@pytest.fixture
def exported(broker: PrivateMosquitto, pg_dsn: str, tmp_path: Path) -> dict[str, Exported]:
    """What the gateway and the cloud export, by dashboard prefix."""
    gateway, cloud = Exported(), Exported()
    gateway.add(scrape_gateway(broker, tmp_path))
    with running_biz(pg_dsn) as biz:
        # A request and its latency, so the labelled HTTP series carry their labels.
        assert biz.get("viewer", "/api/v1/stats").status_code == 200
        cloud.add(biz.client.get("/metrics").text)
    cloud.declare(CloudMetrics())
    return {"smaint_gateway": gateway, "smaint_cloud": cloud}


def _strip(expr: str) -> str:
    """The query without strings, durations, grouping clauses and Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    return re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)


def metric_names(expr: str) -> list[str]:
    """The metric names a PromQL query selects (not functions, keywords or labels)."""
    bare = re.sub(r"\{[^}]*\}", "", _strip(expr))
    names = []
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare):
        word = match.group(1)
        if word.lower() not in _PROMQL_WORDS:
            names.append(word)
    return names


def grouping_labels(expr: str) -> set[str]:
    """The label names of every ``by (...)``/``without (...)``/``on (...)`` clause."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    clauses = re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr)
    return {label.strip() for clause in clauses for label in clause.split(",") if label.strip()}


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric, label names matched) for each ``metric{...}`` selector in the query."""
    for match in re.finditer(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", _strip(expr)):
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", match.group(2)))
        yield match.group(1), labels


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            text = query["query"] if isinstance(query, dict) else query
            # Grafana's label_values(metric, label): the series of metric that carry label.
            match = re.fullmatch(r"label_values\(\s*([\w:]+)\s*,\s*(\w+)\s*\)", text)
            yield f"variable {var['name']}", (
                f'{match.group(1)}{{{match.group(2)}=~".+"}}' if match else text)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_there_is_a_dashboard_for_the_gateway_and_one_for_the_cloud() -> None:
    names = {p.name for p in DASHBOARDS}
    assert names == {"smaint-gateway.json", "smaint-cloud.json"}
    uids = [_load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_importable(path: Path) -> None:
    """The structure Grafana's import needs: ids, grid positions, a Prometheus data source."""
    dash = _load(path)
    assert dash["title"]
    assert dash["uid"]
    assert dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dash):
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


@pytest.mark.slow
def test_every_query_names_a_metric_the_code_exports(exported: dict[str, Exported]) -> None:
    for path in DASHBOARDS:
        dash = _load(path)
        prefix = "smaint_gateway" if "gateway" in path.stem else "smaint_cloud"
        known = exported[prefix]
        used: set[str] = set()
        for where, expr in queries(dash):
            names = metric_names(expr)
            assert names, f"{path.name} {where}: no metric in {expr!r}"
            for name in names:
                assert name in known.labels, (
                    f"{path.name} {where}: {name} is not exported; exported: "
                    f"{sorted(n for n in known.labels if not n.endswith('_created'))}")
                used.add(name)
            for name, labels in selectors(expr):
                extra = labels - known.labels[name] - TARGET_LABELS - {"le"}
                assert not extra, f"{path.name} {where}: {name} has no label {sorted(extra)}"
            grouped = grouping_labels(expr) - TARGET_LABELS - {"le"}
            have = set().union(*(known.labels[n] for n in names))
            assert grouped <= have, f"{path.name} {where}: no metric has {grouped - have}"
        # Every family the service exports is on its dashboard (a new metric gets a panel).
        families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in known.labels
                    if not n.endswith("_created")}
        charted = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
        assert families <= charted, f"{path.name} charts none of {sorted(families - charted)}"


def test_metric_names_reads_promql() -> None:
    """The query reader finds metrics, not functions, keywords, labels or variables."""
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate(smaint_cloud_http_request_duration'
            '_seconds_bucket{instance=~"$instance", route!="/metrics"}[$__rate_interval])))'
            ' / on(instance) group_left sum(up_total offset 5m) > bool 0 and smaint_x')
    assert metric_names(expr) == ["smaint_cloud_http_request_duration_seconds_bucket",
                                  "up_total", "smaint_x"]
    assert list(selectors(expr)) == [
        ("smaint_cloud_http_request_duration_seconds_bucket", {"instance", "route"})]
    assert grouping_labels(expr) == {"le", "route", "instance"}
