"""The append-only audit log: who changed what, when, with the state before and after.

Rows are only ever inserted; a trigger in the database refuses UPDATE, DELETE and TRUNCATE.
Callers write the audit row in the same transaction as the change it describes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from cloud.api.correlation import correlation_id
from cloud.db.pool import Conn

MAX_ENTRIES = 1000


class AuditEntry(BaseModel):
    """One recorded change."""

    audit_id: int
    at: datetime
    actor: str = Field(description="user name (or `cli`, `system`)")
    action: str = Field(examples=["alert.resolve"])
    entity: str = Field(examples=["alert", "order", "user"])
    entity_id: str
    device: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    correlation_id: str | None = Field(default=None, description="of the request that did it")


def record(
    conn: Conn, actor: str, action: str, entity: str, entity_id: str, *,
    before: dict[str, Any] | None, after: dict[str, Any] | None, device: str | None = None,
) -> None:
    """Append one entry; call inside the transaction that makes the change."""
    cid = correlation_id.get()
    conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, device_id, before, after,"
        " correlation_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            actor, action, entity, entity_id, device,
            None if before is None else Jsonb(before), None if after is None else Jsonb(after),
            None if cid == "-" else cid,
        ),
    )


def entries(
    conn: Conn, *, entity: str | None = None, entity_id: str | None = None,
    device: str | None = None, limit: int = 100,
) -> list[AuditEntry]:
    """Entries matching every filter given, oldest first (at most ``limit``, newest kept)."""
    rows = conn.execute(
        "SELECT * FROM (SELECT audit_id, at, actor, action, entity, entity_id, device_id,"
        " before, after, correlation_id FROM audit_log"
        " WHERE (%(entity)s::text IS NULL OR entity = %(entity)s)"
        " AND (%(eid)s::text IS NULL OR entity_id = %(eid)s)"
        " AND (%(device)s::text IS NULL OR device_id = %(device)s)"
        " ORDER BY audit_id DESC LIMIT %(limit)s) newest ORDER BY audit_id",
        {"entity": entity, "eid": entity_id, "device": device, "limit": min(limit, MAX_ENTRIES)},
    ).fetchall()
    return [
        AuditEntry(
            audit_id=r[0], at=r[1], actor=r[2], action=r[3], entity=r[4], entity_id=r[5],
            device=r[6], before=r[7], after=r[8], correlation_id=r[9],
        )
        for r in rows
    ]
