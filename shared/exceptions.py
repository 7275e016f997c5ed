"""Errors raised by the shared wire contract."""

from __future__ import annotations


class SmaintError(Exception):
    """Base class of every error Smart Maintenance raises on purpose."""


class DecodeError(SmaintError):
    """A device message could not be turned into a valid wire object.

    ``field`` names the offending field (dotted path, e.g. ``metrics.temperature_c``) or is
    ``None`` when the payload as a whole is unusable (not JSON, not an object).
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class TopicError(DecodeError):
    """A topic is not part of the Smart Maintenance topic tree."""
