"""PostgreSQL's binary COPY format, built column-wise with numpy: the fast path of ingest.

A row is a fixed-width head (field count, then length and value of each fixed-size field),
built for all rows at once as a numpy structured array, followed by its variable-length
fields (text, jsonb) as bytes. These helpers are shared by every binary COPY in the cloud.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

import numpy as np
import numpy.typing as npt

from cloud.db.pool import Conn

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # no flags, no header extension
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"  # field length -1
PG_EPOCH_MS = 946_684_800_000  # timestamptz travels as microseconds since 2000-01-01 UTC


def pg_timestamps(epoch_ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Epoch milliseconds as binary timestamptz values (µs since 2000-01-01 UTC)."""
    return (np.asarray(epoch_ms, dtype=np.int64) - PG_EPOCH_MS) * 1000


def text(value: str | None) -> bytes:
    """One text field: its length and UTF-8 bytes, or NULL."""
    if value is None:
        return NULL
    data = value.encode()
    return len(data).to_bytes(4, "big") + data


def heads(head: npt.NDArray[np.void]) -> list[bytes]:
    """Each row of a structured array as the bytes of its fixed-width part."""
    rows: list[bytes] = head.view(f"V{head.dtype.itemsize}").tolist()
    return rows


def payload(rows: Iterable[bytes]) -> bytes:
    """A whole binary COPY stream of the already encoded ``rows`` (pieces may split rows)."""
    return b"".join(chain((SIGNATURE,), rows, (TRAILER,)))


def copy_in(conn: Conn, statement: str, data: bytes) -> None:
    """Run ``COPY … FROM STDIN (FORMAT binary)`` with ``data`` from ``payload``."""
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(data)
