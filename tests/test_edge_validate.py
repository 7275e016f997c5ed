"""Acceptance 2 through the real store: any bytes on any device topic, telemetry or status,
go through ``Pipeline.handle`` into a SQLite file without an exception escaping; every refused
message is a dead letter with a reason, and the counts add up.

tests/test_codec.py covers the decoder itself and telemetry payloads on one topic in memory;
this adds status topics, several devices, fuzzed near-valid telemetry (including clocks at
the edges that re-timing must survive) and the readings as stored being valid for sync.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.alert_lifecycle import AlertTracker
from edge.pipeline import Pipeline
from edge.score import RuleScorer
from edge.store import READING_COLUMNS, Store
from edge.validate import Incoming
from shared import topics
from shared.schemas import Reading

DEVICES = ("val-a", "val-b")
FIELDS = ("v", "device", "boot", "seq", "ts_ms", "uptime_ms", "synced", "type", "metrics")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)
edge_ints = st.sampled_from([0, 1, -1, 2**31, 2**32 - 1, 2**32, 2**53, 2**53 + 1, 2**63])


def telemetry(device: str, seq: int, ts_ms: int, uptime_ms: int, synced: bool) -> dict[str, Any]:
    """A valid motor reading."""
    return {"v": 1, "device": device, "boot": "a1b2c3d4", "seq": seq, "ts_ms": ts_ms,
            "uptime_ms": uptime_ms, "synced": synced, "type": "motor",
            "metrics": {"temperature_c": 40.0, "vibration_rms_g": 1.0, "current_a": 3.0}}


def status(device: str, state: str) -> dict[str, Any]:
    """A valid status message."""
    return {"v": 1, "device": device, "boot": "a1b2c3d4", "state": state, "ts_ms": 0}


valid_telemetry = st.builds(
    telemetry, st.sampled_from(DEVICES), st.integers(0, 20),
    st.integers(0, 2**53) | edge_ints.filter(lambda v: 0 <= v <= 2**53),
    st.integers(0, 2**53) | edge_ints.filter(lambda v: 0 <= v <= 2**53), st.booleans())
near_valid = st.builds(lambda msg, key, value: {**msg, key: value}, valid_telemetry,
                       st.sampled_from(FIELDS), json_values | edge_ints)
fuzzed_metrics = st.builds(
    lambda msg, metrics: {**msg, "metrics": metrics}, valid_telemetry,
    st.dictionaries(st.sampled_from(["temperature_c", "current_a", "rpm", "Bad", ""]),
                    st.floats() | st.integers() | st.text(max_size=3), max_size=3))
payloads = st.one_of(
    st.binary(max_size=80),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.one_of(valid_telemetry, near_valid, fuzzed_metrics).map(lambda m: json.dumps(m).encode()),
    st.builds(status, st.sampled_from(DEVICES), st.sampled_from(["online", "offline", "x"]))
    .map(lambda m: json.dumps(m).encode()),
)
topic_names = st.one_of(
    st.sampled_from([topics.telemetry(d) for d in DEVICES] + [topics.status(d) for d in DEVICES]),
    st.text(max_size=30),
)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(topic_names, payloads), max_size=25))
def test_anything_through_the_real_store_is_stored_or_dead_lettered(
    tmp_path_factory: Any, messages: list[tuple[str, bytes]]
) -> None:
    db: Path = tmp_path_factory.mktemp("val") / "gw.db"
    store = Store.open(db)
    try:
        pipe = Pipeline(store, RuleScorer(), AlertTracker(), "gw-validate")
        result = pipe.handle([Incoming(t, p, 1_700_000_000_000) for t, p in messages])
        # A second pass is all redeliveries: nothing new stored, every message accounted for.
        again = pipe.handle([Incoming(t, p, 1_700_000_001_000) for t, p in messages])
        c = store.counters
        assert c["received"] == 2 * len(messages)
        assert c["received"] == c["stored"] + c["duplicates"] + c["dead_letters"] + c["statuses"]
        assert again.stored == 0
        assert result.stored == store.count("readings")
        letters = store.dead_letters()
        assert len(letters) == c["dead_letters"]
        assert all(isinstance(d["reason"], str) and d["reason"] for d in letters)
        # Every stored reading, re-timed or not, is one the cloud will accept.
        for row in store.conn.execute(f"SELECT {', '.join(READING_COLUMNS)} FROM readings"):
            r = dict(zip(READING_COLUMNS, row, strict=True))
            Reading(device=r["device"], boot=r["boot"], seq=r["seq"], type=r["type"],
                    ts_ms=r["ts_ms"], device_ts_ms=r["device_ts_ms"],
                    received_ms=r["received_ms"], metrics=json.loads(r["metrics"]),
                    score=r["score"], scorer=r["scorer"], model_version=r["model_version"],
                    anomalous=bool(r["anomalous"]))
            assert r["time_source"] in {"device", "corrected", "boot", "uptime"}
    finally:
        store.close()
