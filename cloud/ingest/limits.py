"""Ingest's limits as plain values (no database imports: cloud.settings builds them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

EARLIEST = date(2015, 1, 1)


@dataclass(frozen=True)
class IngestLimits:
    """The plausible window of reading timestamps and the partitions one batch may create."""

    earliest: date = EARLIEST
    max_future_s: float = 600.0
    max_new_partitions: int = 4

    @property
    def earliest_ms(self) -> int:
        """``earliest`` (UTC midnight) in epoch milliseconds."""
        return int(datetime(self.earliest.year, self.earliest.month, self.earliest.day,
                            tzinfo=UTC).timestamp() * 1000)
