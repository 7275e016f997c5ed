"""The gateway side of rollouts in the cloud: desired models, reported progress, promotion.

Run inside the sync batch's transaction (cloud.ingest.batch): a gateway's report updates its
rollout targets and the record of what it runs (since when, why); a rollout whose canaries
all run the version with ``min_scored`` readings and no rollback is promoted to the fleet;
one whose canary rolled back or refused stops there. Each promotion, halt and gateway model
change is an audit row. The desired models then follow from the rollouts.
"""

from __future__ import annotations

import logging

from cloud.db.pool import Conn
from cloud.operations import audit
from shared.schemas import GatewayState, RolloutReport

log = logging.getLogger(__name__)

_FAILED = ("rolled_back", "refused")

# The newest rollout per profile that targets the gateway, with the gateway's row in it.
_GOVERNING = """
SELECT DISTINCT ON (r.profile) r.profile, r.version, r.state, t.stage, t.status,
       t.previous_version
FROM rollout_targets t JOIN model_rollouts r USING (rollout_id)
WHERE t.gateway_id = %s AND r.state <> 'superseded'
ORDER BY r.profile, r.rollout_id DESC
"""


def desired_models(conn: Conn, gateway_id: str,
                   base: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(profile -> version the gateway should run, profiles ordered back), over ``base``."""
    models = dict(base or {})
    rollback: list[str] = []
    for profile, version, state, stage, status, previous in conn.execute(
            _GOVERNING, (gateway_id,), prepare=True):
        if state == "halted":
            continue  # stopped where it stood: the gateway keeps what it runs
        if state == "rolled_back":
            want, ordered = previous, True
        elif status in _FAILED or state == "failed":
            # It already went back by itself (or never left): keep it where it is.
            want, ordered = previous, False
        elif stage == "canary" or state in ("fleet", "done"):
            want, ordered = version, False
        else:
            continue  # a fleet gateway while the canaries prove the version
        if want is None:
            continue  # it ran no model before: nothing to return to, the profile is left alone
        models[profile] = want
        if ordered:
            rollback.append(profile)
    return models, sorted(rollback)


def may_download(conn: Conn, gateway_id: str, profile: str, version: str) -> bool:
    """Whether ``version`` is desired for the gateway or one it ran before a rollout of it."""
    base = conn.execute("SELECT desired_models FROM gateways WHERE gateway_id = %s",
                        (gateway_id,)).fetchone()
    models, _ = desired_models(conn, gateway_id, base[0] if base else None)
    if models.get(profile) == version:
        return True
    # The version it ran before a rollout: kept on disk, but a lost copy may be fetched again.
    return conn.execute(
        "SELECT 1 FROM rollout_targets t JOIN model_rollouts r USING (rollout_id)"
        " WHERE t.gateway_id = %s AND r.profile = %s AND t.previous_version = %s"
        " AND r.state <> 'superseded' LIMIT 1", (gateway_id, profile, version)).fetchone() \
        is not None


def record_report(conn: Conn, gateway_id: str, state: GatewayState) -> list[int]:
    """Store a gateway's models and rollout steps; returns the rollouts promoted or halted."""
    reasons = {r.profile: r for r in state.rollout}
    _record_models(conn, gateway_id, state.models, reasons)
    touched: set[int] = set()
    for report in state.rollout:
        rid = _record_step(conn, gateway_id, report)
        if rid is not None:
            touched.add(rid)
    changed = []
    for rid in sorted(touched):
        if _advance(conn, rid, state.models):
            changed.append(rid)
    return changed


def _record_models(conn: Conn, gateway_id: str, models: dict[str, str],
                   reports: dict[str, RolloutReport]) -> None:
    current: dict[str, str] = dict(conn.execute(
        "SELECT profile, version FROM gateway_models WHERE gateway_id = %s", (gateway_id,)))
    for profile, version in models.items():
        if current.get(profile) == version:
            continue
        report = reports.get(profile)
        if report is not None and report.version == version and report.step == "running":
            why = report.reason or "rollout swapped it in"
        elif report is not None and report.step in _FAILED:
            why = f"{report.step} {report.version}: {report.reason}"
        else:
            why = "reported by the gateway"
        conn.execute(
            "INSERT INTO gateway_models (gateway_id, profile, version, since, reason)"
            " VALUES (%s, %s, %s, now(), %s) ON CONFLICT (gateway_id, profile) DO UPDATE SET"
            " version = EXCLUDED.version, since = EXCLUDED.since, reason = EXCLUDED.reason",
            (gateway_id, profile, version, why))
        audit.record(conn, f"gateway:{gateway_id}", "model.change", "gateway", gateway_id,
                     before={"profile": profile, "version": current.get(profile)},
                     after={"profile": profile, "version": version, "reason": why})
    # A profile no longer reported runs on the statistical detector (a rollback to none, a
    # bundle removed by hand): the console must not go on naming the old version.
    for profile in sorted(set(current) - set(models)):
        report = reports.get(profile)
        why = (f"{report.step} {report.version}: {report.reason}"
               if report is not None and report.step in _FAILED
               else "the gateway reports no model: statistical detector")
        conn.execute("DELETE FROM gateway_models WHERE gateway_id = %s AND profile = %s",
                     (gateway_id, profile))
        audit.record(conn, f"gateway:{gateway_id}", "model.change", "gateway", gateway_id,
                     before={"profile": profile, "version": current[profile]},
                     after={"profile": profile, "version": None, "reason": why})


def _record_step(conn: Conn, gateway_id: str, report: RolloutReport) -> int | None:
    """Update the gateway's target row of the rollout the report is about; its id or None."""
    row = conn.execute(
        "SELECT t.rollout_id, t.status, r.state FROM rollout_targets t JOIN model_rollouts r"
        " USING (rollout_id) WHERE t.gateway_id = %s AND r.profile = %s AND r.version = %s"
        " AND r.state <> 'superseded' ORDER BY r.rollout_id DESC LIMIT 1"
        # The rollout's row first, as a manual rollback locks it: no deadlock between them.
        " FOR UPDATE OF r",
        (gateway_id, report.profile, report.version), prepare=True).fetchone()
    if row is None:
        return None
    rid, status, state = int(row[0]), str(row[1]), str(row[2])
    if status in _FAILED:
        return rid  # terminal for this gateway: a late "running" must not revive it
    if state not in ("canary", "fleet") and report.step not in _FAILED:
        return None  # a finished rollout needs no more counts (this runs on every upload)
    conn.execute(
        "UPDATE rollout_targets SET status = %s, scored = %s, reason = %s, updated_at = now()"
        " WHERE rollout_id = %s AND gateway_id = %s",
        (report.step, report.scored, report.reason, rid, gateway_id))
    if report.step in _FAILED and status not in _FAILED:
        audit.record(conn, f"gateway:{gateway_id}", f"model.{report.step}", "rollout",
                     str(rid), before={"version": report.version, "status": status},
                     after={"version": report.previous_version, "status": report.step,
                            "reason": report.reason})
        log.warning("rollout %d: gateway %s %s %s %s: %s", rid, gateway_id, report.step,
                    report.profile, report.version, report.reason)
    return rid


def _advance(conn: Conn, rollout_id: int, models: dict[str, str]) -> bool:
    """Promote a healthy canary stage, halt a failed one, finish a complete fleet stage."""
    row = conn.execute(
        "SELECT state, profile, version, min_scored FROM model_rollouts"
        " WHERE rollout_id = %s FOR UPDATE", (rollout_id,)).fetchone()
    if row is None or row[0] not in ("canary", "fleet"):
        return False
    state, profile, version, min_scored = row
    targets = conn.execute(
        "SELECT gateway_id, stage, status, scored, reason FROM rollout_targets"
        " WHERE rollout_id = %s", (rollout_id,)).fetchall()
    canaries = [t for t in targets if t[1] == "canary"]
    if state == "canary":
        failed = [t for t in canaries if t[2] in _FAILED]
        if failed:
            why = f"canary {failed[0][0]} {failed[0][2]}: {failed[0][4]}"
            _set_state(conn, rollout_id, "failed", why, old=state, profile=profile,
                       version=version)
            return True
        healthy = all(t[2] == "running" and t[3] >= min_scored for t in canaries)
        if not healthy:
            return False
        why = (f"canaries {[t[0] for t in canaries]} run {version} with >= {min_scored} "
               "readings scored")
        fleet = [t for t in targets if t[1] == "fleet"]
        _set_state(conn, rollout_id, "fleet" if fleet else "done", why, old=state,
                   profile=profile, version=version)
        return True
    if all(t[2] == "running" or t[2] in _FAILED for t in targets):
        failed = sorted(t[0] for t in targets if t[2] in _FAILED)
        why = f"{len(targets) - len(failed)} gateways run {version}" + (
            f"; refused or rolled back on {failed[:10]}" if failed else "")
        _set_state(conn, rollout_id, "done", why, old=state, profile=profile, version=version)
        return True
    return False


def _set_state(conn: Conn, rollout_id: int, new: str, why: str, *, old: str, profile: str,
               version: str) -> None:
    conn.execute("UPDATE model_rollouts SET state = %s, reason = %s, updated_at = now()"
                 " WHERE rollout_id = %s", (new, why, rollout_id))
    action = {"fleet": "rollout.promote", "failed": "rollout.halt"}.get(new, f"rollout.{new}")
    if old == "canary" and new == "done":
        action = "rollout.promote"
    audit.record(conn, "system", action, "rollout", str(rollout_id),
                 before={"state": old, "profile": profile, "version": version},
                 after={"state": new, "reason": why})
    log.info("rollout %d (%s %s): %s -> %s: %s", rollout_id, profile, version, old, new, why)


def gateway_models(conn: Conn, gateway_id: str | None = None) -> list[dict[str, object]]:
    """What each gateway runs per profile, since when and why the last change happened."""
    rows = conn.execute(
        "SELECT gateway_id, profile, version, since, reason FROM gateway_models"
        " WHERE (%(g)s::text IS NULL OR gateway_id = %(g)s) ORDER BY gateway_id, profile",
        {"g": gateway_id}).fetchall()
    return [{"gateway": g, "profile": p, "version": v, "since": s, "reason": r}
            for g, p, v, s, r in rows]
