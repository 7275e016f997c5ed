"""Cloud alert decisions travelling down to the alert's gateway with the sync answers.

Every review an operator takes in the cloud (acknowledge; resolve with a decision) is numbered
per gateway, 1, 2, ..., in the transaction that takes it. The numbering is serialised per
gateway, so the numbers commit in order and a reader never sees 7 while 6 is still to come.
A gateway reports the newest number it applied (GatewayState.alert_decision) with every
upload; the answer carries the ones after it (at most MAX_ALERT_DECISIONS, oldest first).
Nothing is lost (a gateway that crashed before applying reports the old number and gets them
again) and nothing is doubled (the gateway keeps each number once and applies it once).

The way up (acknowledgements made on a gateway) is cloud.operations.alert_review's
acknowledge_on_gateway; a decision never goes back to where it came from.
"""

from __future__ import annotations

import logging
from typing import Literal

from cloud.db.pool import Conn
from shared.schemas import MAX_ALERT_DECISIONS, AlertDecision, GatewayState, ReviewDecision

log = logging.getLogger(__name__)


def queue_decision(
    conn: Conn, gateway: str, alert_id: str, *, action: Literal["acknowledge", "resolve"],
    actor: str, decision: ReviewDecision | None = None, comment: str = "",
) -> int:
    """Number and keep a cloud review for its gateway; inside the review's transaction."""
    # Held to commit: the next decision of this gateway waits, then numbers after this one.
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                 (f"alert-decisions/{gateway}",))
    row = conn.execute(
        "INSERT INTO alert_decisions (gateway_id, decision_id, alert_id, action, actor,"
        " decision, comment) SELECT %(gw)s, coalesce(max(decision_id), 0) + 1, %(id)s,"
        " %(action)s, %(actor)s, %(decision)s, %(comment)s FROM alert_decisions"
        " WHERE gateway_id = %(gw)s RETURNING decision_id",
        {"gw": gateway, "id": alert_id, "action": action, "actor": actor,
         "decision": decision, "comment": comment},
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT … SELECT of an aggregate yields one row
    return int(row[0])


def exchange(conn: Conn, gateway: str, state: GatewayState | None) -> list[AlertDecision]:
    """Note what the gateway reports applied; the decisions after it, for the sync answer.

    A gateway that reports no state gets none: it has no number to continue from.
    """
    if state is None:
        return []
    applied = state.alert_decision
    if applied:
        conn.execute(
            "UPDATE alert_decisions SET confirmed_at = now() WHERE gateway_id = %s"
            " AND decision_id <= %s AND confirmed_at IS NULL", (gateway, applied))
    rows = conn.execute(
        "SELECT decision_id, alert_id, action, actor,"
        " (extract(epoch FROM decided_at) * 1000)::bigint, decision, comment"
        " FROM alert_decisions WHERE gateway_id = %s AND decision_id > %s"
        " ORDER BY decision_id LIMIT %s", (gateway, applied, MAX_ALERT_DECISIONS),
    ).fetchall()
    return [AlertDecision(id=i, alert_id=a, action=act, by=by, at_ms=at, decision=d, comment=c)
            for i, a, act, by, at, d, c in rows]

