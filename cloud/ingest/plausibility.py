"""Which readings the cloud stores: timestamps inside a plausible window, the rest dead-lettered.

Every day a reading names needs a partition of ``readings``; a gateway with a broken clock (or a
hostile one) could otherwise make thousands. Readings before ``earliest`` or more than
``max_future_s`` ahead of the cloud's clock go to ``ingest_dead_letters`` with the reason,
in the batch's own transaction; the rest are stored as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from cloud.db.pool import Conn
from cloud.ingest.limits import IngestLimits
from shared.batchcodec import ReadingColumns


@dataclass(frozen=True)
class DeadLetter:
    """One reading refused, and why."""

    index: int
    reason: str


def screen(cols: ReadingColumns, limits: IngestLimits, now_ms: int | None = None
           ) -> list[DeadLetter]:
    """The readings of ``cols`` outside the plausible window, with their reasons."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    low, high = limits.earliest_ms, now + int(limits.max_future_s * 1000)
    if not cols.ts_ms or (low <= min(cols.ts_ms) and max(cols.ts_ms) <= high):
        return []  # the usual batch: one pass in C, no per-reading work
    early = f"timestamp before {limits.earliest.isoformat()} (ingest.earliest)"
    late = (f"timestamp more than {limits.max_future_s:g} s ahead of the cloud clock "
            "(ingest.max_future_s)")
    return [DeadLetter(i, early if t < low else late)
            for i, t in enumerate(cols.ts_ms) if t < low or t > high]


def store(conn: Conn, cols: ReadingColumns, refused: list[DeadLetter], gateway_id: str,
          batch_seq: int) -> None:
    """Write the refused readings to ingest_dead_letters (in the caller's transaction)."""
    if not refused:
        return
    rows = cols.select([d.index for d in refused]).to_readings()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ingest_dead_letters (gateway_id, batch_seq, device_id, ts_ms, reason,"
            " reading) VALUES (%s, %s, %s, %s, %s, %s)",
            [(gateway_id, batch_seq, r.device, r.ts_ms, d.reason, Jsonb(r.model_dump(mode="json")))
             for r, d in zip(rows, refused, strict=True)])


class IngestDeadLetter(BaseModel):
    """A reading the cloud did not store, and why."""

    dead_letter_id: int
    at: datetime = Field(description="when the cloud refused it")
    gateway: str
    batch_seq: int
    device: str
    ts_ms: int = Field(description="the reading's implausible timestamp")
    reason: str
    reading: dict[str, Any] = Field(description="the reading as uploaded")


def listing(conn: Conn, *, gateway: str | None, limit: int) -> list[IngestDeadLetter]:
    """The newest dead-lettered readings (of ``gateway`` if given), newest first."""
    rows = conn.execute(
        "SELECT dead_letter_id, at, gateway_id, batch_seq, device_id, ts_ms, reason, reading"
        " FROM ingest_dead_letters WHERE (%(gw)s::text IS NULL OR gateway_id = %(gw)s)"
        " ORDER BY dead_letter_id DESC LIMIT %(limit)s", {"gw": gateway, "limit": limit})
    return [IngestDeadLetter(dead_letter_id=r[0], at=r[1], gateway=r[2], batch_seq=r[3],
                             device=r[4], ts_ms=r[5], reason=r[6], reading=r[7])
            for r in rows]


def counts(conn: Conn) -> list[tuple[str, int]]:
    """Dead-lettered readings so far, per reason."""
    return [(str(r), int(n)) for r, n in conn.execute(
        "SELECT reason, count(*) FROM ingest_dead_letters GROUP BY 1")]
