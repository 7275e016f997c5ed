"""Alert reviews both ways: gateway acknowledgements up, cloud decisions down (issue 12).

Cloud side: the real ingest path (cloud.ingest.batch.apply_batch) on a real PostgreSQL and the
real alerts API. Gateway side: a real Gateway (database, pipeline, tracker, outbox) fed through
its pipeline, with sync answers handed to it as its uploader hands them.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cloud.ingest.batch import apply_batch
from cloud.operations.alert_sync import queue_decision
from edge.alert_lifecycle import AlertChange, AlertResolvedError
from edge.http import build_app
from edge.score import Score
from edge.service import Gateway
from edge.store import now_ms
from shared.schemas import (
    Alert,
    AlertAck,
    AlertDecision,
    DesiredState,
    GatewayState,
    SyncAck,
    SyncBatch,
)
from tests.fixtures.cloud import Biz
from tests.fixtures.factories import T0, make_alert
from tests.fixtures.panel import (
    PATIENT,
    acknowledge_on_alerts_page,
    feed,
    gateway,
    panel,
    panel_user,
    sign_in,
)
from tests.fixtures.waiting import wait_until

_seq = itertools.count(10_000)  # apart from the factories' batch numbers
AUDIT = "/api/v1/alerts/gw-1/{}/audit"


def send(dsn: str, alerts: Sequence[Alert] = (), *, applied: int | None = None,
         gateway_id: str = "gw-1", batch_seq: int | None = None) -> SyncAck:
    """One batch through the real ingest path; ``applied``: the decision number reported."""
    batch = SyncBatch(
        gateway=gateway_id, batch_seq=batch_seq or next(_seq), created_ms=T0,
        alerts=list(alerts),
        state=None if applied is None else GatewayState(alert_decision=applied))
    with psycopg.connect(dsn) as conn:
        return apply_batch(conn, batch, gateway_id)


def acked(alert_id: str, comment: str, *, by: str = "panel", at_ms: int = T0 + 5_000) -> Alert:
    """``alert_id`` as its gateway uploads it once acknowledged there."""
    return make_alert(alert_id).model_copy(update={
        "state": "acknowledged", "updated_ms": at_ms,
        "ack": AlertAck(by=by, at_ms=at_ms, comment=comment)})


def gateway_acks(trail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The audit entries a gateway acknowledgement wrote."""
    return [e for e in trail if e["action"] == "alert.gateway_ack"]


# -- up: an acknowledgement made on the gateway ----------------------------------------------


def test_a_gateway_ack_acknowledges_the_review_once_however_often_it_arrives(biz: Biz) -> None:
    send(biz.dsn, [make_alert("aaaa0001")])
    version = acked("aaaa0001", "vibration checked on site", by="Ana")
    seq = next(_seq)
    first = send(biz.dsn, [version], applied=0, batch_seq=seq)
    retried = send(biz.dsn, [version], applied=0, batch_seq=seq)  # the ack was lost: re-sent
    assert (first.first_time, retried.first_time) == (True, False)
    # A later version (escalated, say) carries the same ack again in a new batch.
    later = version.model_copy(update={"score": 2.5, "updated_ms": T0 + 9_000})
    send(biz.dsn, [later], applied=0)
    view = biz.get("viewer", "/api/v1/alerts/gw-1/aaaa0001").json()
    assert (view["state"], view["gateway_state"]) == ("acknowledged", "acknowledged")
    assert view["acknowledged_by"] == "Ana on gateway gw-1"
    assert view["comment"] == "vibration checked on site"
    assert view["acknowledged_at"].startswith("2023-11-14T22:13:25")  # when Ana acknowledged
    (entry,) = gateway_acks(biz.get("viewer", AUDIT.format("aaaa0001")).json())
    assert entry["actor"] == "Ana@gw-1"
    assert entry["after"]["summary"] == (
        "acknowledged on gateway gw-1 by Ana: vibration checked on site")
    assert (entry["before"]["state"], entry["after"]["state"]) == ("open", "acknowledged")
    # A decision that came from the gateway is not sent back down to it.
    assert first.desired is not None
    assert first.desired.alert_decisions == []


def test_a_cloud_resolve_is_not_undone_by_a_later_gateway_ack(biz: Biz) -> None:
    """Precedence: the review only moves forward; the condition is last writer wins."""
    send(biz.dsn, [make_alert("aaaa0002")])
    resolved = biz.send("POST", "operator", "/api/v1/alerts/gw-1/aaaa0002/resolve",
                        {"decision": "false_positive", "comment": "sensor cable loose"})
    assert resolved.status_code == 200, resolved.text
    # The gateway acknowledged before it heard of the resolve; its batch arrives after it.
    send(biz.dsn, [acked("aaaa0002", "looking at it")], applied=0)
    view = biz.get("viewer", "/api/v1/alerts/gw-1/aaaa0002").json()
    assert (view["state"], view["decision"], view["comment"]) == (
        "resolved", "false_positive", "sensor cable loose")
    assert view["gateway_state"] == "acknowledged"  # its condition, as the gateway reports
    (entry,) = gateway_acks(biz.get("viewer", AUDIT.format("aaaa0002")).json())
    assert entry["after"]["summary"] == ("acknowledged on gateway gw-1 by panel: looking at it"
                                         " (review already resolved in the cloud; left so)")
    assert entry["before"] == {k: v for k, v in entry["after"].items() if k != "summary"}
    # The gateway applies the resolve (a newer version); a re-upload of the older ack
    # version then loses on updated_ms.
    done = acked("aaaa0002", "looking at it").model_copy(update={
        "state": "resolved", "resolved_ms": T0 + 20_000, "updated_ms": T0 + 20_000})
    send(biz.dsn, [done], applied=1)
    send(biz.dsn, [acked("aaaa0002", "looking at it")], applied=1)
    view = biz.get("viewer", "/api/v1/alerts/gw-1/aaaa0002").json()
    assert (view["state"], view["gateway_state"]) == ("resolved", "resolved")
    assert len(gateway_acks(biz.get("viewer", AUDIT.format("aaaa0002")).json())) == 1


# -- down: decisions taken in the cloud ------------------------------------------------------


def test_cloud_decisions_ride_the_sync_answers_until_the_gateway_reports_them(
        biz: Biz) -> None:
    send(biz.dsn, [make_alert("aaaa0003"), make_alert("aaaa0004")])
    send(biz.dsn, [make_alert("cccc0001")], gateway_id="gw-2")
    base = "/api/v1/alerts"
    biz.send("POST", "operator", f"{base}/gw-1/aaaa0003/acknowledge", {"comment": "on it"})
    biz.send("POST", "admin", f"{base}/gw-1/aaaa0004/resolve",
             {"decision": "confirmed_failure", "comment": "bearing worn"})
    biz.send("POST", "operator", f"{base}/gw-2/cccc0001/resolve", {"decision": "false_positive"})

    seq = next(_seq)
    answer = send(biz.dsn, applied=0, batch_seq=seq).desired
    assert answer is not None
    one, two = answer.alert_decisions
    assert (one.id, one.alert_id, one.action, one.by, one.decision, one.comment) == (
        1, "aaaa0003", "acknowledge", "operator", None, "on it")
    assert (two.id, two.alert_id, two.action, two.by, two.decision, two.comment) == (
        2, "aaaa0004", "resolve", "admin", "confirmed_failure", "bearing worn")
    # The answer was lost: the retried batch gets them again (nothing lost).
    again = send(biz.dsn, applied=0, batch_seq=seq).desired
    assert again is not None
    assert again.alert_decisions == answer.alert_decisions
    # The gateway applied the first: only the second comes again.
    later = send(biz.dsn, applied=1).desired
    assert later is not None
    assert [d.id for d in later.alert_decisions] == [2]
    # Numbered per gateway: gw-2's first decision is its 1.
    other = send(biz.dsn, applied=0, gateway_id="gw-2").desired
    assert other is not None
    assert [(d.id, d.alert_id) for d in other.alert_decisions] == [(1, "cccc0001")]
    # A batch without the gateway's state has no number to go on: nothing is sent.
    bare = send(biz.dsn).desired
    assert bare is not None
    assert bare.alert_decisions == []
    with psycopg.connect(biz.dsn) as conn:
        confirmed = conn.execute(
            "SELECT decision_id, confirmed_at IS NOT NULL FROM alert_decisions"
            " WHERE gateway_id = 'gw-1' ORDER BY decision_id").fetchall()
    assert confirmed == [(1, True), (2, False)]


def test_decision_numbers_become_visible_in_order(biz: Biz) -> None:
    """A sync never sees number 2 while number 1 may still commit: it would skip it."""
    send(biz.dsn, [make_alert("aaaa0005"), make_alert("aaaa0006")])
    with (psycopg.connect(biz.dsn) as first,
          psycopg.connect(biz.dsn, autocommit=True) as watcher):  # fresh stats per query
        queue_decision(first, "gw-1", "aaaa0005", action="acknowledge", actor="alice")
        # (first's transaction is open: number 1 taken, not committed)

        def second() -> None:
            with psycopg.connect(biz.dsn) as conn:
                queue_decision(conn, "gw-1", "aaaa0006", action="acknowledge", actor="bob")

        later = threading.Thread(target=second)
        later.start()
        try:
            wait_until(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE %s", ("%pg_advisory_xact_lock%",)).fetchone() == (1,),
                30, "the second decision to wait for the first")
            none_yet = send(biz.dsn, applied=0).desired
            assert none_yet is not None
            assert none_yet.alert_decisions == []
        finally:
            first.commit()
            later.join()
    answer = send(biz.dsn, applied=0).desired
    assert answer is not None
    assert [(d.id, d.alert_id, d.by) for d in answer.alert_decisions] == [
        (1, "aaaa0005", "alice"), (2, "aaaa0006", "bob")]


@given(action=st.sampled_from(["acknowledge", "resolve"]),
       decision=st.sampled_from([None, "confirmed_failure", "false_positive",
                                 "needs_inspection"]),
       comment=st.text(max_size=40))
def test_an_alert_decision_is_valid_only_when_its_parts_agree(
        action: str, decision: str | None, comment: str) -> None:
    fields = {"id": 1, "alert_id": "aaaa0001", "action": action, "by": "alice", "at_ms": T0,
              "decision": decision, "comment": comment}
    agrees = (action == "resolve") == (decision is not None) and "\x00" not in comment
    if agrees:
        assert AlertDecision.model_validate(fields).comment == comment
    else:
        with pytest.raises(ValidationError):
            AlertDecision.model_validate(fields)


def test_wire_acks_refuse_what_the_cloud_cannot_store() -> None:
    with pytest.raises(ValidationError):
        AlertAck(by="", at_ms=T0)  # who acknowledged must be said
    with pytest.raises(ValidationError):
        AlertAck(by="x" * 65, at_ms=T0)
    with pytest.raises(ValidationError):
        AlertAck(by="panel", at_ms=T0, comment="a" * 2001)
    with pytest.raises(ValidationError):
        AlertAck(by="pa\x00nel", at_ms=T0)


# -- the gateway applying them ---------------------------------------------------------------


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = gateway(tmp_path, "gw-1", alerts={"open_after": 2, "resolve_after": 5,
                                          "publish": False})
    try:
        yield g
    finally:
        g.store.close()


def decided(*decisions: dict[str, object]) -> DesiredState:
    """A sync answer's desired state carrying these decisions."""
    return DesiredState(alert_decisions=[
        AlertDecision.model_validate({"by": "alice", "at_ms": T0, **d}) for d in decisions])


def test_the_gateway_acknowledgement_goes_up_with_the_alert(gw: Gateway) -> None:
    feed(gw, "motor-1", 40, spike_at=36)
    (alert,) = gw.store.open_alerts()
    gw.ack_alert(alert.alert_id, by="Ana", comment="  grease added \x00 ")
    info = gw.outbox.record(1000, T0)
    assert info is not None
    (sent,) = gw.outbox.load(info, "gw-1").alerts
    assert sent.state == "acknowledged"
    assert sent.ack is not None
    assert (sent.ack.by, sent.ack.comment) == ("Ana", "grease added")
    # Escalations and the tracker's own resolve build on the acknowledged version: it stays.
    tracked = gw.alerts.find(alert.alert_id)
    assert tracked is not None
    assert tracked.ack == sent.ack
    assert gw.store.open_alerts()[0].ack == sent.ack  # and after a restart (loaded from here)


def test_cloud_decisions_are_applied_once_and_survive_a_restart(tmp_path: Path) -> None:
    gw = gateway(tmp_path, "gw-1")
    try:
        feed(gw, "motor-1", 40, spike_at=36)
        (alert,) = gw.store.open_alerts()
        answer = decided(
            {"id": 1, "alert_id": alert.alert_id, "action": "acknowledge", "comment": "on it"},
            {"id": 2, "alert_id": alert.alert_id, "action": "resolve",
             "decision": "false_positive", "comment": "sensor cable loose", "at_ms": T0 + 1},
            {"id": 3, "alert_id": "0123abcd-0def", "action": "acknowledge"})
        info = gw.outbox.record(1000, T0)
        assert info is not None
        gw.outbox.mark_acked(info, T0, answer)  # the answer is stored with the ack ...
        gw.on_desired(answer)  # ... and handed on, as the uploader does
        stored = gw.store.alert(alert.alert_id)
        assert stored is not None
        assert (stored.state, stored.resolved_ms) == ("resolved", max(T0 + 1, alert.opened_ms))
        assert gw.alerts.find(alert.alert_id) is None  # the tracker let go of it
        kept = gw.decisions.kept([alert.alert_id, "0123abcd-0def"])
        assert [(d.id, d.action, d.outcome) for d in kept[alert.alert_id]] == [
            (1, "acknowledge", "applied"), (2, "resolve", "applied")]
        assert (kept[alert.alert_id][1].decision, kept[alert.alert_id][1].comment) == (
            "false_positive", "sensor cable loose")
        assert [d.outcome for d in kept["0123abcd-0def"]] == ["unknown_alert"]
        assert gw.actual_state().alert_decision == 3  # reported with the next upload
        # The resolved version goes up with the next batch.
        nxt = gw.outbox.record(1000, T0 + 1)
        assert nxt is not None
        assert [a.state for a in gw.outbox.load(nxt, "gw-1").alerts] == ["resolved"]
        # The same answer again (a retried batch's) changes nothing.
        assert gw.decisions.on_desired(answer) == []
        assert gw.store.alert(alert.alert_id) == stored
    finally:
        gw.store.close()
    # A restart replays the stored answer: still nothing doubled.
    again = gateway(tmp_path, "gw-1")
    try:
        assert again.store.alert(alert.alert_id) == stored
        assert again.store.count("alert_decisions") == 3
        assert again.decisions.applied() == 3
        assert again.store.count("alerts", "dirty = 1") == 0  # no new version made
    finally:
        again.store.close()


def test_a_cloud_resolve_holds_the_device_until_it_is_normal_again(gw: Gateway) -> None:
    feed(gw, "motor-1", 40, spike_at=36, ago_ms=60_000)
    (alert,) = gw.store.open_alerts()
    gw.on_desired(decided({"id": 1, "alert_id": alert.alert_id, "action": "resolve",
                           "decision": "needs_inspection"}))
    assert gw.alerts.find(alert.alert_id) is None
    t = now_ms()
    bad = Score(value=50.0, anomalous=True, scorer="stat")
    good = Score(value=0.1, anomalous=False, scorer="stat")

    def observe(score: Score) -> AlertChange | None:
        nonlocal t
        t += 1000
        return gw.alerts.observe("motor-1", t, score, t)

    # Still anomalous: the episode the operator resolved; not reopened, no new alert.
    assert [observe(bad) for _ in range(5)] == [None] * 5
    # Four normal readings are not yet the resolve_after (5) that re-arms the device.
    assert [observe(s) for s in [good] * 4 + [bad] * 2] == [None] * 6
    assert [observe(good) for _ in range(5)] == [None] * 5
    assert observe(bad) is None  # open_after is 2
    change = observe(bad)
    assert change is not None
    assert change.kind == "opened"
    assert change.alert.alert_id != alert.alert_id
    resolved = gw.store.alert(alert.alert_id)
    assert resolved is not None
    assert resolved.state == "resolved"
    with pytest.raises(AlertResolvedError):
        gw.ack_alert(alert.alert_id)  # a resolved alert is not acknowledged any more


def test_an_older_alert_version_never_overwrites_a_newer_one(gw: Gateway) -> None:
    feed(gw, "motor-1", 40, spike_at=36)
    (alert,) = gw.store.open_alerts()
    newer = alert.model_copy(update={"state": "resolved", "resolved_ms": alert.opened_ms,
                                     "updated_ms": alert.updated_ms + 10})
    with gw.store.transaction():
        gw.store.upsert_alerts([newer])
    with gw.store.transaction():
        gw.store.upsert_alerts([alert])  # e.g. an escalation built before a decision landed
    assert gw.store.alert(alert.alert_id) == newer


def test_decisions_the_database_refused_come_again(gw: Gateway, tmp_path: Path) -> None:
    feed(gw, "motor-1", 40, spike_at=36)
    (alert,) = gw.store.open_alerts()
    answer = decided({"id": 1, "alert_id": alert.alert_id, "action": "acknowledge"})
    gw.store.conn.execute("PRAGMA busy_timeout=0")  # fail at once rather than after 5 s
    blocker = sqlite3.connect(tmp_path / "gw.db")
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        assert gw.decisions.on_desired(answer) == []
    finally:
        blocker.rollback()
        blocker.close()
    assert gw.decisions.applied() == 0  # so the next upload asks for it again
    stored = gw.store.alert(alert.alert_id)
    assert stored is not None
    assert stored.state == "open"
    (acked,) = gw.decisions.on_desired(answer)
    assert acked.state == "acknowledged"
    assert gw.decisions.applied() == 1


async def test_the_http_ack_says_who_and_why_and_refuses_bad_bodies(gw: Gateway) -> None:
    feed(gw, "motor-1", 40, spike_at=36)
    (alert,) = gw.store.open_alerts()
    app = build_app(gw.status, gw.metrics, gw.healthy, gw.ack_alert, api_token="t0ken")
    url = f"/api/alerts/{alert.alert_id}/ack"
    headers = {"Authorization": "Bearer t0ken"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), headers=headers,
                                 base_url="http://gw") as api:
        for bad in ('{"by": ""}', '{"comment": "' + "a" * 2001 + '"}', '{"who": "x"}',
                    "not json", '{"by": "a\\u0000b"}'):
            assert (await api.post(url, content=bad, headers={
                "Content-Type": "application/json"})).status_code == 422, bad
        assert gw.store.alert(alert.alert_id) == alert  # nothing changed by those
        resp = await api.post(url, json={"by": "scada", "comment": "seen from the control room"})
    assert resp.status_code == 200, resp.text
    ack = Alert.model_validate(resp.json()).ack
    assert ack is not None
    assert (ack.by, ack.comment) == ("scada", "seen from the control room")
    stored = gw.store.alert(alert.alert_id)
    assert stored is not None
    assert stored.ack == ack


async def test_the_panel_shows_the_acknowledgement_and_follows_cloud_decisions(
        gw: Gateway) -> None:
    feed(gw, "motor-1", 40, spike_at=36)
    (alert,) = gw.store.open_alerts()
    async with panel_user(panel(gw)) as user:
        await sign_in(user)
        await user.open("/alerts")
        acknowledge_on_alerts_page(user, "grease added", "Ana")
        await user.should_see("acknowledged on this gateway by Ana")
        await user.should_see("Ana: grease added")
        # The cloud acknowledged it too, before it heard of Ana's: no new version here, yet
        # the open page shows the decision.
        gw.on_desired(decided({"id": 1, "alert_id": alert.alert_id, "action": "acknowledge",
                               "by": "bob", "comment": "seen"}))
        await user.should_see("from cloud: acknowledged by bob: seen (the alert was "
                              "acknowledged here already)", retries=PATIENT)
        gw.on_desired(decided({"id": 2, "alert_id": alert.alert_id, "action": "resolve",
                               "decision": "confirmed_failure", "comment": "bearing replaced"}))
        await user.should_see("from cloud: resolved by alice as confirmed failure: bearing "
                              "replaced", retries=PATIENT)
        await user.should_see("0 open, 1 shown (open first)")
        await user.should_not_see(marker="ack-button")
