"""Times as the console writes them: UTC to the second, and how long ago."""

from __future__ import annotations

from datetime import UTC, datetime


def parse(value: str) -> datetime:
    """An ISO time from the API (always with its zone) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ago(seconds: float) -> str:
    """``42 s``, ``5 min``, ``3 h``, ``12 d`` ago, rounded down."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 3 * 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def when(value: str | None, now: datetime | None = None, never: str = "never") -> str:
    """``2025-01-02 03:04:05 UTC (5 min ago)`` of an API time; ``never`` for a missing one."""
    if not value:
        return never
    at = parse(value)
    now = now or datetime.now(UTC)
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({ago((now - at).total_seconds())})"


def stamp(value: str | None, never: str = "never") -> str:
    """``2025-01-02 03:04:05`` (UTC) of an API time."""
    return f"{parse(value).astimezone(UTC):%Y-%m-%d %H:%M:%S}" if value else never
