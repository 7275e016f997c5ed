"""The binary COPY stream of a batch's readings: built column-wise, no per-row calls."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from cloud.ingest import binary_copy
from cloud.ingest.binary_copy import NULL, text
from shared.batchcodec import ReadingColumns

COPY = (
    "COPY readings (seq, ts, received_at, batch_seq, anomalous, replay, device_ts, score,"
    " metrics, device_id, boot_id, gateway_id, type, scorer, model_version, origin, note)"
    " FROM STDIN (FORMAT binary)"
)
# The fixed-width start of every row, built for all rows at once; the row goes on with its
# metrics JSON and the text fields (few distinct combinations per batch, encoded once each).
_HEAD = np.dtype([
    ("nf", ">i2"), ("l_seq", ">i4"), ("seq", ">i8"), ("l_ts", ">i4"), ("ts", ">i8"),
    ("l_rcv", ">i4"), ("rcv", ">i8"), ("l_bs", ">i4"), ("bs", ">i8"),
    ("l_an", ">i4"), ("an", "u1"), ("l_rp", ">i4"), ("rp", "u1"),
    ("l_dts", ">i4"), ("dts", ">i8"), ("l_sc", ">i4"), ("sc", ">f8"),
    ("l_m", ">i4"), ("jsonb_version", "u1"),
])
_AT = {name: _HEAD.fields[name][1] for name in ("l_dts", "l_sc", "l_m")}  # type: ignore[index]


def _metrics_json(cols: ReadingColumns) -> list[bytes]:
    """Each row's metrics object as JSON text."""
    if not cols.metrics or not len(cols):
        return [b"{}"] * len(cols)
    # orjson writes a whole column's numbers (shortest round-trip form, as repr) in one C
    # call; splitting that list and joining the pieces per row costs a third of formatting
    # each row in Python. Metric names are pattern-checked ([a-z][a-z0-9_]*): no escaping.
    pieces: list[Iterable[bytes]] = []
    for k, (name, values) in enumerate(cols.metrics.items()):
        pieces.append(repeat(('{"' if k == 0 else ',"').encode() + name.encode() + b'":'))
        pieces.append(orjson.dumps(values)[1:-1].split(b","))
    pieces.append(repeat(b"}"))
    out = list(map(b"".join, zip(*pieces, strict=False)))  # the repeats are endless
    if any(None in v for v in cols.metrics.values()):
        # A reading without some metric leaves that key out (orjson wrote null there).
        names = list(cols.metrics)
        for i, row in enumerate(zip(*cols.metrics.values(), strict=True)):
            if None in row:
                out[i] = orjson.dumps({n: x for n, x in zip(names, row, strict=True)
                                       if x is not None})
    return out


def copy_payload(cols: ReadingColumns, gateway_id: str, batch_seq: int) -> bytes:
    """``cols`` as one binary COPY stream for ``COPY``, built column-wise (no per-row calls)."""
    n = len(cols)
    head = np.zeros(n, dtype=_HEAD)
    head["nf"] = 17
    for name, size in (("l_seq", 8), ("l_ts", 8), ("l_rcv", 8), ("l_bs", 8), ("l_an", 1),
                       ("l_rp", 1), ("l_dts", 8), ("l_sc", 8)):
        head[name] = size
    head["seq"] = cols.seq
    head["ts"] = binary_copy.pg_timestamps(cols.ts_ms)
    head["rcv"] = binary_copy.pg_timestamps(cols.received_ms)
    head["bs"] = batch_seq
    head["an"] = cols.anomalous
    head["rp"] = cols.replay
    no_dts = None in cols.device_ts_ms
    dts = np.asarray([0 if d is None else d for d in cols.device_ts_ms] if no_dts
                     else cols.device_ts_ms, dtype=np.int64)
    head["dts"] = binary_copy.pg_timestamps(dts)
    head["sc"] = np.asarray(cols.score, dtype=np.float64)  # None -> NaN, patched below
    metrics = _metrics_json(cols)
    head["l_m"] = np.fromiter(map(len, metrics), dtype=np.int32, count=n) + 1
    head["jsonb_version"] = 1
    heads = binary_copy.heads(head)
    if no_dts or None in cols.score:
        for i, (d, s) in enumerate(zip(cols.device_ts_ms, cols.score, strict=True)):
            if d is None or s is None:
                h = heads[i]
                heads[i] = b"".join((
                    h[:_AT["l_dts"]], NULL if d is None else h[_AT["l_dts"]:_AT["l_sc"]],
                    NULL if s is None else h[_AT["l_sc"]:_AT["l_m"]], h[_AT["l_m"]:]))
    gw = text(gateway_id)
    # Origin and note ride along in the key: a batch has few origins, and notes are rare.
    keys = set(zip(cols.device, cols.boot, cols.type, cols.scorer, cols.model_version,
                   cols.origin, cols.note, strict=True))
    texts = {k: b"".join((text(k[0]), text(k[1]), gw, text(k[2]), text(k[3]), text(k[4]),
                          text(k[5]), text(k[6])))
             for k in keys}
    tails = map(texts.__getitem__, zip(cols.device, cols.boot, cols.type, cols.scorer,
                                       cols.model_version, cols.origin, cols.note, strict=True))
    return binary_copy.payload(chain.from_iterable(zip(heads, metrics, tails, strict=True)))


def take_rows(cols: ReadingColumns, idx: Sequence[int]) -> ReadingColumns:
    """The rows ``idx`` of ``cols`` (in that order)."""
    if len(idx) == len(cols):
        return cols
    get = itemgetter(*idx)

    def take(values: list[Any]) -> list[Any]:
        return list(get(values)) if len(idx) > 1 else [values[idx[0]]]

    return ReadingColumns(
        device=take(cols.device), boot=take(cols.boot), seq=take(cols.seq),
        type=take(cols.type), ts_ms=take(cols.ts_ms), device_ts_ms=take(cols.device_ts_ms),
        received_ms=take(cols.received_ms),
        metrics={m: take(v) for m, v in cols.metrics.items()}, score=take(cols.score),
        scorer=take(cols.scorer), model_version=take(cols.model_version),
        anomalous=take(cols.anomalous), replay=take(cols.replay), origin=take(cols.origin),
        note=take(cols.note))
