"""Times without a zone are UTC everywhere in the system (API parameters, CLI flags, queries)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """``value`` with UTC as its zone if it has none (not the server's or session's zone)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    return as_utc(datetime.fromisoformat(text))
