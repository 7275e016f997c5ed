"""Columnar batch codec: lossless round trips, hostile bodies refused cleanly, and its size."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import zstandard
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.api.routes.sync import decode_batch
from shared import batchcodec
from shared.batchcodec import CodecError, DecodedBatch, ReadingColumns
from shared.schemas import MAX_NOTE, ORIGINS, Reading, SyncBatch

ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,8}\Z")
boots = st.from_regex(r"\A[0-9a-f]{8}\Z")
values = st.one_of(st.floats(-1e12, 1e12, allow_nan=False),
                   st.integers(-10**6, 10**6).map(lambda i: i / 100))
# An inspection note: any text without NUL, up to the schema's limit (unicode, newlines).
notes = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
                min_size=1, max_size=MAX_NOTE)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    """A valid reading of any origin: a manual one may carry a note, and a note alone."""
    origin = draw(st.sampled_from(sorted(ORIGINS)))
    note = draw(st.one_of(st.none(), notes)) if origin == "manual" else None
    return Reading(
        device=draw(ids), boot=draw(boots), seq=draw(st.integers(0, 2**32 - 1)),
        type=draw(st.sampled_from(["motor", "mill"])), ts_ms=draw(st.integers(0, 2**53)),
        device_ts_ms=draw(st.one_of(st.none(), st.integers(0, 2**53))),
        received_ms=draw(st.integers(0, 2**53)),
        metrics=draw(st.dictionaries(st.sampled_from(["temperature_c", "current_a", "rpm"]),
                                     values, min_size=0 if note else 1)),
        score=draw(st.one_of(st.none(), values)),
        scorer=draw(st.sampled_from(["stat", "onnx", "none"])),
        model_version=draw(st.one_of(st.none(), st.sampled_from(["v1", "if-2024.1"]))),
        anomalous=draw(st.booleans()), replay=draw(st.booleans()), origin=origin, note=note)


def key(r: Reading) -> tuple[str, str, int]:
    """Row identity, to compare batches whatever their order."""
    return (r.device, r.boot, r.seq)


@given(st.lists(readings(), max_size=40, unique_by=key))
@settings(max_examples=150, deadline=None)
def test_round_trip_is_lossless(rows: list[Reading]) -> None:
    """Every column comes back exactly, origin and inspection note included."""
    batch = SyncBatch(gateway="gw-1", batch_seq=7, created_ms=1, readings=rows)
    decoded = batchcodec.decode(batchcodec.decompress(batchcodec.encode(batch), 1 << 24))
    assert (decoded.gateway, decoded.batch_seq) == ("gw-1", 7)
    back = sorted(decoded.readings.to_readings(), key=key)
    assert back == sorted(rows, key=key)
    assert [(r.origin, r.note) for r in back] == [(r.origin, r.note)
                                                  for r in sorted(rows, key=key)]


def test_a_batch_from_before_origins_decodes_as_sensor_readings() -> None:
    """A gateway that predates origins sends no origin or note column: sensor, no note."""
    batch = SyncBatch(gateway="gw-1", batch_seq=1, created_ms=0, readings=[Reading(
        device="d-1", boot="0123abcd", seq=1, type="motor", ts_ms=5, device_ts_ms=None,
        received_ms=6, metrics={"x": 1.5}, score=None, scorer="stat", anomalous=False)])
    doc = json.loads(batchcodec.decompress(batchcodec.encode(batch), 1 << 20))
    del doc["readings"]["origin"], doc["readings"]["note"]
    cols = batchcodec.decode(json.dumps(doc).encode()).readings
    assert (cols.origin, cols.note) == (["sensor"], [None])


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
                    max_leaves=30))
@settings(max_examples=200)
def test_any_json_decodes_or_raises_codec_error(doc: object) -> None:
    for candidate in (doc, {"v": 1, "gateway": "gw-1", "batch_seq": 1, "created_ms": 0,
                            "readings": doc}):
        raw = json.dumps(candidate).encode()
        with contextlib.suppress(CodecError):
            batchcodec.decode(raw)


big = st.one_of(st.integers(), st.sampled_from([2**62, -(2**62), 2**63 - 1, -(2**63), 2**64]))


@given(st.lists(big, min_size=1, max_size=12))
@settings(max_examples=300)
def test_deltas_decode_exactly_or_are_refused_never_wrapped(deltas: list[int]) -> None:
    # The int64 fast path must agree with exact integer sums: no silent overflow.
    exact = list(itertools.accumulate(deltas))
    low, high = -(2**62), 2**62
    doc = {"s": 0, "v": deltas, "n": []}
    if low <= min(exact) and max(exact) <= high:
        assert batchcodec._floats(doc, "c", len(deltas)) == [float(x) for x in exact]
        assert batchcodec._undelta(deltas, "c", len(deltas), low, high) == exact
    else:
        with pytest.raises(CodecError, match="outside"):
            batchcodec._undelta(deltas, "c", len(deltas), low, high)
    scaled = {"s": 3, "v": deltas, "n": []}
    if low <= min(exact) and max(exact) <= high:
        assert batchcodec._floats(scaled, "c", len(deltas)) == [x / 1000 for x in exact]


def test_each_bad_column_is_named() -> None:
    batch = SyncBatch(gateway="gw-1", batch_seq=1, created_ms=0, readings=[Reading(
        device="d-1", boot="0123abcd", seq=1, type="motor", ts_ms=5, device_ts_ms=None,
        received_ms=6, metrics={"x": 1.5}, score=None, scorer="stat", anomalous=False)])
    doc = json.loads(batchcodec.decompress(batchcodec.encode(batch), 1 << 20))
    for path, value, field in [
        (("device", "d"), ["BAD ID"], "readings.device"),
        (("boot", "i"), [3], "readings.boot"),
        (("seq",), [-1], "readings.seq"),
        (("metrics",), {"x": {"f": [float("inf")], "n": []}}, "readings.metrics.x"),
        (("scorer", "d"), ["magic"], "readings.scorer"),
        (("origin", "d"), ["robot"], "readings.origin"),
        (("note", "d"), ["x" * (MAX_NOTE + 1)], "readings.note"),
        (("note", "d"), ["a note on a sensor reading"], "readings.note"),
    ]:
        bad = json.loads(json.dumps(doc))
        target = bad["readings"]
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
        with pytest.raises(CodecError) as err:
            batchcodec.decode(json.dumps(bad).encode())
        assert err.value.field.startswith(field)


def test_zstd_bomb_and_garbage_are_refused() -> None:
    with pytest.raises(OverflowError):
        batchcodec.decompress(zstandard.ZstdCompressor().compress(b" " * 10_000), 1000)
    with pytest.raises(CodecError):
        batchcodec.decompress(b"not zstd", 1000)


def test_columnar_zstd_beats_row_json_and_gzip() -> None:
    from bench.cloud import motor_readings  # noqa: PLC0415

    batch = SyncBatch(gateway="gw-1", batch_seq=1, created_ms=0,
                      readings=motor_readings(1000, 5, step_ms=300_000))
    row = batch.model_dump_json().encode()
    columnar = batchcodec.encode(batch)
    assert len(columnar) * 3 < len(gzip.compress(row, 6))
    assert len(columnar) / 1000 <= 12
    assert ReadingColumns.from_readings(batch.readings).to_readings() == batch.readings


# -- both encodings accept and refuse the same batches -----------------------------------------

GOOD_AGGREGATE = {"device": "d-1", "metric": "current_a", "minute_ms": 120_000, "type": "motor",
                  "n": 2, "min": 1.0, "max": 2.0, "mean": 1.5, "sum": 3.0,
                  "first_ts_ms": 120_001, "last_ts_ms": 150_000, "updated_ms": 200_000}
GOOD_ALERT = {"alert_id": "0123abcd-ef", "device": "d-1", "opened_ms": 5, "severity": "high",
              "state": "open", "score": 3.5, "scorer": "stat", "model_version": None,
              "explanation": {"current_a": 1.0}, "updated_ms": 6}

# Faults one field deep, each of which the row schema refuses (or, for the VALID ones, accepts
# at its limit); every one must get the same answer from the columnar path.
Row = dict[str, Any]
MUTATIONS: dict[str, Callable[[Row, list[Row]], None]] = {
    "gateway_newline": lambda b, r: b.update(gateway="gw-1\n"),
    "gateway_upper": lambda b, r: b.update(gateway="GW"),
    "batch_seq_zero": lambda b, r: b.update(batch_seq=0),
    "batch_seq_big": lambda b, r: b.update(batch_seq=2**63),
    "created_negative": lambda b, r: b.update(created_ms=-1),
    "device_newline": lambda b, r: r[0].update(device=r[0]["device"] + "\n"),
    "device_long": lambda b, r: r[0].update(device="d" * 65),
    "device_dash_first": lambda b, r: r[0].update(device="-d"),
    "boot_newline": lambda b, r: r[0].update(boot=r[0]["boot"] + "\n"),
    "boot_short": lambda b, r: r[0].update(boot="abc"),
    "seq_negative": lambda b, r: r[0].update(seq=-1),
    "seq_big": lambda b, r: r[0].update(seq=2**32),
    "ts_big": lambda b, r: r[0].update(ts_ms=2**53 + 1),
    "ts_negative": lambda b, r: r[0].update(ts_ms=-1),
    "device_ts_big": lambda b, r: r[0].update(device_ts_ms=2**53 + 1),
    "received_negative": lambda b, r: r[0].update(received_ms=-5),
    "type_long": lambda b, r: r[0].update(type="t" * 33),
    "type_nul": lambda b, r: r[0].update(type="mo\x00tor"),
    "type_lone_surrogate": lambda b, r: r[0].update(type="mo\ud800"),
    "model_version_long": lambda b, r: r[0].update(model_version="v" * 65),
    "model_version_nul": lambda b, r: r[0].update(model_version="v\x001"),
    "metric_nan": lambda b, r: r[0]["metrics"].update(current_a=math.nan),
    "metric_inf": lambda b, r: r[0]["metrics"].update(current_a=-math.inf),
    "score_nan": lambda b, r: r[0].update(score=math.nan),
    "score_inf": lambda b, r: r[0].update(score=math.inf),
    "metrics_empty": lambda b, r: r[0].update(metrics={}),
    "metrics_65": lambda b, r: r[0].update(metrics={f"m{i}": 1.0 for i in range(65)}),
    "metric_name_upper": lambda b, r: r[0].update(metrics={"Current": 1.0}),
    "metric_name_newline": lambda b, r: r[0].update(metrics={"current\n": 1.0}),
    "metric_name_digit": lambda b, r: r[0].update(metrics={"1current": 1.0}),
    "metric_name_long": lambda b, r: r[0].update(metrics={"m" * 65: 1.0}),
    "scorer_unknown": lambda b, r: r[0].update(scorer="magic"),
    "origin_unknown": lambda b, r: r[0].update(origin="robot"),
    "note_on_a_sensor_reading": lambda b, r: r[0].update(origin="sensor", note="looked ok"),
    "note_empty": lambda b, r: r[0].update(origin="manual", note=""),
    "note_nul": lambda b, r: r[0].update(origin="manual", note="a\x00b"),
    "note_too_long": lambda b, r: r[0].update(origin="manual", note="n" * (MAX_NOTE + 1)),
    "note_lone_surrogate": lambda b, r: r[0].update(origin="manual", note="x\ud800"),
    "metrics_empty_simulated": lambda b, r: r[0].update(origin="simulated", metrics={}),
    "metrics_empty_manual_without_note": lambda b, r: r[0].update(origin="manual",
                                                                   metrics={}),
    "aggregate_min_above_max": lambda b, r: b.update(
        aggregates=[{**GOOD_AGGREGATE, "min": 3.0}]),
    "aggregate_off_minute": lambda b, r: b.update(
        aggregates=[{**GOOD_AGGREGATE, "minute_ms": 120_001}]),
    "alert_nan_score": lambda b, r: b.update(alerts=[{**GOOD_ALERT, "score": math.nan}]),
    "alert_model_version_long": lambda b, r: b.update(
        alerts=[{**GOOD_ALERT, "model_version": "v" * 65}]),
    "state_model_version_long": lambda b, r: b.update(state={"models": {"motor": "v" * 65}}),
    "backfill_done_zero": lambda b, r: b.update(backfill_done=[0]),
}
VALID = {
    "none": lambda b, r: None,
    "model_version_64": lambda b, r: r[0].update(model_version="v" * 64),
    "model_version_newline": lambda b, r: r[0].update(model_version="v1\n"),
    "type_32": lambda b, r: r[0].update(type="t" * 32),
    "metrics_64": lambda b, r: r[0].update(metrics={f"m{i}": 1.0 for i in range(64)}),
    # 80 metric columns in the batch, 40 a reading: fine for rows, so fine for columns.
    "metrics_spread": lambda b, r: [x.update(metrics={f"m{j}_{i}": 1.0 for i in range(40)})
                                    for j, x in enumerate(r)],
    "aggregate_and_alert": lambda b, r: b.update(aggregates=[GOOD_AGGREGATE],
                                                 alerts=[GOOD_ALERT]),
    "readings_left_out": lambda b, r: b.pop("readings"),
    "manual_note_alone": lambda b, r: r[0].update(origin="manual", note="belt worn, replace",
                                                  metrics={}),
    "manual_notes_alone_everywhere": lambda b, r: [
        x.update(origin="manual", note=f"note {i}\nline two", metrics={})
        for i, x in enumerate(r)],
    "note_at_limit": lambda b, r: r[0].update(origin="manual", note="n" * MAX_NOTE),
}

plain_rows = st.fixed_dictionaries({
    "device": ids, "boot": boots, "seq": st.integers(0, 2**32 - 1),
    "type": st.sampled_from(["motor", "mill"]), "ts_ms": st.integers(0, 2**53),
    "device_ts_ms": st.one_of(st.none(), st.integers(0, 2**53)),
    "received_ms": st.integers(0, 2**53),
    "metrics": st.dictionaries(st.sampled_from(["temperature_c", "current_a", "rpm"]), values,
                               min_size=1),
    "score": st.one_of(st.none(), values), "scorer": st.sampled_from(["stat", "onnx", "none"]),
    "model_version": st.one_of(st.none(), st.sampled_from(["v1", "if-2024.1"])),
    "anomalous": st.booleans(), "replay": st.booleans(),
    "origin": st.sampled_from(sorted(ORIGINS)), "note": st.none(),
})


def _columnar_body(batch: Row) -> bytes:
    """The columnar document built straight from plain values: no model checks them first."""
    if "readings" not in batch:
        return zstandard.ZstdCompressor().compress(json.dumps(batch).encode())
    rows = batch["readings"]
    names = list(dict.fromkeys(m for r in rows for m in r["metrics"]))
    cols = ReadingColumns(
        **{f: [r[f] for r in rows] for f in (
            "device", "boot", "seq", "type", "ts_ms", "device_ts_ms", "received_ms", "score",
            "scorer", "model_version", "anomalous", "replay")},
        # Optional in the row form: a row without them is a sensor's, with no note.
        origin=[r.get("origin", "sensor") for r in rows], note=[r.get("note") for r in rows],
        metrics={m: [r["metrics"].get(m) for r in rows] for m in names})
    doc = {**batch, "readings": batchcodec.encode_columns(cols)}
    return zstandard.ZstdCompressor().compress(json.dumps(doc).encode())


def _both_ways(batch: Row) -> tuple[DecodedBatch | str, DecodedBatch | str]:
    """The cloud's decoding of ``batch`` as row JSON and as columnar zstd (or why refused)."""
    out: list[DecodedBatch | str] = []
    for body, encoding, media in ((json.dumps(batch).encode(), "", "application/json"),
                                  (_columnar_body(batch), "zstd", batchcodec.MEDIA_TYPE)):
        try:
            out.append(decode_batch(body, encoding, 1 << 24, media))
        except RequestValidationError as exc:
            out.append(f"refused: {exc.errors()[0]}")
    return out[0], out[1]


@given(st.lists(plain_rows, min_size=2, max_size=6, unique_by=lambda r: (r["device"], r["seq"])),
       st.sampled_from(sorted(MUTATIONS) + sorted(VALID)))
@settings(max_examples=200, deadline=None)
def test_row_json_and_columnar_accept_and_refuse_the_same(rows: list[Row], fault: str) -> None:
    batch: Row = {"v": 1, "gateway": "gw-1", "batch_seq": 3, "created_ms": 10, "readings": rows}
    (MUTATIONS | VALID)[fault](batch, rows)
    row, columnar = _both_ways(batch)
    # The fault is one the row schema refuses (else the generator tests nothing).
    assert isinstance(row, DecodedBatch) == (fault in VALID), (fault, row)
    assert isinstance(columnar, DecodedBatch) == isinstance(row, DecodedBatch), (fault, columnar)
    if isinstance(row, DecodedBatch) and isinstance(columnar, DecodedBatch):
        assert columnar.readings.to_readings() == row.readings.to_readings()
        for attr in ("gateway", "batch_seq", "created_ms", "alerts", "events", "state",
                     "backfill_done", "aggregates"):
            assert getattr(columnar, attr) == getattr(row, attr), attr


@pytest.mark.slow  # builds and validates 50,000-item bodies
@pytest.mark.parametrize("field", ["readings", "aggregates", "alerts", "events"])
def test_list_limits_are_the_same_both_ways(field: str) -> None:
    limit = next(m.max_length for m in SyncBatch.model_fields[field].metadata
                 if hasattr(m, "max_length"))
    item = {"readings": {"device": "d-1", "boot": "0123abcd", "seq": 1, "type": "motor",
                         "ts_ms": 5, "device_ts_ms": None, "received_ms": 6,
                         "metrics": {"current_a": 1.0}, "score": None, "scorer": "stat",
                         "model_version": None, "anomalous": False, "replay": False},
            "aggregates": GOOD_AGGREGATE, "alerts": GOOD_ALERT,
            "events": {"device": "d-1", "boot": "0123abcd", "state": "online", "at_ms": 1}}[field]
    for count, accepted in ((limit, True), (limit + 1, False)):
        batch: Row = {"v": 1, "gateway": "gw-1", "batch_seq": 1, "created_ms": 0, "readings": [],
                      field: [item] * count}
        if field == "readings":  # distinct rows, as a gateway sends them
            batch["readings"] = [{**item, "seq": i} for i in range(count)]
        row, columnar = _both_ways(batch)
        assert isinstance(row, DecodedBatch) is accepted, (field, count)
        assert isinstance(columnar, DecodedBatch) is accepted, (field, count, columnar)
