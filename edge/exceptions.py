"""Errors the gateway raises on purpose, each carrying the context needed to act on it."""

from __future__ import annotations

from shared.exceptions import SmaintError


class GatewayError(SmaintError):
    """Base class of the gateway's own errors."""


class SyncRetryableError(GatewayError):
    """An upload failed in a way worth retrying (network, 5xx, 429, an unreadable ack)."""

    def __init__(self, batch_seq: int, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"batch {batch_seq}: {reason}")
        self.batch_seq = batch_seq
        self.reason = reason
        self.retry_after_s = retry_after_s
