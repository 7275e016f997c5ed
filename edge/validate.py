"""Validation: a message becomes a Telemetry, a DeviceStatus or a dead letter, never an error."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.codec import decode_status, decode_telemetry
from shared.exceptions import DecodeError
from shared.schemas import DeviceStatus, Telemetry
from shared.topics import parse_device_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as it came off the broker, stamped with the gateway clock."""

    topic: str
    payload: bytes
    received_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the gateway refused, with why and (if known) which field was at fault."""

    topic: str
    payload: bytes
    received_ms: int
    reason: str
    field: str | None = None


Validated = Telemetry | DeviceStatus | DeadLetter


def classify(msg: Incoming) -> Validated:
    """Decode a message by its topic; any failure, expected or not, becomes a dead letter."""
    try:
        device, channel = parse_device_topic(msg.topic)
        if channel == "telemetry":
            return decode_telemetry(msg.payload, topic_device=device)
        return decode_status(msg.payload, topic_device=device)
    except DecodeError as exc:
        return DeadLetter(msg.topic, msg.payload, msg.received_ms, exc.reason or "invalid",
                          exc.field)
    except Exception as exc:
        # A bug in decoding must cost one message, not the ingest loop: keep it for diagnosis.
        log.exception("unexpected error decoding a message on topic=%s", msg.topic)
        return DeadLetter(msg.topic, msg.payload, msg.received_ms,
                          f"internal error while decoding: {type(exc).__name__}: {exc}")
