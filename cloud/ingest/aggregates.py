"""Storing the per-minute aggregates a gateway folded from readings it had to drop.

One row per (device, metric, minute) in ``reading_aggregates``; last writer wins by
``updated_ms``: a later fold of the same minute replaces the stored version, an older replay
changes nothing. The rollups receive the difference between the new and the stored version
(n and sum as differences, min and max merged by least/greatest), so chart buckets and
reports count each folded reading once however often its minute is re-sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cloud.db.pool import Conn
from cloud.ingest.readings_writer import Seen, merge_seen
from cloud.ingest.rollup import array_literal
from shared.schemas import ReadingAggregate

log = logging.getLogger(__name__)

# Locks the batch's rows in key order, inserting a stand-in row (updated_ms -1, which every
# real version beats within this transaction) where none is stored: two batches carrying the
# same new minute then queue here, and the second one sees the first one's version.
_LOCK = """
INSERT INTO reading_aggregates (device_id, metric, minute, gateway_id, type, n, min, max, mean,
                                sum, first_ts, last_ts, updated_ms)
SELECT d, m, t, %(gw)s, '', 0, 0, 0, 0, 0, t, t, -1
FROM unnest(%(d)s::text[], %(m)s::text[], %(t)s::bigint[]) AS u(d, m, ms),
     LATERAL (SELECT timestamptz 'epoch' + ms * interval '1 ms' AS t) tt
ORDER BY 1, 2, 3
ON CONFLICT (device_id, metric, minute) DO UPDATE SET n = reading_aggregates.n WHERE false
"""
# A statement of its own after the lock: its snapshot holds the latest stored versions.
_APPLY = """
WITH a AS (
    SELECT d, m, timestamptz 'epoch' + ms * interval '1 ms' AS minute, ty, n, lo, hi, mean, s,
           timestamptz 'epoch' + f * interval '1 ms' AS f,
           timestamptz 'epoch' + l * interval '1 ms' AS l, upd
    FROM unnest(%(d)s::text[], %(m)s::text[], %(t)s::bigint[], %(ty)s::text[], %(n)s::int[],
                %(lo)s::float8[], %(hi)s::float8[], %(mean)s::float8[], %(s)s::float8[],
                %(f)s::bigint[], %(l)s::bigint[], %(upd)s::bigint[])
        AS u(d, m, ms, ty, n, lo, hi, mean, s, f, l, upd)
), newer AS (
    SELECT a.*, r.n AS old_n, r.sum AS old_s
    FROM a JOIN reading_aggregates r
        ON r.device_id = a.d AND r.metric = a.m AND r.minute = a.minute
    WHERE r.updated_ms < a.upd
), up AS (
    UPDATE reading_aggregates r SET
        gateway_id = %(gw)s, type = v.ty, n = v.n, min = v.lo, max = v.hi, mean = v.mean,
        sum = v.s, first_ts = v.f, last_ts = v.l, updated_ms = v.upd
    FROM newer v WHERE r.device_id = v.d AND r.metric = v.m AND r.minute = v.minute
), pending AS (
    INSERT INTO rollup_pending (device_id, metric, bucket, min, max, sum, count)
    SELECT d, m, minute, lo, hi, s - old_s, n - old_n FROM newer
)
SELECT count(*) FROM newer
"""


def newest(aggregates: Iterable[ReadingAggregate]) -> list[ReadingAggregate]:
    """One version per (device, metric, minute), the newest, in key order."""
    best: dict[tuple[str, str, int], ReadingAggregate] = {}
    for a in aggregates:
        k = (a.device, a.metric, a.minute_ms)
        if k not in best or a.updated_ms >= best[k].updated_ms:
            best[k] = a
    return [best[k] for k in sorted(best)]


def devices_seen(aggregates: Iterable[ReadingAggregate]) -> dict[str, Seen]:
    """Per device: its type as of its latest aggregate, and the first and last reading time."""
    out: dict[str, Seen] = {}
    for a in aggregates:
        s: Seen = (a.type, a.first_ts_ms, a.last_ts_ms)
        out[a.device] = merge_seen(out[a.device], s) if a.device in out else s
    return out


def upsert_aggregates(conn: Conn, aggregates: list[ReadingAggregate], gateway_id: str) -> int:
    """Store the newer versions among ``aggregates`` and their rollup deltas; how many."""
    if not aggregates:
        return 0
    rows = newest(aggregates)
    keys = {"gw": gateway_id, "d": array_literal([a.device for a in rows]),
            "m": array_literal([a.metric for a in rows]),
            "t": array_literal([a.minute_ms for a in rows])}
    conn.execute(_LOCK, keys, prepare=True)
    # Floats as lists: psycopg dumps them exactly (an array literal would go through str()).
    row = conn.execute(_APPLY, {
        **keys, "ty": [a.type for a in rows], "n": array_literal([a.n for a in rows]),
        "lo": [a.min for a in rows], "hi": [a.max for a in rows],
        "mean": [a.mean for a in rows], "s": [a.sum for a in rows],
        "f": array_literal([a.first_ts_ms for a in rows]),
        "l": array_literal([a.last_ts_ms for a in rows]),
        "upd": array_literal([a.updated_ms for a in rows])}, prepare=True).fetchone()
    changed = int(row[0]) if row else 0
    log.debug("%s: %d of %d aggregates newer than stored", gateway_id, changed, len(rows))
    return changed
