"""Fixed-window rate limits counted in PostgreSQL, so that every replica shares one count.

One upsert per request returns the window's new count; over the limit the request is refused
with 429 (``RateLimitedError``) and ``Retry-After`` set to the end of the window.
"""

from __future__ import annotations

import logging
import math

from cloud.db.pool import Conn

log = logging.getLogger(__name__)

WINDOW_S = 60
# Windows older than this are of no use to anyone; the job worker deletes them.
_KEEP_S = 10 * WINDOW_S


def hit(conn: Conn, principal: str, limit: int, window_s: int = WINDOW_S) -> int | None:
    """Count one request of ``principal``: None if allowed, else seconds until it may retry.

    Runs in the caller's transaction, which must commit even when the request is refused
    (so refusals keep counting); raise ``RateLimitedError`` after the commit.
    """
    row = conn.execute(
        "INSERT INTO rate_limit_windows AS w (principal, window_start, hits)"
        " VALUES (%(p)s, to_timestamp(floor(extract(epoch FROM now()) / %(w)s) * %(w)s), 1)"
        " ON CONFLICT (principal, window_start) DO UPDATE SET hits = w.hits + 1"
        " RETURNING hits, extract(epoch FROM w.window_start) + %(w)s - extract(epoch FROM now())",
        {"p": principal, "w": window_s},
    ).fetchone()
    assert row is not None  # noqa: S101 - an upsert with RETURNING always returns the row
    hits, left_s = int(row[0]), float(row[1])
    if hits <= limit:
        return None
    if hits == limit + 1:  # once per window, not once per refused request
        log.warning("rate limit of %d/%d s reached by %s", limit, window_s, principal)
    return max(1, math.ceil(left_s))


def blocked(conn: Conn, principal: str, limit: int, window_s: int = WINDOW_S) -> int | None:
    """Seconds until ``principal`` may try again if it is over ``limit`` now, else None.

    Reads the current window without counting: a throttled address is refused before its
    credential is even checked, so it cannot go on guessing.
    """
    row = conn.execute(
        "SELECT extract(epoch FROM window_start) + %(w)s - extract(epoch FROM now())"
        " FROM rate_limit_windows WHERE principal = %(p)s AND hits > %(limit)s"
        " AND window_start = to_timestamp(floor(extract(epoch FROM now()) / %(w)s) * %(w)s)",
        {"p": principal, "w": window_s, "limit": limit},
    ).fetchone()
    return None if row is None else max(1, math.ceil(float(row[0])))


def prune(conn: Conn) -> int:
    """Delete windows that ended long ago; returns how many rows went."""
    cur = conn.execute(
        "DELETE FROM rate_limit_windows WHERE window_start < now() - make_interval(secs => %s)",
        (_KEEP_S,),
    )
    return cur.rowcount
