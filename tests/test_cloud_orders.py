"""Maintenance orders: raised from alerts, open → scheduled → done only, audited, per device."""

from __future__ import annotations

import pytest

from tests.fixtures.cloud import Biz
from tests.fixtures.factories import make_alert, upload


@pytest.fixture
def biz(biz: Biz) -> Biz:
    """The shared ``biz`` app, and two alerts of dev-1 and one of dev-2."""
    upload(biz.dsn, [make_alert("aaaa0001"), make_alert("aaaa0002"),
                    make_alert("bbbb0001", device="dev-2")])
    return biz


ORDER = {"title": "Replace bearing", "priority": "high", "due_date": "2024-01-15",
         "assignee": "team-a"}


def test_order_workflow(biz: Biz) -> None:
    path = "/api/v1/alerts/gw-1/aaaa0001/orders"
    assert biz.send("POST", "viewer", path, ORDER).status_code == 403
    assert biz.send("POST", "operator", "/api/v1/alerts/gw-1/ffff0000/orders",
                    ORDER).status_code == 404
    assert biz.send("POST", "operator", path, {**ORDER, "priority": "asap"}).status_code == 422
    created = biz.send("POST", "operator", path, ORDER)
    assert created.status_code == 201, created.text
    order = created.json()
    assert (order["status"], order["device"], order["created_by"]) == ("open", "dev-1", "operator")
    url = f"/api/v1/orders/{order['order_id']}"
    # Skipping a step, going back and leaving done are all refused with 409.
    skip = biz.send("PATCH", "operator", url, {"status": "done"})
    assert skip.status_code == 409
    assert "'open'" in skip.json()["detail"]
    assert biz.send("PATCH", "viewer", url, {"status": "scheduled"}).status_code == 403
    scheduled = biz.send("PATCH", "operator", url, {"status": "scheduled", "assignee": "team-b"})
    assert (scheduled.json()["status"], scheduled.json()["assignee"]) == ("scheduled", "team-b")
    assert biz.send("PATCH", "operator", url, {"status": "open"}).status_code == 409
    same = biz.send("PATCH", "operator", url, {"status": "scheduled"})
    assert same.status_code == 200  # no change is no transition
    assert biz.send("PATCH", "operator", url, {"status": "done"}).json()["status"] == "done"
    for wanted in ("open", "scheduled"):
        assert biz.send("PATCH", "operator", url, {"status": wanted}).status_code == 409
    assert biz.send("PATCH", "operator", "/api/v1/orders/999", {}).status_code == 404
    assert biz.send("PATCH", "operator", url, {"colour": "red"}).status_code == 422
    history = biz.get("viewer", f"{url}/history").json()
    assert [(e["action"], (e["before"] or {}).get("status"), e["after"]["status"])
            for e in history] == [
        ("order.create", None, "open"),
        ("order.update", "open", "scheduled"),
        ("order.update", "scheduled", "done"),
    ]
    assert history[0]["after"]["alert"] == "gw-1/aaaa0001"
    assert history[1]["before"]["assignee"] == "team-a"
    assert history[1]["after"]["assignee"] == "team-b"


def test_history_per_device(biz: Biz) -> None:
    for alert_id in ("aaaa0001", "aaaa0002", "bbbb0001"):
        r = biz.send("POST", "operator", f"/api/v1/alerts/gw-1/{alert_id}/orders",
                     {"title": f"check {alert_id}"})
        assert r.status_code == 201
    first = biz.get("viewer", "/api/v1/orders", device="dev-1").json()
    assert [o["alert_id"] for o in first] == ["aaaa0002", "aaaa0001"]  # newest first
    assert first[0]["priority"] == "medium"
    biz.send("PATCH", "operator", f"/api/v1/orders/{first[0]['order_id']}",
             {"status": "scheduled"})
    assert [o["alert_id"] for o in biz.get("viewer", "/api/v1/orders", status="open").json()] == [
        "bbbb0001", "aaaa0001"]
    biz.send("POST", "operator", "/api/v1/alerts/gw-1/aaaa0001/acknowledge", {})
    history = biz.get("viewer", "/api/v1/maintenance/dev-1").json()
    assert [o["alert_id"] for o in history["orders"]] == ["aaaa0002", "aaaa0001"]
    assert [e["action"] for e in history["events"]] == [
        "order.create", "order.create", "order.update", "alert.acknowledge"]
    assert biz.get("viewer", "/api/v1/maintenance/dev-9").json() == {
        "device": "dev-9", "orders": [], "events": []}
