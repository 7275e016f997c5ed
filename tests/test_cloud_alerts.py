"""The alerts API: filters, pages, acknowledge, resolve with a decision, audit, CSV export."""

from __future__ import annotations

import csv
import io

import psycopg
import pytest

from tests.fixtures.cloud import Biz
from tests.fixtures.factories import T0, make_alert, upload

HOUR_MS = 3_600_000


@pytest.fixture
def biz(biz: Biz) -> Biz:
    """The shared ``biz`` app and two gateways; alerts on dev-1 (3) and dev-2 (2) uploaded."""
    upload(biz.dsn, [
        make_alert("aaaa0001", opened_ms=T0),
        make_alert("aaaa0002", opened_ms=T0 + HOUR_MS, severity="low"),
        make_alert("aaaa0003", opened_ms=T0 + 2 * HOUR_MS, severity="medium"),
        make_alert("bbbb0001", device="dev-2", opened_ms=T0 + 3 * HOUR_MS),
    ])
    upload(biz.dsn, [make_alert("cccc0001", device="dev-2", opened_ms=T0)], gateway="gw-2")
    return biz


def ids(page: dict[str, list[dict[str, str]]]) -> list[str]:
    """Alert ids of a page, in order."""
    return [a["alert_id"] for a in page["alerts"]]


def test_list_filter_and_page(biz: Biz) -> None:
    everything = biz.get("viewer", "/api/v1/alerts").json()
    assert ids(everything) == ["bbbb0001", "aaaa0003", "aaaa0002", "cccc0001", "aaaa0001"]
    assert everything["next"] is None
    assert ids(biz.get("viewer", "/api/v1/alerts", device="dev-2").json()) == [
        "bbbb0001", "cccc0001"]
    assert ids(biz.get("viewer", "/api/v1/alerts", severity="low").json()) == ["aaaa0002"]
    window = biz.get("viewer", "/api/v1/alerts", since="2023-11-14T23:13:20Z",
                     until="2023-11-15T01:13:20").json()  # T0 + 1 h to T0 + 3 h, no zone = UTC
    assert ids(window) == ["aaaa0003", "aaaa0002"]
    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": 2} if after is None else {"limit": 2, "after": after}
        page = biz.get("viewer", "/api/v1/alerts", **params).json()
        seen += ids(page)
        after = page["next"]
        if after is None:
            break
    assert seen == ids(everything)
    assert biz.get("viewer", "/api/v1/alerts", after="garbage!").status_code == 400
    assert biz.get("viewer", "/api/v1/alerts", state="closed").status_code == 422
    one = biz.get("viewer", "/api/v1/alerts/gw-2/cccc0001").json()
    assert (one["gateway"], one["device"], one["state"], one["gateway_state"]) == (
        "gw-2", "dev-2", "open", "open")
    assert one["explanation"] == {"current_a": 0.7, "temperature_c": -0.2}
    assert biz.get("viewer", "/api/v1/alerts/gw-2/aaaa0001").status_code == 404


def test_review_workflow_is_audited(biz: Biz) -> None:
    base = "/api/v1/alerts/gw-1/aaaa0001"
    acked = biz.send("POST", "operator", f"{base}/acknowledge", {"comment": "on it"})
    assert acked.status_code == 200, acked.text
    assert (acked.json()["state"], acked.json()["acknowledged_by"]) == ("acknowledged", "operator")
    assert biz.send("POST", "operator", f"{base}/acknowledge", {}).status_code == 409
    assert ids(biz.get("viewer", "/api/v1/alerts", state="acknowledged").json()) == ["aaaa0001"]
    bad = biz.send("POST", "operator", f"{base}/resolve", {"decision": "maybe"})
    assert bad.status_code == 422
    resolved = biz.send("POST", "admin", f"{base}/resolve",
                        {"decision": "confirmed_failure", "comment": "bearing worn"}).json()
    assert (resolved["state"], resolved["resolved_by"], resolved["decision"]) == (
        "resolved", "admin", "confirmed_failure")
    assert resolved["acknowledged_by"] == "operator"  # the history stays on the record
    again = biz.send("POST", "operator", f"{base}/resolve", {"decision": "false_positive"})
    assert again.status_code == 409
    assert "resolved" in again.json()["detail"]
    # Straight from open to resolved is allowed too.
    direct = biz.send("POST", "operator", "/api/v1/alerts/gw-1/aaaa0002/resolve",
                      {"decision": "false_positive"})
    assert direct.json()["state"] == "resolved"
    missing = biz.send("POST", "operator", "/api/v1/alerts/gw-1/ffff0000/acknowledge", {})
    assert missing.status_code == 404
    trail = biz.get("viewer", f"{base}/audit").json()
    assert [(e["actor"], e["action"]) for e in trail] == [
        ("operator", "alert.acknowledge"), ("admin", "alert.resolve")]
    assert trail[0]["before"]["state"] == "open"
    assert trail[0]["after"]["state"] == "acknowledged"
    assert trail[1]["after"] == {
        "state": "resolved", "acknowledged_by": "operator", "resolved_by": "admin",
        "decision": "confirmed_failure", "comment": "bearing worn",
    }
    assert all(e["device"] == "dev-1" and len(e["correlation_id"]) == 32 for e in trail)


def test_audit_log_is_append_only_in_the_database(biz: Biz) -> None:
    biz.send("POST", "operator", "/api/v1/alerts/gw-1/aaaa0001/acknowledge", {})
    with psycopg.connect(biz.dsn, autocommit=True) as conn:
        for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log",
                          "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
        row = conn.execute("SELECT count(*), min(actor) FROM audit_log"
                           " WHERE entity = 'alert'").fetchone()
    assert row == (1, "operator")


def test_gateway_updates_keep_the_review(biz: Biz) -> None:
    biz.send("POST", "operator", "/api/v1/alerts/gw-1/aaaa0001/acknowledge", {})
    cleared = make_alert("aaaa0001", opened_ms=T0).model_copy(
        update={"state": "resolved", "resolved_ms": T0 + 60_000, "updated_ms": T0 + 60_000})
    upload(biz.dsn, [cleared])
    view = biz.get("viewer", "/api/v1/alerts/gw-1/aaaa0001").json()
    assert (view["gateway_state"], view["state"]) == ("resolved", "acknowledged")
    assert view["cleared_at"] is not None


def test_decisions_csv(biz: Biz) -> None:
    for alert_id, decision, comment in (
        ("aaaa0001", "confirmed_failure", "replaced, see WO-7"),
        ("bbbb0001", "needs_inspection", "=HYPERLINK(\"http://evil\")"),
    ):
        r = biz.send("POST", "operator", f"/api/v1/alerts/gw-1/{alert_id}/resolve",
                     {"decision": decision, "comment": comment})
        assert r.status_code == 200, r.text
    r = biz.get("viewer", "/api/v1/alerts/decisions.csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["alert_id"], row["device"], row["decision"], row["resolved_by"])
            for row in rows] == [
        ("aaaa0001", "dev-1", "confirmed_failure", "operator"),
        ("bbbb0001", "dev-2", "needs_inspection", "operator"),
    ]
    assert rows[0]["comment"] == "replaced, see WO-7"
    assert rows[1]["comment"] == "'=HYPERLINK(\"http://evil\")"  # defused for spreadsheets
    assert float(rows[0]["score"]) == pytest.approx(0.93)
    later = biz.get("viewer", "/api/v1/alerts/decisions.csv", since="2999-01-01T00:00:00Z")
    assert later.text.splitlines() == [",".join(next(csv.reader(io.StringIO(r.text))))]
