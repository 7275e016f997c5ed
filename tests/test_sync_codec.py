"""Columnar batch codec: lossless round trips, hostile bodies refused cleanly, and its size."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import batchcodec
from shared.batchcodec import CodecError, ReadingColumns
from shared.schemas import Reading, SyncBatch

ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,8}\Z")
boots = st.from_regex(r"\A[0-9a-f]{8}\Z")
values = st.one_of(st.floats(-1e12, 1e12, allow_nan=False),
                   st.integers(-10**6, 10**6).map(lambda i: i / 100))
readings = st.builds(
    Reading,
    device=ids, boot=boots, seq=st.integers(0, 2**32 - 1), type=st.sampled_from(["motor", "mill"]),
    ts_ms=st.integers(0, 2**53), device_ts_ms=st.one_of(st.none(), st.integers(0, 2**53)),
    received_ms=st.integers(0, 2**53),
    metrics=st.dictionaries(st.sampled_from(["temperature_c", "current_a", "rpm"]), values,
                            min_size=1),
    score=st.one_of(st.none(), values), scorer=st.sampled_from(["stat", "onnx", "none"]),
    model_version=st.one_of(st.none(), st.sampled_from(["v1", "if-2024.1"])),
    anomalous=st.booleans(), replay=st.booleans(),
)


def key(r: Reading) -> tuple[str, str, int]:
    """Row identity, to compare batches whatever their order."""
    return (r.device, r.boot, r.seq)


@given(st.lists(readings, max_size=40, unique_by=key))
@settings(max_examples=150, deadline=None)
def test_round_trip_is_lossless(rows: list[Reading]) -> None:
    batch = SyncBatch(gateway="gw-1", batch_seq=7, created_ms=1, readings=rows)
    decoded = batchcodec.decode(batchcodec.decompress(batchcodec.encode(batch), 1 << 24))
    assert (decoded.gateway, decoded.batch_seq) == ("gw-1", 7)
    back = sorted(decoded.readings.to_readings(), key=key)
    assert back == sorted(rows, key=key)


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
