"""Degraded mode: while the disk refuses writes the gateway stops acknowledging and says why.

The broker keeps every unacknowledged reading, so a full or read-only disk costs no data; the
gateway reports the episode on ``/healthz`` and ``/api/status`` instead of crashing.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from edge.store import now_ms

# SQLite primary result codes that mean "this disk cannot take writes now" (sqlite3.h).
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN, _SQLITE_FULL = 8, 10, 14, 13
_STORAGE_CODES = {_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN, _SQLITE_FULL}


def is_storage_failure(exc: sqlite3.Error) -> bool:
    """True if the error says the disk refuses writes (full, read-only, I/O), not a bug."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _STORAGE_CODES
    text = str(exc).lower()
    return any(s in text for s in ("disk is full", "readonly", "disk i/o"))


class StorageHealth:
    """Whether the database takes writes; the gateway is degraded while it does not."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.since_ms: int | None = None
        self.episodes = 0

    @property
    def degraded(self) -> bool:
        """True while writes fail."""
        return self.reason is not None

    def enter(self, reason: str) -> bool:
        """Note a failed write; True if this starts a new degraded episode."""
        started = self.reason is None
        self.reason = reason
        if started:
            self.since_ms = now_ms()
            self.episodes += 1
        return started

    def leave(self) -> None:
        """Writes succeed again."""
        self.reason = None
        self.since_ms = None

    def as_dict(self) -> dict[str, Any]:
        """For /api/status and /healthz."""
        return {"status": "degraded" if self.degraded else "ok", "reason": self.reason,
                "since_ms": self.since_ms, "episodes": self.episodes}
