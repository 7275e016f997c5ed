"""Maintenance orders: raise from an alert, move through open → scheduled → done, history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from cloud.api.deps import Operator, Pool, Viewer
from cloud.api.routes.alerts import DENIED, AlertIdPath, GatewayPath
from cloud.operations import audit
from cloud.operations.orders import (
    MAX_PAGE,
    Order,
    OrderChange,
    OrderCreate,
    OrderStatus,
    create_order,
    get_order,
    list_orders,
    update_order,
)
from shared.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["maintenance"])

OrderId = Annotated[int, Path(ge=1, le=2**63 - 1, description="order id")]
DevicePath = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", description="device id")]


class DeviceMaintenance(BaseModel):
    """A device's maintenance history: its orders and every audited change touching it."""

    device: str
    orders: list[Order]
    events: list[audit.AuditEntry]


@router.post(
    "/alerts/{gateway}/{alert_id}/orders", response_model=Order, status_code=201,
    summary="Raise a maintenance order from an alert",
    responses={**DENIED, 404: {"description": "no such alert"}},
)
def post_order(
    pool: Pool, who: Operator, gateway: GatewayPath, alert_id: AlertIdPath, body: OrderCreate
) -> Order:
    """A new order (status open) for the alert's device; audited."""
    with pool.connection() as conn:
        return create_order(conn, who, gateway, alert_id, body)


@router.get("/orders", response_model=list[Order], summary="Orders, newest first",
            responses=DENIED)
def get_orders(
    pool: Pool,
    _: Viewer,
    device: Annotated[str | None, Query(pattern=f"^{ID_PATTERN}$")] = None,
    status: OrderStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> list[Order]:
    """Filter by device and status."""
    with pool.connection() as conn:
        return list_orders(conn, device=device, status=status, limit=limit)


@router.get("/orders/{order_id}", response_model=Order, summary="One order",
            responses={**DENIED, 404: {"description": "no such order"}})
def get_one(pool: Pool, _: Viewer, order_id: OrderId) -> Order:
    """The order."""
    with pool.connection() as conn:
        return get_order(conn, order_id)


@router.patch(
    "/orders/{order_id}", response_model=Order, summary="Change an order",
    responses={**DENIED, 404: {"description": "no such order"},
               409: {"description": "status change outside open → scheduled → done"}},
)
def patch_order(pool: Pool, who: Operator, order_id: OrderId, body: OrderChange) -> Order:
    """Schedule, finish, re-prioritise or re-assign; audited with before and after."""
    with pool.connection() as conn:
        return update_order(conn, who, order_id, body)


@router.get("/orders/{order_id}/history", response_model=list[audit.AuditEntry],
            summary="An order's audit trail", responses=DENIED)
def get_order_history(pool: Pool, _: Viewer, order_id: OrderId) -> list[audit.AuditEntry]:
    """Every change of the order, oldest first."""
    with pool.connection() as conn:
        return audit.entries(conn, entity="order", entity_id=str(order_id))


@router.get("/maintenance/{device}", response_model=DeviceMaintenance,
            summary="A device's maintenance history", responses=DENIED)
def get_device_history(
    pool: Pool, _: Viewer, device: DevicePath,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> DeviceMaintenance:
    """The device's orders (newest first) and its audited events (oldest first)."""
    with pool.connection() as conn:
        return DeviceMaintenance(
            device=device,
            orders=list_orders(conn, device=device, limit=limit),
            events=audit.entries(conn, device=device, limit=limit),
        )
