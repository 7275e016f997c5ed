"""Notifications on new high-severity alerts: SMTP email and HMAC-signed webhooks.

A trigger on ``alerts`` queues one ``notify_alert`` job per new high-severity alert; its handler
fans out one ``email`` job and one ``webhook`` job per configured URL, so each channel is
retried on its own. Every delivery attempt, good or bad, is a row in
``notification_deliveries`` (``GET /api/v1/notifications``).

Verifying a webhook (receivers): the request carries

    X-Smaint-Timestamp: <unix seconds>
    X-Smaint-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>
    X-Smaint-Delivery:  <job id; the same on every retry of one notification, to dedupe>

Recompute the HMAC over the exact bytes received, compare with ``hmac.compare_digest`` and
refuse timestamps more than a few minutes old (replays); ``verify_signature`` does all three.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import time
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from typing import Literal

import httpx
from pydantic import BaseModel

from cloud.background import jobs
from cloud.db.pool import Conn
from cloud.exceptions import DeliveryError, NotFoundError
from cloud.operations.alert_review import AlertView, get_alert
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Smaint-Signature"
TIMESTAMP_HEADER = "X-Smaint-Timestamp"
DELIVERY_HEADER = "X-Smaint-Delivery"
EVENT = "alert.high"
Channel = Literal["email", "webhook"]


class Delivery(BaseModel):
    """One attempt to deliver one notification."""

    delivery_id: int
    job_id: int
    gateway: str
    alert_id: str
    channel: Channel
    target: str
    attempt: int
    at: datetime
    ok: bool
    detail: str
    duration_ms: float
    worker: str


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Smaint-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, signature: str, *, tolerance_s: int = 300,
    now: float | None = None,
) -> bool:
    """Whether a received webhook is authentic and fresh (for receivers and tests)."""
    if not timestamp.isdigit():
        return False
    ts = int(timestamp)
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def fan_out(job: jobs.Job, conn: Conn, settings: CloudSettings) -> None:
    """``notify_alert``: queue one delivery job per configured channel target."""
    gateway, alert_id = job.payload["gateway"], job.payload["alert_id"]
    key = f"{gateway}:{alert_id}"
    with conn.transaction():
        # Dedupe keys make a re-run (lease lost after a crash) queue nothing twice.
        if settings.notify.smtp_host:
            jobs.enqueue(conn, "email", job.payload, dedupe_key=f"email:{key}")
        for url in settings.notify.webhook_urls:
            jobs.enqueue(
                conn, "webhook", {**job.payload, "url": url}, dedupe_key=f"webhook:{key}:{url}"
            )
    log.info("alert %s/%s: queued %d notification(s)", gateway, alert_id,
             bool(settings.notify.smtp_host) + len(settings.notify.webhook_urls))


def _log_attempt(
    conn: Conn, job: jobs.Job, channel: Channel, target: str, *, error: str | None,
    started: float,
) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO notification_deliveries (job_id, gateway_id, alert_id, channel, target,"
            " attempt, ok, detail, duration_ms, worker) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s)",
            (job.job_id, job.payload["gateway"], job.payload["alert_id"], channel, target,
             job.attempt, error is None, error or "delivered",
             (time.perf_counter() - started) * 1000, job.worker),
        )


def _alert(conn: Conn, job: jobs.Job) -> AlertView:
    with conn.transaction():
        return get_alert(conn, job.payload["gateway"], job.payload["alert_id"])


def _email(alert: AlertView, settings: CloudSettings) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[smaint] {alert.severity.upper()} alert on {alert.device}"
    msg["From"] = settings.notify.smtp_from
    msg["To"] = ", ".join(settings.notify.smtp_to)
    top = sorted(alert.explanation.items(), key=lambda kv: -abs(kv[1]))[:5]
    lines = [
        f"Device {alert.device} (gateway {alert.gateway}) raised a {alert.severity} alert.",
        f"Opened: {alert.opened_at.isoformat()}",
        f"Score: {alert.score:.3f} ({alert.scorer}, model {alert.model_version or '-'})",
        "Metrics that drove it: " + (", ".join(f"{k} {v:+.3f}" for k, v in top) or "-"),
        f"Alert: {alert.gateway}/{alert.alert_id}",
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def send_email(job: jobs.Job, conn: Conn, settings: CloudSettings) -> None:
    """``email``: send the alert to ``smtp_to`` through ``smtp_host``; log the attempt."""
    try:
        alert = _alert(conn, job)
    except NotFoundError:
        log.warning("alert %s/%s is gone; no email", job.payload["gateway"],
                    job.payload["alert_id"])
        return
    cfg = settings.notify
    host = cfg.smtp_host or ""
    target = ", ".join(cfg.smtp_to)
    started = time.perf_counter()
    error: str | None = None
    try:
        with smtplib.SMTP(host, cfg.smtp_port, timeout=cfg.timeout_s) as smtp:
            if cfg.smtp_starttls:
                smtp.starttls()
            if cfg.smtp_username and cfg.smtp_password:
                smtp.login(cfg.smtp_username, cfg.smtp_password.get_secret_value())
            refused = smtp.send_message(_email(alert, settings))
        if refused:
            log.warning("alert email refused for %s", sorted(refused))
    except (smtplib.SMTPException, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    _log_attempt(conn, job, "email", target, error=error, started=started)
    if error is not None:
        raise DeliveryError("email", f"{host}:{cfg.smtp_port}", error)
    log.info("alert %s/%s of device %s emailed to %s", alert.gateway, alert.alert_id,
             alert.device, target)


def post_webhook(job: jobs.Job, conn: Conn, settings: CloudSettings) -> None:
    """``webhook``: POST the signed alert to the job's URL; a non-2xx answer is retried."""
    url: str = job.payload["url"]
    try:
        alert = _alert(conn, job)
    except NotFoundError:
        log.warning("alert %s/%s is gone; no webhook", job.payload["gateway"],
                    job.payload["alert_id"])
        return
    body = json.dumps(
        {"event": EVENT, "delivery": job.job_id, "alert": alert.model_dump(mode="json")},
        separators=(",", ":"),
    ).encode()
    secret = settings.notify.webhook_secret
    assert secret is not None  # noqa: S101 - settings refuse URLs without it
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "smaint-cloud",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(secret.get_secret_value().encode(), ts, body),
        DELIVERY_HEADER: str(job.job_id),
    }
    started = time.perf_counter()
    error: str | None = None
    try:
        r = httpx.post(url, content=body, headers=headers, timeout=settings.notify.timeout_s)
        if not r.is_success:
            error = f"HTTP {r.status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    _log_attempt(conn, job, "webhook", url, error=error, started=started)
    if error is not None:
        raise DeliveryError("webhook", url, error)
    log.info("alert %s/%s of device %s posted to %s", alert.gateway, alert.alert_id,
             alert.device, url)


def handlers(settings: CloudSettings) -> dict[str, jobs.Handler]:
    """The job handlers of notifications, bound to ``settings``."""

    def bind(fn: Callable[[jobs.Job, Conn, CloudSettings], None]) -> jobs.Handler:
        return lambda job, conn: fn(job, conn, settings)

    return {"notify_alert": bind(fan_out), "email": bind(send_email),
            "webhook": bind(post_webhook)}


def list_deliveries(
    conn: Conn, *, gateway: str | None = None, alert_id: str | None = None,
    ok: bool | None = None, limit: int = 100,
) -> list[Delivery]:
    """Delivery attempts newest first, filtered by alert and outcome."""
    rows = conn.execute(
        "SELECT delivery_id, job_id, gateway_id, alert_id, channel, target, attempt, at, ok,"
        " detail, duration_ms, worker FROM notification_deliveries"
        " WHERE (%(gw)s::text IS NULL OR gateway_id = %(gw)s)"
        " AND (%(id)s::text IS NULL OR alert_id = %(id)s)"
        " AND (%(ok)s::boolean IS NULL OR ok = %(ok)s)"
        " ORDER BY delivery_id DESC LIMIT %(n)s",
        {"gw": gateway, "id": alert_id, "ok": ok, "n": min(limit, 1000)},
    ).fetchall()
    return [
        Delivery(delivery_id=r[0], job_id=r[1], gateway=r[2], alert_id=r[3], channel=r[4],
                 target=r[5], attempt=r[6], at=r[7], ok=r[8], detail=r[9], duration_ms=r[10],
                 worker=r[11])
        for r in rows
    ]
