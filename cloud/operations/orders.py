"""Maintenance orders raised from alerts: open → scheduled → done, each change audited."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from cloud.access.users import Principal
from cloud.db.pool import Conn
from cloud.exceptions import InvalidTransitionError, NotFoundError
from cloud.operations import audit
from cloud.operations.alert_review import get_alert

log = logging.getLogger(__name__)

OrderStatus = Literal["open", "scheduled", "done"]
Priority = Literal["low", "medium", "high", "urgent"]
MAX_PAGE = 1000
# The workflow: anything not listed (skipping a step, going back, leaving done) is a 409.
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"scheduled"}),
    "scheduled": frozenset({"done"}),
    "done": frozenset(),
}

_COLUMNS = (
    "order_id, gateway_id, alert_id, device_id, title, priority, due_date, assignee, status,"
    " created_by, created_at, updated_at"
)


class OrderCreate(BaseModel):
    """What an operator gives to raise an order from an alert."""

    model_config = {"extra": "forbid"}

    title: str = Field(min_length=1, max_length=200, examples=["Replace bearing of motor-001"])
    priority: Priority = Field(default="medium")
    due_date: date | None = Field(default=None, examples=["2025-07-01"])
    assignee: str | None = Field(default=None, max_length=100, examples=["maintenance-team-a"])


class OrderChange(BaseModel):
    """Fields to change on an order; the ones left out stay as they are."""

    model_config = {"extra": "forbid"}

    status: OrderStatus | None = Field(default=None, description="open → scheduled → done")
    priority: Priority | None = None
    due_date: date | None = None
    assignee: str | None = Field(default=None, max_length=100)


class Order(BaseModel):
    """A maintenance order."""

    order_id: int
    gateway: str
    alert_id: str
    device: str
    title: str
    priority: Priority
    due_date: date | None
    assignee: str | None
    status: OrderStatus
    created_by: str
    created_at: datetime
    updated_at: datetime


def _order(row: tuple[Any, ...]) -> Order:
    return Order(
        order_id=row[0], gateway=row[1], alert_id=row[2], device=row[3], title=row[4],
        priority=row[5], due_date=row[6], assignee=row[7], status=row[8], created_by=row[9],
        created_at=row[10], updated_at=row[11],
    )


def _audited(order: Order) -> dict[str, Any]:
    return order.model_dump(mode="json", include={"status", "priority", "due_date", "assignee"})


def create_order(
    conn: Conn, who: Principal, gateway: str, alert_id: str, spec: OrderCreate
) -> Order:
    """Raise an order for the device of alert ``gateway/alert_id`` (404 if no such alert)."""
    with conn.transaction():
        alert = get_alert(conn, gateway, alert_id)
        row = conn.execute(
            f"INSERT INTO maintenance_orders (gateway_id, alert_id, device_id, title, priority,"
            f" due_date, assignee, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            f" RETURNING {_COLUMNS}",
            (gateway, alert_id, alert.device, spec.title, spec.priority, spec.due_date,
             spec.assignee, who.name),
        ).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING always returns the row
        order = _order(row)
        audit.record(
            conn, who.name, "order.create", "order", str(order.order_id),
            before=None, after={**_audited(order), "alert": f"{gateway}/{alert_id}"},
            device=order.device,
        )
    log.info("order %d for device %s created by %s", order.order_id, order.device, who.name)
    return order


def get_order(conn: Conn, order_id: int, *, lock: bool = False) -> Order:
    """One order; NotFoundError if there is none with this id."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM maintenance_orders WHERE order_id = %s"
        + (" FOR UPDATE" if lock else ""),
        (order_id,),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"order {order_id} does not exist")
    return _order(row)


def update_order(conn: Conn, who: Principal, order_id: int, change: OrderChange) -> Order:
    """Apply ``change``; a status outside the workflow is refused with 409."""
    fields = change.model_dump(exclude_unset=True)
    with conn.transaction():
        before = get_order(conn, order_id, lock=True)
        wanted = fields.get("status")
        if wanted is not None and wanted != before.status:
            if wanted not in TRANSITIONS[before.status]:
                raise InvalidTransitionError(f"order {order_id}", before.status, wanted)
        elif wanted is not None:
            del fields["status"]  # no change: not a transition, nothing to refuse
        if not fields:
            return before
        assignments = ", ".join(f"{name} = %({name})s" for name in sorted(fields))
        row = conn.execute(
            f"UPDATE maintenance_orders SET {assignments}, updated_at = now()"
            f" WHERE order_id = %(order_id)s RETURNING {_COLUMNS}",
            {**fields, "order_id": order_id},
        ).fetchone()
        assert row is not None  # noqa: S101 - the row is locked above, it still exists
        after = _order(row)
        audit.record(
            conn, who.name, "order.update", "order", str(order_id),
            before=_audited(before), after=_audited(after), device=after.device,
        )
    log.info("order %d of device %s changed by %s: %s", order_id, after.device, who.name,
             sorted(fields))
    return after


def list_orders(
    conn: Conn, *, device: str | None = None, status: OrderStatus | None = None,
    limit: int = 100,
) -> list[Order]:
    """Orders matching the filters, newest first: with ``device``, its maintenance history."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM maintenance_orders"
        " WHERE (%(device)s::text IS NULL OR device_id = %(device)s)"
        " AND (%(status)s::text IS NULL OR status = %(status)s)"
        " ORDER BY order_id DESC LIMIT %(n)s",
        {"device": device, "status": status, "n": min(limit, MAX_PAGE)},
    ).fetchall()
    return [_order(r) for r in rows]
