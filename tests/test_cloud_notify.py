"""Notifications (acceptance 4): email to a real SMTP server, signed webhooks to a real HTTP
receiver, a receiver that is down retried with backoff, every attempt logged."""

from __future__ import annotations

import json

import psycopg

from cloud.background.notify import verify_signature
from devstack.ports import free_port
from shared.schemas import SyncBatch
from tests.fixtures.cloud import running_biz
from tests.fixtures.factories import SYNC, T0, make_alert, upload
from tests.fixtures.receivers import SECRET, Inbox, receiver, signature_ok
from tests.fixtures.waiting import wait_until


def jobs_by_kind(dsn: str) -> dict[str, list[tuple[str, int]]]:
    """kind -> [(status, attempts)] of every job."""
    out: dict[str, list[tuple[str, int]]] = {}
    with psycopg.connect(dsn) as conn:
        for kind, status, attempts in conn.execute(
            "SELECT kind, status, attempts FROM jobs ORDER BY job_id"
        ):
            out.setdefault(kind, []).append((status, attempts))
    return out


def test_email_and_signed_webhook_on_a_new_high_alert(
    pg_dsn: str, smtp: tuple[int, Inbox]
) -> None:
    port, inbox = smtp
    with receiver() as hook, running_biz(
        pg_dsn, jobs={"worker_enabled": True, "worker_poll_s": 0.05},
        notify={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_from": "cloud@plant.example",
                "smtp_to": ["ops@plant.example"], "webhook_urls": [hook.url],
                "webhook_secret": SECRET}) as biz:
        # Through the real sync endpoint: the trigger on `alerts` queues the notification.
        batch = SyncBatch(gateway="gw-1", batch_seq=1, created_ms=T0, alerts=[
            make_alert("aaaa0001"), make_alert("aaaa0002", severity="medium")])
        r = biz.client.post(SYNC, content=batch.model_dump_json().encode(), headers={
            "Authorization": f"Bearer {biz.gateway_tokens['gw-1']}",
            "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        wait_until(lambda: len(inbox.messages) == 1 and len(hook.requests) == 1, 30,
                   "one email and one webhook")
        wait_until(lambda: len(biz.get("viewer", "/api/v1/notifications").json()) == 2, 30,
                   "two logged deliveries")
        deliveries = biz.get("viewer", "/api/v1/notifications").json()
    msg = inbox.messages[0]
    assert inbox.recipients == [["ops@plant.example"]]
    assert msg["Subject"] == "[smaint] HIGH alert on dev-1"
    assert msg["From"] == "cloud@plant.example"
    text = msg.get_content()
    assert "Score: 0.930" in text
    assert "current_a +0.700" in text
    headers, body = hook.requests[0]
    assert signature_ok(headers, body)
    assert verify_signature(SECRET.encode(), headers["X-Smaint-Timestamp"], body,
                            headers["X-Smaint-Signature"])
    assert not verify_signature(b"wrong", headers["X-Smaint-Timestamp"], body,
                                headers["X-Smaint-Signature"])
    assert not verify_signature(SECRET.encode(), headers["X-Smaint-Timestamp"], body + b" ",
                                headers["X-Smaint-Signature"])
    doc = json.loads(body)
    assert doc["event"] == "alert.high"
    assert doc["delivery"] == int(headers["X-Smaint-Delivery"])
    assert (doc["alert"]["alert_id"], doc["alert"]["device"]) == ("aaaa0001", "dev-1")
    assert sorted((d["channel"], d["ok"], d["attempt"]) for d in deliveries) == [
        ("email", True, 1), ("webhook", True, 1)]
    # The medium alert queued nothing.
    assert jobs_by_kind(pg_dsn) == {
        "notify_alert": [("done", 1)], "email": [("done", 1)], "webhook": [("done", 1)]}


def test_receivers_down_are_retried_and_every_attempt_logged(pg_dsn: str) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    with receiver(plan=[503, 500]) as flaky, running_biz(
        pg_dsn,
        jobs={"worker_enabled": True, "worker_poll_s": 0.05, "backoff_s": 0.05, "max_attempts": 3},
        notify={"webhook_urls": [nobody, flaky.url], "webhook_secret": SECRET}) as biz:
        upload(pg_dsn, [make_alert("aaaa0001")])
        wait_until(lambda: sorted(s for s, _ in jobs_by_kind(pg_dsn).get("webhook", [])) == [
            "done", "failed"], 30, "one webhook job done, the other failed")
        failures = biz.get("viewer", "/api/v1/notifications", ok="false",
                           alert_id="aaaa0001").json()
        everything = biz.get("viewer", "/api/v1/notifications").json()
        jobs = {j["kind"] + ":" + j["status"]: j for j in biz.get("admin", "/api/v1/jobs").json()}
        metrics = biz.client.get("/metrics").text
    # The shared queue's state is on /metrics for alerting on stuck or failing deliveries.
    assert 'smaint_cloud_jobs{kind="webhook",status="failed"} 1.0' in metrics
    assert 'smaint_cloud_jobs{kind="webhook",status="done"} 1.0' in metrics
    assert 'smaint_cloud_notification_deliveries{channel="webhook",ok="false"} 5.0' in metrics
    assert 'smaint_cloud_notification_deliveries{channel="webhook",ok="true"} 1.0' in metrics
    down = sorted((d for d in everything if d["target"] == nobody), key=lambda d: d["attempt"])
    assert [(d["attempt"], d["ok"]) for d in down] == [(1, False), (2, False), (3, False)]
    assert all("ConnectError" in d["detail"] for d in down)
    up = sorted((d for d in everything if d["target"] == flaky.url), key=lambda d: d["attempt"])
    assert [(d["attempt"], d["ok"], d["detail"]) for d in up] == [
        (1, False, "HTTP 503"), (2, False, "HTTP 500"), (3, True, "delivered")]
    assert len(failures) == 5
    assert jobs["webhook:failed"]["attempts"] == 3
    assert "ConnectError" in jobs["webhook:failed"]["last_error"]
    # The receiver saw three signed attempts of one delivery, as receivers dedupe them.
    assert len(flaky.requests) == 3
    assert len({h["X-Smaint-Delivery"] for h, _ in flaky.requests}) == 1
    assert all(signature_ok(h, b) for h, b in flaky.requests)
