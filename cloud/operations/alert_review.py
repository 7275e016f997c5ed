"""Operator work on alerts: list and filter, acknowledge, resolve with a decision, export CSV.

An alert's *condition* (``gateway_state``) is what its gateway reports and keeps overwriting;
its *review* (``state``: open → acknowledged → resolved, with a decision) is the operators'
and lives in ``alert_reviews``. Every review change is audited in the same transaction.

Both sides review the same alert, and the review only moves forward (open → acknowledged →
resolved): an acknowledgement made on the gateway arrives with the alert and acknowledges an
open review (acknowledge_on_gateway, audited once however often the batch is re-sent), but
never reopens or overrides one acknowledged or resolved in the cloud; reviews taken here are
queued for the gateway (cloud.operations.alert_sync).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import logging
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from cloud.access.users import Principal
from cloud.db.pool import Conn
from cloud.exceptions import BadCursorError, InvalidTransitionError, NotFoundError
from cloud.operations import alert_sync, audit
from shared.schemas import MAX_ALERT_COMMENT, Alert, ReviewDecision, Severity

log = logging.getLogger(__name__)

ReviewState = Literal["open", "acknowledged", "resolved"]
Decision = ReviewDecision
MAX_PAGE = 1000
MAX_COMMENT = MAX_ALERT_COMMENT  # the gateway keeps what the cloud takes

_SELECT = (
    "SELECT a.gateway_id, a.alert_id, a.device_id, a.severity, a.state, a.opened_at,"
    " a.resolved_at, a.score, a.scorer, a.model_version, a.explanation,"
    " coalesce(r.status, 'open'), r.acknowledged_by, r.acknowledged_at, r.resolved_by,"
    " r.resolved_at, r.decision, coalesce(r.comment, ''), a.simulated"
    " FROM alerts a LEFT JOIN alert_reviews r USING (gateway_id, alert_id)"
)


class AlertView(BaseModel):
    """An alert with its gateway-reported condition and its operator review."""

    gateway: str
    alert_id: str
    device: str
    severity: Severity
    gateway_state: str = Field(description="what the gateway reports: open/acknowledged/resolved")
    opened_at: datetime
    cleared_at: datetime | None = Field(description="when the gateway saw the condition end")
    score: float
    scorer: str
    model_version: str | None
    explanation: dict[str, float]
    state: ReviewState = Field(description="operator review: open → acknowledged → resolved")
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    decision: Decision | None = None
    comment: str = ""
    simulated: bool = Field(default=False, description="opened on an injected SIMULATED fault")


class AlertPage(BaseModel):
    """Alerts newest first; pass ``next`` as ``after`` for the following page."""

    alerts: list[AlertView]
    next: str | None = Field(description="cursor of the next page; null on the last")


def _view(row: tuple[Any, ...]) -> AlertView:
    return AlertView(
        gateway=row[0], alert_id=row[1], device=row[2], severity=row[3], gateway_state=row[4],
        opened_at=row[5], cleared_at=row[6], score=row[7], scorer=row[8], model_version=row[9],
        explanation=row[10], state=row[11], acknowledged_by=row[12], acknowledged_at=row[13],
        resolved_by=row[14], resolved_at=row[15], decision=row[16], comment=row[17],
        simulated=row[18],
    )


def _encode_cursor(view: AlertView) -> str:
    us = int(view.opened_at.timestamp() * 1_000_000)
    return base64.urlsafe_b64encode(f"{us}|{view.gateway}|{view.alert_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    try:
        us, gateway, alert_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromtimestamp(int(us) / 1_000_000, UTC), gateway, alert_id
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError, OSError) as exc:
        raise BadCursorError(f"not an alerts cursor: {cursor!r}") from exc


def list_alerts(
    conn: Conn, *, device: str | None = None, state: ReviewState | None = None,
    severity: Severity | None = None, since: datetime | None = None,
    until: datetime | None = None, limit: int = 100, after: str | None = None,
) -> AlertPage:
    """Alerts matching every filter given, newest first, ``limit`` per page."""
    start = _decode_cursor(after) if after else None
    rows = conn.execute(
        _SELECT + " WHERE (%(device)s::text IS NULL OR a.device_id = %(device)s)"
        " AND (%(state)s::text IS NULL OR coalesce(r.status, 'open') = %(state)s)"
        " AND (%(severity)s::text IS NULL OR a.severity = %(severity)s)"
        " AND (%(since)s::timestamptz IS NULL OR a.opened_at >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR a.opened_at < %(until)s)"
        " AND (%(c_ts)s::timestamptz IS NULL"
        "      OR (a.opened_at, a.gateway_id, a.alert_id) < (%(c_ts)s, %(c_gw)s, %(c_id)s))"
        " ORDER BY a.opened_at DESC, a.gateway_id DESC, a.alert_id DESC LIMIT %(n)s",
        {
            "device": device, "state": state, "severity": severity, "since": since,
            "until": until, "c_ts": start and start[0], "c_gw": start and start[1],
            "c_id": start and start[2], "n": min(limit, MAX_PAGE) + 1,
        },
    ).fetchall()
    views = [_view(r) for r in rows[: min(limit, MAX_PAGE)]]
    more = len(rows) > len(views)
    return AlertPage(alerts=views, next=_encode_cursor(views[-1]) if more else None)


def get_alert(conn: Conn, gateway: str, alert_id: str, *, lock: bool = False) -> AlertView:
    """One alert; NotFoundError if no gateway uploaded it. ``lock`` holds its review row."""
    if lock:
        # Serialises concurrent reviews of one alert: the second waits, then sees the first.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{gateway}/{alert_id}",)
        )
    row = conn.execute(
        _SELECT + " WHERE a.gateway_id = %s AND a.alert_id = %s", (gateway, alert_id)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"alert {gateway}/{alert_id} does not exist")
    return _view(row)


def _review(view: AlertView) -> dict[str, Any]:
    return view.model_dump(
        mode="json",
        include={"state", "acknowledged_by", "resolved_by", "decision", "comment"},
    )


def acknowledge(
    conn: Conn, who: Principal, gateway: str, alert_id: str, comment: str = ""
) -> AlertView:
    """open → acknowledged; InvalidTransitionError (409) from any other state."""
    with conn.transaction():
        before = get_alert(conn, gateway, alert_id, lock=True)
        if before.state != "open":
            raise InvalidTransitionError(
                f"alert {gateway}/{alert_id}", before.state, "acknowledged"
            )
        conn.execute(
            "INSERT INTO alert_reviews (gateway_id, alert_id, status, acknowledged_by,"
            " acknowledged_at, comment) VALUES (%s, %s, 'acknowledged', %s, now(), %s)",
            (gateway, alert_id, who.name, comment),
        )
        alert_sync.queue_decision(conn, gateway, alert_id, action="acknowledge",
                                  actor=who.name, comment=comment)
        after = get_alert(conn, gateway, alert_id)
        audit.record(
            conn, who.name, "alert.acknowledge", "alert", f"{gateway}/{alert_id}",
            before=_review(before), after=_review(after), device=after.device,
        )
    log.info("alert %s/%s of device %s acknowledged by %s", gateway, alert_id, after.device,
             who.name)
    return after


def resolve(
    conn: Conn, who: Principal, gateway: str, alert_id: str, *, decision: Decision,
    comment: str = "",
) -> AlertView:
    """open or acknowledged → resolved with ``decision``; 409 if it is resolved already."""
    with conn.transaction():
        before = get_alert(conn, gateway, alert_id, lock=True)
        if before.state == "resolved":
            raise InvalidTransitionError(f"alert {gateway}/{alert_id}", before.state, "resolved")
        conn.execute(
            "INSERT INTO alert_reviews AS r (gateway_id, alert_id, status, resolved_by,"
            " resolved_at, decision, comment) VALUES (%(gw)s, %(id)s, 'resolved', %(who)s, now(),"
            " %(decision)s, %(comment)s) ON CONFLICT (gateway_id, alert_id) DO UPDATE SET"
            " status = 'resolved', resolved_by = %(who)s, resolved_at = now(),"
            " decision = %(decision)s,"
            " comment = CASE WHEN %(comment)s = '' THEN r.comment ELSE %(comment)s END",
            {"gw": gateway, "id": alert_id, "who": who.name, "decision": decision,
             "comment": comment},
        )
        alert_sync.queue_decision(conn, gateway, alert_id, action="resolve", actor=who.name,
                                  decision=decision, comment=comment)
        after = get_alert(conn, gateway, alert_id)
        audit.record(
            conn, who.name, "alert.resolve", "alert", f"{gateway}/{alert_id}",
            before=_review(before), after=_review(after), device=after.device,
        )
    log.info("alert %s/%s of device %s resolved by %s as %s", gateway, alert_id, after.device,
             who.name, decision)
    return after


def acknowledge_on_gateway(conn: Conn, gateway: str, alert: Alert) -> bool:
    """Take in an acknowledgement made on ``gateway`` (``alert.ack``); True the first time.

    Inside the batch's transaction, after the alert is upserted. The first arrival is kept
    and audited ("acknowledged on gateway …"); it acknowledges the review if that is still
    open. Later arrivals (a retried batch, a newer version of the alert) change nothing.
    """
    ack = alert.ack
    if ack is None:
        return False
    fresh = conn.execute(
        "INSERT INTO alert_gateway_acks (gateway_id, alert_id, acked_by, acked_at, comment)"
        " VALUES (%s, %s, %s, timestamptz 'epoch' + %s::bigint * interval '1 ms', %s)"
        " ON CONFLICT DO NOTHING RETURNING true",
        (gateway, alert.alert_id, ack.by, ack.at_ms, ack.comment)).fetchone()
    if fresh is None:
        return False
    before = get_alert(conn, gateway, alert.alert_id, lock=True)
    if before.state == "open":
        conn.execute(
            "INSERT INTO alert_reviews (gateway_id, alert_id, status, acknowledged_by,"
            " acknowledged_at, comment) VALUES (%s, %s, 'acknowledged', %s,"
            " timestamptz 'epoch' + %s::bigint * interval '1 ms', %s)",
            (gateway, alert.alert_id, f"{ack.by} on gateway {gateway}", ack.at_ms,
             ack.comment))
    after = get_alert(conn, gateway, alert.alert_id)
    summary = f"acknowledged on gateway {gateway} by {ack.by}"
    if ack.comment:
        summary += f": {ack.comment}"
    if before.state != "open":
        summary += f" (review already {before.state} in the cloud; left so)"
    audit.record(
        conn, f"{ack.by}@{gateway}", "alert.gateway_ack", "alert",
        f"{gateway}/{alert.alert_id}", before=_review(before),
        after={"summary": summary, **_review(after)}, device=after.device,
    )
    log.info("alert %s/%s of device %s acknowledged on the gateway by %s", gateway,
             alert.alert_id, after.device, ack.by)
    return True


DECISION_COLUMNS = (
    "gateway", "alert_id", "device", "severity", "opened_at", "resolved_at", "resolved_by",
    "decision", "comment", "score", "scorer", "model_version", "simulated",
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in {"=", "+", "-", "@", "\t", "\r"}:
        # A text cell starting so is a formula to spreadsheets; operators' comments are free
        # text, so defuse them (OWASP's CSV-injection advice). Numbers stay numbers.
        return "'" + value
    return str(value)


def decisions_csv(conn: Conn, since: datetime | None = None, until: datetime | None = None) -> str:
    """Resolved alerts with their decisions (resolved in [since, until)) as CSV text."""
    rows = conn.execute(
        "SELECT a.gateway_id, a.alert_id, a.device_id, a.severity, a.opened_at, r.resolved_at,"
        " r.resolved_by, r.decision, r.comment, a.score, a.scorer, a.model_version,"
        " a.simulated FROM alert_reviews r JOIN alerts a USING (gateway_id, alert_id)"
        " WHERE r.status = 'resolved'"
        " AND (%(since)s::timestamptz IS NULL OR r.resolved_at >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR r.resolved_at < %(until)s)"
        " ORDER BY r.resolved_at, a.gateway_id, a.alert_id",
        {"since": since, "until": until},
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(DECISION_COLUMNS)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()
