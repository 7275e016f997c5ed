"""Reading series for the panel: a device's latest readings, and its last hour kept live.

Every query walks the readings' primary key (device, boot, seq) or the rowid: never a scan of
the whole table, which holds days of every device (the gateway's ingest shares the loop).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from shared.schemas import MANUAL_BOOT

HOUR_MS = 3_600_000
# The live chart keeps one reading per half second (at most 7,200 an hour) and draws at most
# MAX_DRAWN points, each the reading with the highest score of its slice: spikes stay visible.
BUCKET_MS = 500
MAX_DRAWN = 1_500


@dataclass(frozen=True, slots=True)
class Point:
    """One stored reading as the panel shows it."""

    boot: str
    seq: int
    ts_ms: int
    metrics: dict[str, float]
    score: float | None
    scorer: str
    model_version: str | None
    anomalous: bool
    origin: str = "sensor"  # sensor, manual (a technician's entry) or simulated
    note: str | None = None

    @property
    def scored_by(self) -> str:
        """The model version that scored it, or the detector's name."""
        return self.model_version or {"stat": "statistical", "none": "unscored"}.get(
            self.scorer, self.scorer)


_COLUMNS = "boot, seq, ts_ms, metrics, score, scorer, model_version, anomalous, origin, note"


def _point(row: tuple[object, ...]) -> Point:
    boot, seq, ts, metrics, score, scorer, version, anomalous, origin, note = row
    return Point(str(boot), int(str(seq)), int(str(ts)), json.loads(str(metrics)),
                 None if score is None else float(str(score)), str(scorer),
                 None if version is None else str(version), bool(anomalous), str(origin),
                 None if note is None else str(note))


def latest(conn: sqlite3.Connection, device: str, boot: str | None, n: int) -> list[Point]:
    """The last ``n`` readings of the device's current boot, oldest first."""
    if boot is None:
        return []
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM readings WHERE device = ? AND boot = ? "
        "ORDER BY seq DESC LIMIT ?", (device, boot, n)).fetchall()
    return [_point(r) for r in reversed(rows)]


def _first_seq_since(conn: sqlite3.Connection, device: str, boot: str, seqs: tuple[int, int],
                     since_ms: int) -> int:
    """Smallest stored seq of the boot in [lo, hi] sampled at or after ``since_ms`` (binary
    search over the primary key: a boot's sampling times grow with its seq)."""
    lo, hi = seqs
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            "SELECT seq, ts_ms FROM readings WHERE device = ? AND boot = ? AND seq >= ? "
            "ORDER BY seq LIMIT 1", (device, boot, mid)).fetchone()
        if row is None or row[0] > hi or row[1] >= since_ms:
            hi = mid
        else:
            lo = int(row[0]) + 1
    return lo


def since(conn: sqlite3.Connection, device: str, since_ms: int) -> list[Point]:
    """Every reading of the device sampled at or after ``since_ms``, boot by boot."""
    boots = conn.execute(
        "SELECT boot, first_seq, last_seq FROM device_boots WHERE device = ? "
        "AND last_seen_ms >= ? ORDER BY first_seen_ms", (device, since_ms - HOUR_MS)).fetchall()
    out: list[Point] = []
    for boot, first, last in boots:
        start = _first_seq_since(conn, device, boot, (int(first), int(last)), since_ms)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM readings WHERE device = ? AND boot = ? AND seq >= ? "
            "AND ts_ms >= ? ORDER BY seq", (device, boot, start, since_ms))
        out.extend(_point(r) for r in rows)
    # Manual entries: their own boot, not in device_boots; few, so a walk of its key range.
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM readings WHERE device = ? AND boot = ? AND ts_ms >= ? "
        "ORDER BY seq", (device, MANUAL_BOOT, since_ms))
    out.extend(_point(r) for r in rows)
    return out


def newest_rowid(conn: sqlite3.Connection) -> int:
    """The rowid of the last stored reading (0 if none)."""
    (rowid,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM readings").fetchone()
    return int(rowid)


def after_rowid(conn: sqlite3.Connection, device: str, rowid: int) -> tuple[list[Point], int]:
    """The device's readings stored after ``rowid``, and the newest rowid seen."""
    top = max(newest_rowid(conn), rowid)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM readings WHERE rowid > ? AND rowid <= ? AND device = ? "
        "ORDER BY rowid", (rowid, top, device)).fetchall()
    return [_point(r) for r in rows], top


@dataclass
class LiveHour:
    """A device's last hour, one reading per half-second bucket (the one with the highest
    score), brought up to date with only the readings stored since the last call."""

    device: str
    buckets: dict[int, Point] = field(default_factory=dict)
    rowid: int = 0
    # A technician's entries, kept apart: they are not samples of the device's stream.
    manual: dict[int, Point] = field(default_factory=dict)  # by seq

    def load(self, conn: sqlite3.Connection, now_ms: int) -> None:
        """Fill from the store: the readings of the last hour."""
        self.rowid = newest_rowid(conn)
        self.buckets.clear()
        self.manual.clear()
        self._add(since(conn, self.device, now_ms - HOUR_MS))

    def refresh(self, conn: sqlite3.Connection, now_ms: int) -> bool:
        """Add readings stored since the last call, drop those older than an hour.

        True if anything changed (the chart needs redrawing).
        """
        new, self.rowid = after_rowid(conn, self.device, self.rowid)
        self._add(new)
        cutoff = (now_ms - HOUR_MS) // BUCKET_MS
        old = [b for b in self.buckets if b < cutoff]
        for b in old:
            del self.buckets[b]
        stale = [s for s, p in self.manual.items() if p.ts_ms // BUCKET_MS < cutoff]
        for s in stale:
            del self.manual[s]
        return bool(new or old or stale)

    def entries(self) -> list[Point]:
        """The manual entries of the hour, in time order."""
        return sorted(self.manual.values(), key=lambda p: (p.ts_ms, p.seq))

    def _add(self, points: list[Point]) -> None:
        for p in points:
            if p.origin == "manual":
                self.manual[p.seq] = p
                continue
            b = p.ts_ms // BUCKET_MS
            held = self.buckets.get(b)
            if held is None or _rank(p) >= _rank(held):
                self.buckets[b] = p

    def points(self) -> list[Point]:
        """The kept readings in time order."""
        return [self.buckets[b] for b in sorted(self.buckets)]

    def drawn(self, limit: int = MAX_DRAWN) -> list[Point]:
        """At most ``limit`` of the kept readings, in time order: where there are more, each
        is the highest-scored reading of an equal slice of the time they span."""
        kept = self.points()
        if len(kept) <= limit:
            return kept
        first, last = kept[0].ts_ms, kept[-1].ts_ms
        width = (last - first) / limit + 1
        slices: dict[int, Point] = {}
        for p in kept:
            s = int((p.ts_ms - first) // width)
            held = slices.get(s)
            if held is None or _rank(p) >= _rank(held):
                slices[s] = p
        return [slices[s] for s in sorted(slices)]


def _rank(p: Point) -> tuple[bool, float]:
    return (p.anomalous, p.score if p.score is not None else float("-inf"))
