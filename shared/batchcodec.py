"""Wire encoding of sync batches: columnar JSON compressed with zstd.

Row JSON repeats every key and every device id in every reading (~100 B a reading). Here a
batch's readings travel as one column per field: strings as a dictionary plus indexes, integers
(seq, times) as deltas, each float column as delta-coded integers at the smallest decimal scale
(0..6) that gives every value back exactly, else as plain floats. zstd then squeezes the
repetitive columns to a few bytes a reading. Decoding is lossless, and the cloud validates the
columns as a whole (each dictionary entry once) instead of building one model per reading.

Media type ``application/vnd.smaint.batch+json`` with ``Content-Encoding: zstd``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from itertools import accumulate
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard
from pydantic import ValidationError

from shared.schemas import (
    BOOT_PATTERN,
    MAX_EPOCH_MS,
    MAX_METRICS,
    MAX_MODEL_VERSION,
    MAX_NOTE,
    MAX_PROFILE_NAME,
    MAX_READINGS,
    MAX_SEQ,
    METRIC_PATTERN,
    ORIGINS,
    SCORERS,
    TEXT_PATTERN,
    Alert,
    DeviceEvent,
    GatewayState,
    Reading,
    ReadingAggregate,
    ScenarioDone,
    SyncBatch,
)
from shared.topics import ID_PATTERN

_fast_loads: Callable[[bytes | str], Any]
try:
    # A C parser: a 5,000-reading batch parses in a third of the stdlib's time.
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is optional
    _fast_loads = json.loads


def json_loads(raw: bytes | str) -> Any:
    """``json.loads``, through orjson when it can: what orjson refuses (NaN, a BOM, UTF-16,
    lone surrogates, integers beyond 64 bits) goes to the stdlib, which reads them the same."""
    try:
        return _fast_loads(raw)
    except ValueError:
        return json.loads(raw)

MEDIA_TYPE = "application/vnd.smaint.batch+json"
ZSTD_LEVEL = 3
_MAX_SCALE = 6
# Every rule below comes from shared.schemas, the row path's models: fullmatch, as pydantic's
# anchored patterns match the whole text (``re.match`` with ``$`` lets a trailing newline in).
_ID = re.compile(ID_PATTERN).fullmatch
_BOOT = re.compile(BOOT_PATTERN).fullmatch
_METRIC = re.compile(METRIC_PATTERN).fullmatch
_TEXT = re.compile(TEXT_PATTERN).fullmatch
_F64_EXACT = 2**53  # every integer up to this is a float64
_I64_MAX = 2**63 - 1
_INT = frozenset({int})
_INT_OR_NONE = frozenset({int, type(None)})
_NUMBER = frozenset({int, float})
_HEADER_FIELDS = frozenset(SyncBatch.model_fields)


class CodecError(ValueError):
    """A columnar body that cannot be decoded into valid readings; ``field`` names where."""

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


@dataclass(slots=True)
class ReadingColumns:
    """A batch's readings column by column: the shape the cloud's ingest works on."""

    device: list[str] = field(default_factory=list)
    boot: list[str] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    type: list[str] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    device_ts_ms: list[int | None] = field(default_factory=list)
    received_ms: list[int] = field(default_factory=list)
    metrics: dict[str, list[float | None]] = field(default_factory=dict)
    score: list[float | None] = field(default_factory=list)
    scorer: list[str] = field(default_factory=list)
    model_version: list[str | None] = field(default_factory=list)
    anomalous: list[bool] = field(default_factory=list)
    replay: list[bool] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    note: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seq)

    @classmethod
    def from_readings(cls, readings: Sequence[Reading]) -> ReadingColumns:
        """Columns of already validated readings (the row-JSON path)."""
        names = sorted({m for r in readings for m in r.metrics})
        return cls(
            device=[r.device for r in readings], boot=[r.boot for r in readings],
            seq=[r.seq for r in readings], type=[r.type for r in readings],
            ts_ms=[r.ts_ms for r in readings],
            device_ts_ms=[r.device_ts_ms for r in readings],
            received_ms=[r.received_ms for r in readings],
            metrics={m: [r.metrics.get(m) for r in readings] for m in names},
            score=[r.score for r in readings], scorer=[r.scorer for r in readings],
            model_version=[r.model_version for r in readings],
            anomalous=[r.anomalous for r in readings], replay=[r.replay for r in readings],
            origin=[r.origin for r in readings], note=[r.note for r in readings],
        )

    def select(self, rows: Sequence[int]) -> ReadingColumns:
        """The readings at positions ``rows``, in that order (every column, metrics too)."""
        out = ReadingColumns()
        for f in fields(self):
            col = getattr(self, f.name)
            if isinstance(col, dict):
                setattr(out, f.name, {k: [v[i] for i in rows] for k, v in col.items()})
            else:
                setattr(out, f.name, [col[i] for i in rows])
        return out

    def to_readings(self) -> list[Reading]:
        """Rows again, validated one by one (tests, small batches)."""
        out = []
        for i in range(len(self)):
            metrics = {m: v[i] for m, v in self.metrics.items() if v[i] is not None}
            out.append(Reading(
                device=self.device[i], boot=self.boot[i], seq=self.seq[i], type=self.type[i],
                ts_ms=self.ts_ms[i], device_ts_ms=self.device_ts_ms[i],
                received_ms=self.received_ms[i], metrics=metrics,
                score=self.score[i], scorer=self.scorer[i],
                model_version=self.model_version[i], anomalous=self.anomalous[i],
                replay=self.replay[i], origin=self.origin[i], note=self.note[i]))
        return out


@dataclass(slots=True)
class DecodedBatch:
    """A sync batch as the cloud applies it: header, alerts, device events and columns."""

    gateway: str
    batch_seq: int
    created_ms: int
    readings: ReadingColumns
    alerts: list[Alert] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)
    state: GatewayState | None = None
    backfill_done: list[int] = field(default_factory=list)
    aggregates: list[ReadingAggregate] = field(default_factory=list)
    scenarios_done: list[ScenarioDone] = field(default_factory=list)

    @classmethod
    def from_batch(cls, b: SyncBatch) -> DecodedBatch:
        """The row-JSON SyncBatch in this shape."""
        return cls(b.gateway, b.batch_seq, b.created_ms, ReadingColumns.from_readings(b.readings),
                   list(b.alerts), list(b.events), b.state, list(b.backfill_done),
                   list(b.aggregates), list(b.scenarios_done))


# -- encoding -------------------------------------------------------------------------------


def _dict_column(values: Sequence[str | None]) -> dict[str, Any]:
    index: dict[str | None, int] = {}
    idx = [index.setdefault(v, len(index)) for v in values]
    return {"d": list(index), "i": idx}


def _deltas(values: Sequence[int]) -> list[int]:
    prev = 0
    out = []
    for v in values:
        out.append(v - prev)
        prev = v
    return out


def _float_column(values: Sequence[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    nulls = [i for i, v in enumerate(values) if v is None]
    if not all(map(math.isfinite, present)):  # no integer form; the decoder refuses these
        return {"f": present, "n": nulls}
    for scale in range(_MAX_SCALE + 1):
        k = 10**scale
        if any(abs(v) * k >= 2**53 for v in present):
            break
        ints = [round(v * k) for v in present]
        # Lossless only if every value comes back bit for bit from its integer.
        if all(i / k == v for i, v in zip(ints, present, strict=True)):
            return {"s": scale, "v": _deltas(ints), "n": nulls}
    return {"f": present, "n": nulls}


def encode_columns(c: ReadingColumns) -> dict[str, Any]:
    """The JSON-able columnar form of ``c``."""
    ts = c.ts_ms
    return {
        "n": len(c),
        "device": _dict_column(c.device),
        "boot": _dict_column(c.boot),
        "seq": _deltas(c.seq),
        "type": _dict_column(c.type),
        "ts": _deltas(ts),
        # Device clock and receipt time sit close to ts: small offsets compress to nothing.
        "dts": [None if d is None else d - t for d, t in zip(c.device_ts_ms, ts, strict=True)],
        "rcv": [r - t for r, t in zip(c.received_ms, ts, strict=True)],
        "metrics": {m: _float_column(v) for m, v in c.metrics.items()},
        "score": _float_column(c.score),
        "scorer": _dict_column(c.scorer),
        "mv": _dict_column(c.model_version),
        "anom": [int(a) for a in c.anomalous],
        "replay": [int(r) for r in c.replay],
        "origin": _dict_column(c.origin),
        "note": _dict_column(c.note),
    }


def encode(batch: SyncBatch | DecodedBatch, level: int = ZSTD_LEVEL) -> bytes:
    """``batch`` as zstd-compressed columnar JSON; rows sorted by (device, boot, seq)."""
    cols = (batch.readings if isinstance(batch, DecodedBatch)
            else ReadingColumns.from_readings(
                sorted(batch.readings, key=lambda r: (r.device, r.boot, r.seq))))
    doc = {
        "v": 1, "gateway": batch.gateway, "batch_seq": batch.batch_seq,
        "created_ms": batch.created_ms,
        "alerts": [a.model_dump(mode="json") for a in batch.alerts],
        "events": [e.model_dump(mode="json") for e in batch.events],
        "state": batch.state.model_dump(mode="json") if batch.state else None,
        "backfill_done": list(batch.backfill_done),
        "aggregates": [a.model_dump(mode="json") for a in batch.aggregates],
        "readings": encode_columns(cols),
    }
    if batch.scenarios_done:  # left out when empty: the body of every other batch is unchanged
        doc["scenarios_done"] = [d.model_dump(mode="json") for d in batch.scenarios_done]
    raw = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return zstandard.ZstdCompressor(level=level).compress(raw)


# -- decoding -------------------------------------------------------------------------------


def decompress(data: bytes, limit: int) -> bytes:
    """Undo zstd without ever holding more than ``limit`` bytes; CodecError if corrupt."""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data)
        out = reader.read(limit + 1)
        extra = reader.read(1) if len(out) <= limit else b""
    except zstandard.ZstdError as exc:
        raise CodecError(f"not valid zstd: {exc}") from exc
    if len(out) > limit or extra:
        raise OverflowError(limit)
    return out


def _int(v: object, where: str, low: int, high: int) -> int:
    if type(v) is not int or not low <= v <= high:
        raise CodecError(f"expected an integer within {low}..{high}", where)
    return v


def _list(v: object, where: str, n: int | None = None) -> list[Any]:
    if type(v) is not list or (n is not None and len(v) != n):
        raise CodecError("expected a list" + ("" if n is None else f" of {n} items"), where)
    return v


def _ints(v: object, where: str, n: int) -> list[int]:
    """A list of ``n`` plain integers (bool is not one), checked in C: no per-item bytecode."""
    values = _list(v, where, n)
    if not set(map(type, values)) <= _INT:
        raise CodecError("expected integers", where)
    return values


def _undelta_array(v: object, where: str, n: int, low: int, high: int
                  ) -> npt.NDArray[np.int64]:
    """Running sums of ``n`` integer deltas, each within ``low..high`` (which fit int64)."""
    try:
        deltas = _ints(v, where, n)
    except CodecError as exc:
        raise CodecError("expected integer deltas", where) from exc
    if not deltas:
        return np.zeros(0, dtype=np.int64)
    try:
        arr: npt.NDArray[np.int64] | None = np.array(deltas, dtype=np.int64)
    except OverflowError:  # a delta beyond int64
        arr = None
    bound = _I64_MAX // n
    if arr is not None and -bound <= arr.min() and arr.max() <= bound:
        out = np.cumsum(arr)  # no partial sum can overflow: in C
    else:  # exact, in Python: huge deltas may still cancel out
        exact = list(accumulate(deltas))
        if not (low <= min(exact) and max(exact) <= high):
            raise CodecError(f"values outside {low}..{high}", where)
        return np.array(exact, dtype=np.int64)
    if not (low <= out.min() and out.max() <= high):
        raise CodecError(f"values outside {low}..{high}", where)
    return out


def _undelta(v: object, where: str, n: int, low: int, high: int) -> list[int]:
    return _undelta_array(v, where, n, low, high).tolist()  # type: ignore[no-any-return]


def _encodable(s: str) -> bool:
    """False for a lone surrogate, which the row path's JSON parser refuses."""
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def _strings(v: object, where: str, n: int, check: Callable[[str], object],
             max_len: int | None, *, nullable: bool = False) -> list[Any]:
    """A dictionary-coded string column; ``check`` (and ``max_len``, if the pattern has no
    bound of its own) is what the row schema asks of each value."""
    if type(v) is not dict:
        raise CodecError("expected {d, i}", where)
    d = _list(v.get("d"), f"{where}.d")
    for s in d:  # each distinct value checked once, not once per reading
        if s is None and nullable:
            continue
        if type(s) is not str or (max_len is not None and len(s) > max_len) or not check(s) or not (
                s.isascii() or _encodable(s)):
            raise CodecError(f"invalid value {str(s)[:40]!r}", where)
    idx = _list(v.get("i"), f"{where}.i", n)
    try:
        return list(map(d.__getitem__, idx))
    except (IndexError, TypeError) as exc:
        raise CodecError("index outside the dictionary", where) from exc


def _floats(v: object, where: str, n: int) -> list[float | None]:
    """A float column's ``n`` values, None where the reading has none."""
    return _floats_and_nulls(v, where, n)[0]


def _floats_and_nulls(v: object, where: str, n: int) -> tuple[list[float | None], list[int]]:
    """A float column's values and the positions of its nulls."""
    if type(v) is not dict:
        raise CodecError("expected a float column", where)
    nulls = _list(v.get("n", []), f"{where}.n")
    if any(type(i) is not int for i in nulls) or sorted(set(nulls)) != nulls or (
            nulls and not (nulls[0] >= 0 and nulls[-1] < n)):
        raise CodecError("null positions must be increasing indexes", where)
    if "s" in v:
        k = 10 ** _int(v["s"], f"{where}.s", 0, _MAX_SCALE)
        ints = _undelta_array(v.get("v"), f"{where}.v", n - len(nulls), -(2**62), 2**62)
        present: list[float]
        if not len(ints) or (ints.min() >= -_F64_EXACT and ints.max() <= _F64_EXACT):
            # Integers a float64 holds exactly: numpy's i / k rounds as Python's does.
            present = (ints / k).tolist()
        else:
            present = list(map(k.__rtruediv__, ints.tolist()))  # i / k for each i
    else:
        present = _list(v.get("f"), f"{where}.f", n - len(nulls))
        try:
            finite = set(map(type, present)) <= _NUMBER and all(map(math.isfinite, present))
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise CodecError("expected finite numbers", where)
        present = list(map(float, present))
    if not nulls:
        return present, nulls  # type: ignore[return-value]
    # Put the Nones back between runs of present values: a loop per null, not per reading.
    out: list[float | None] = []
    at = 0
    for i in nulls:
        take = i - len(out)
        out += present[at:at + take]
        at += take
        out.append(None)
    out += present[at:]
    return out, nulls


def _offset_times(doc: dict[str, Any], ts: npt.NDArray[np.int64], n: int
                  ) -> tuple[list[int | None], list[int]]:
    """Device clock and receipt times, sent as offsets from ts."""
    dts_off = _list(doc.get("dts"), "readings.dts", n)
    rcv_off = _list(doc.get("rcv"), "readings.rcv", n)
    if not set(map(type, dts_off)) <= _INT_OR_NONE or not set(map(type, rcv_off)) <= _INT:
        raise CodecError("expected integer offsets", "readings.dts/rcv")
    bad = CodecError("time outside the epoch range", "readings.dts/rcv")
    dts: list[int | None]
    if None in dts_off:
        times = ts.tolist()
        dts = [None if d is None else d + t for d, t in zip(dts_off, times, strict=True)]
        known = [d for d in dts if d is not None]
        if known and not (min(known) >= 0 and max(known) <= MAX_EPOCH_MS):
            raise bad
    else:
        dts = _plus(dts_off, ts, bad)  # type: ignore[assignment]  # no None in it
    return dts, _plus(rcv_off, ts, bad)


def _plus(offsets: list[int], ts: npt.NDArray[np.int64], bad: CodecError) -> list[int]:
    """``ts + offsets`` as a list, every sum within the epoch range (else ``bad``)."""
    if not offsets:
        return []
    try:
        off = np.array(offsets, dtype=np.int64)
    except OverflowError:
        raise bad from None
    # ts is within 0..2**53, so a sum in range needs an offset within ±2**53: no overflow.
    if off.min() < -MAX_EPOCH_MS or off.max() > MAX_EPOCH_MS:
        raise bad
    out = ts + off
    if out.min() < 0 or out.max() > MAX_EPOCH_MS:
        raise bad
    return out.tolist()  # type: ignore[no-any-return]


def _check_metric_counts(nulls: list[list[int]], n: int, notes: set[int]) -> None:
    """Every reading has 1..MAX_METRICS metrics, as in the row schema (given each column's
    null positions), but a manual entry with a note (``notes``: their positions) may have 0."""
    # A reading lacks all only if every column has a null, and one can have too many only if
    # there are more columns than that: only then count, in C, per reading.
    if not n or (0 < len(nulls) <= MAX_METRICS and not all(nulls)):
        return
    missing = np.zeros(n, dtype=np.int64)
    if any(nulls):
        missing += np.bincount(np.concatenate([np.array(x, dtype=np.int64) for x in nulls]),
                               minlength=n)
    present = len(nulls) - missing
    empty = np.flatnonzero(present == 0).tolist()
    bare = [i for i in empty if i not in notes]  # only readings without a metric: few
    if bare:
        raise CodecError(f"reading {bare[0]} has no metric", "readings.metrics")
    if (present > MAX_METRICS).any():
        raise CodecError(f"reading {int(np.argmax(present))} has more than {MAX_METRICS} "
                         "metrics", "readings.metrics")


def decode_columns(doc: object) -> ReadingColumns:
    """Validated columns from their JSON form; CodecError names the first bad column."""
    if type(doc) is not dict:
        raise CodecError("expected an object", "readings")
    n = _int(doc.get("n"), "readings.n", 0, MAX_READINGS)
    ts_array = _undelta_array(doc.get("ts"), "readings.ts", n, 0, MAX_EPOCH_MS)
    dts, rcv = _offset_times(doc, ts_array, n)
    ts: list[int] = ts_array.tolist()
    metrics_doc = doc.get("metrics")
    # Readings may differ in their metrics: a batch can have more columns than one reading.
    most = MAX_METRICS * max(n, 1)
    if type(metrics_doc) is not dict or len(metrics_doc) > most:
        raise CodecError(f"expected at most {most} metric columns", "readings.metrics")
    metrics: dict[str, list[float | None]] = {}
    nulls: list[list[int]] = []
    for name, col in metrics_doc.items():
        if not _METRIC(name):
            raise CodecError("invalid metric name", f"readings.metrics.{name[:64]}")
        metrics[name], col_nulls = _floats_and_nulls(col, f"readings.metrics.{name}", n)
        nulls.append(col_nulls)
    origin, note = _origins_and_notes(doc, n)
    notes = set() if note.count(None) == n else {
        i for i, x in enumerate(note) if x is not None}
    _check_metric_counts(nulls, n, notes)
    flags = [_list(doc.get(k), f"readings.{k}", n) for k in ("anom", "replay")]
    if not all(set(map(type, col)) <= _INT and set(col) <= {0, 1} for col in flags):
        raise CodecError("expected 0/1 flags", "readings.anom/replay")
    scorer = _strings(doc.get("scorer"), "readings.scorer", n, _TEXT, MAX_PROFILE_NAME)
    if not set(scorer) <= SCORERS:
        raise CodecError("unknown scorer", "readings.scorer")
    return ReadingColumns(
        device=_strings(doc.get("device"), "readings.device", n, _ID, None),
        boot=_strings(doc.get("boot"), "readings.boot", n, _BOOT, None),
        seq=_undelta(doc.get("seq"), "readings.seq", n, 0, MAX_SEQ),
        type=_strings(doc.get("type"), "readings.type", n, _TEXT, MAX_PROFILE_NAME),
        ts_ms=ts, device_ts_ms=dts, received_ms=rcv, metrics=metrics,
        score=_floats(doc.get("score"), "readings.score", n), scorer=scorer,
        model_version=_strings(doc.get("mv"), "readings.mv", n, _TEXT, MAX_MODEL_VERSION,
                               nullable=True),
        anomalous=list(map(bool, flags[0])), replay=list(map(bool, flags[1])),
        origin=origin, note=note,
    )


def _origins_and_notes(doc: dict[str, Any], n: int) -> tuple[list[str], list[str | None]]:
    """The origin and note columns; absent (a gateway from before origins): sensor, no note."""
    origin: list[str] = (["sensor"] * n if "origin" not in doc else
                         _strings(doc["origin"], "readings.origin", n, ORIGINS.__contains__,
                                  None))
    note: list[str | None] = ([None] * n if "note" not in doc else
                              _strings(doc["note"], "readings.note", n, _note_text, None,
                                       nullable=True))
    if note.count(None) != n and any(
            origin[i] != "manual" for i, x in enumerate(note) if x is not None):
        raise CodecError("only a manual entry carries a note", "readings.note")
    return origin, note


def _note_text(s: str) -> bool:
    """What the row schema's Note allows: 1..MAX_NOTE characters, no NUL."""
    return 0 < len(s) <= MAX_NOTE and _TEXT(s) is not None


def decode(raw: bytes) -> DecodedBatch:
    """A batch from its (decompressed) columnar JSON; CodecError if anything is off."""
    try:
        doc = json_loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"not JSON: {exc}") from exc
    if type(doc) is not dict:
        raise CodecError("expected a batch object")
    unknown = set(doc) - _HEADER_FIELDS
    if unknown:
        raise CodecError("unknown fields", ",".join(sorted(unknown))[:100])
    try:
        # Everything but the readings, by the row path's own model: the same rules, one model
        # per batch (alerts, events and aggregates are few next to the readings).
        header = SyncBatch.model_validate({**doc, "readings": []})
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        raise CodecError(first["msg"], ".".join(map(str, first["loc"]))) from exc
    return DecodedBatch(
        gateway=header.gateway, batch_seq=header.batch_seq, created_ms=header.created_ms,
        # As in the row form, a batch may leave its readings out (alerts or events only).
        readings=decode_columns(doc["readings"]) if "readings" in doc else ReadingColumns(),
        alerts=header.alerts, events=header.events, state=header.state,
        backfill_done=header.backfill_done, aggregates=header.aggregates,
        scenarios_done=header.scenarios_done,
    )
