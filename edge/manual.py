"""Manual entries: a technician's measurement and/or inspection note against a device.

Entered on the gateway panel's device page (a signed-in session: ui/panel), stored like any
reading with origin ``manual`` and synced with the others. Each device's manual entries form
one boot of their own (shared.schemas.MANUAL_BOOT, which a device may not use) numbered 0, 1,
... by a counter kept in the database, so their identity (device, boot, seq) is unique and
stays so after retention deleted synced rows: the cloud applies each exactly once.

They never go through the pipeline: a hand-held reading taken once, at another place on the
machine and with another instrument, is not a sample of the device's stream, so it must not
move the streaming detector's state (its rolling windows would see a jump that is not the
machine's) nor open or resolve an alert. They are stored unscored.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping

from pydantic import ValidationError

from edge.exceptions import GatewayError
from edge.store import Store, now_ms
from shared.codec import check_metrics
from shared.exceptions import DecodeError
from shared.schemas import MANUAL_BOOT, MAX_NOTE, MAX_SEQ, Reading

log = logging.getLogger(__name__)
# readings.time_source of a manual entry: the gateway clock when it was entered.
TIME_SOURCE = "gateway"


class ManualEntryError(GatewayError):
    """A manual entry the gateway refuses; the message says what to correct."""


def _clean_note(note: str | None) -> str | None:
    """The note without surrounding blanks; None if nothing is left."""
    if note is None:
        return None
    text = note.strip()
    if not text:
        return None
    if len(text) > MAX_NOTE:
        raise ManualEntryError(f"the note has {len(text)} characters; at most {MAX_NOTE}")
    if "\x00" in text:
        raise ManualEntryError("the note contains a NUL character; remove it")
    return text


def _check(sensor_type: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics, each a finite number of the device's profile within its range."""
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ManualEntryError(f"{name}: enter a number")
        values[name] = float(value)
    try:
        check_metrics(sensor_type, values)
    except DecodeError as exc:
        raise ManualEntryError(exc.reason or str(exc)) from exc
    return values


def record_manual(store: Store, device: str, sensor_type: str, metrics: Mapping[str, float],
                  note: str | None, *, at_ms: int | None = None) -> Reading:
    """Validate and store one manual entry of ``device``; returns the stored reading.

    ``metrics`` in the units of the device's profile (``sensor_type``), checked by the same
    rules as a device's; at least one metric or a note. Raises ManualEntryError otherwise.
    """
    text = _clean_note(note)
    values = _check(sensor_type, metrics)
    if not values and text is None:
        raise ManualEntryError("enter a measured value or a note")
    at = now_ms() if at_ms is None else at_ms
    with store.transaction():
        row = store.conn.execute(
            "INSERT INTO manual_seqs (device, next_seq) VALUES (?, 1) ON CONFLICT(device) "
            "DO UPDATE SET next_seq = next_seq + 1 RETURNING next_seq - 1", (device,)
        ).fetchone()
        seq = int(row[0])
        if seq > MAX_SEQ:
            raise ManualEntryError(f"device {device!r} has used up its {MAX_SEQ + 1} manual "
                                   "entries")
        try:
            reading = Reading(device=device, boot=MANUAL_BOOT, seq=seq, type=sensor_type,
                              ts_ms=at, device_ts_ms=None, received_ms=at, metrics=values,
                              score=None, scorer="none", anomalous=False, origin="manual",
                              note=text)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise ManualEntryError(f"{'.'.join(map(str, err['loc'])) or 'entry'}: "
                                   f"{err['msg']}") from exc
        stored = store.insert_readings([(
            device, MANUAL_BOOT, seq, sensor_type, at, None, at,
            json.dumps(values, separators=(",", ":")), None, "none",
            None, 0, TIME_SOURCE, "manual", text)])
        if stored != 1:
            raise ManualEntryError(f"manual entry {seq} of {device!r} exists already")
        store.bump("manual_entries")
    log.info("manual entry seq=%d metrics=%s note=%s", seq, sorted(values),
             "yes" if text else "no", extra={"device": device})
    return reading
