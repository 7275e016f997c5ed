"""The rollout parts alone: the gateway module (shadow, swap, rollback after the swap, memory
of refusals) and the cloud API (roles, validation, supersession, rollback, byte ranges).

Real registry, real signed bundles and onnxruntime, the real scorer; readings go straight
into the scorer (no broker), so the test decides exactly which readings the swapped-in model
sees: normal ones in shadow, then hot ones after the swap, which it must be rolled back for.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import psycopg
import pytest
from onnx import TensorProto, helper
from psycopg.types.json import Jsonb

from cloud.artifacts import LocalArtifactStore
from cloud.ingest.batch import desired_state
from edge.model_registry import ModelRegistry
from edge.ota import BundleDownloader
from edge.rollout import ModelRollout
from edge.score import ModelScorer, RuleScorer
from edge.shadow import ObservedScorer, alert_rate_bounds, check_spec
from shared.bundle import BundleError, write_bundle
from shared.features import FeatureSpec
from shared.schemas import DesiredState, RolloutReport, Telemetry
from tests.fixtures.bundles import V1, V2, Bundles, make_bundles, motor_series
from tests.fixtures.cloud import running_biz
from tests.fixtures.waiting import wait_until_async

SHADOW = 40
SERIES = motor_series(3, 10_000)  # one continuous normal signal


@pytest.fixture(scope="module")
def bundles() -> Bundles:
    return make_bundles()


_HOT = count()


def readings(hot: bool, seqs: Iterator[int], n: int = 10) -> list[Telemetry]:
    """``n`` motor readings, normal or running away: 50 °C too hot and 5 °C more each reading.

    A runaway, not a step: the detector accepts a lasting new level after a few readings
    (shared.features), so only a fault that keeps going keeps a model's alert rate up.
    """
    out = []
    for _ in range(n):
        seq = next(seqs)
        temp, vib, cur = SERIES[seq]
        if hot:
            temp += 5.0 * next(_HOT)
        out.append(Telemetry(
            v=1, device="unit-motor", boot="0123abcd", seq=seq, ts_ms=1_700_000_000_000 + seq,
            uptime_ms=seq, synced=True, type="motor",
            metrics={"temperature_c": float(temp) + (50.0 if hot else 0.0),
                     "vibration_rms_g": float(vib), "current_a": float(cur)}))
    return out


def report(rollout: ModelRollout) -> RolloutReport:
    """The motor profile's rollout report."""
    (rep,) = rollout.reports()
    return rep


KEPT = Path(".ota") / "versions" / "motor"


def v1_running_v2_kept(tmp_path: Path, bundles: Bundles
                       ) -> tuple[Path, ModelRegistry, ModelRollout, ObservedScorer]:
    """V1 running, V2 already among the kept versions (no download needed: edge.ota has its
    own test); the models directory, registry, rollout and the scorer it observes."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "motor.smb").write_bytes(bundles.make(V1, bundles.manifest.created_ms))
    (models / KEPT).mkdir(parents=True)
    (models / KEPT / f"{V2}.smb").write_bytes(
        bundles.make(V2, bundles.manifest.created_ms + 1000))
    registry = ModelRegistry(models, [bundles.key.public_key()])
    registry.refresh()
    downloader = BundleDownloader("http://127.0.0.1:9", "unused", tmp_path / "dl")
    rollout = ModelRollout(registry, downloader, shadow_readings=SHADOW, retry_s=0.05)
    return models, registry, rollout, ObservedScorer(
        ModelScorer(registry.get, RuleScorer()), rollout)


async def test_readings_of_a_simulated_fault_are_not_held_against_a_candidate(
    tmp_path: Path, bundles: Bundles,
) -> None:
    """A SIMULATED fault during the shadow run (the demo injects them) is a known fault: the
    candidate scores those readings, but only sensor readings decide its alert rate."""
    models, _registry, rollout, scorer = v1_running_v2_kept(tmp_path, bundles)
    seqs = count()
    stop = asyncio.Event()
    task = asyncio.create_task(rollout.run(stop))
    try:
        rollout.on_desired(DesiredState(models={"motor": V2}))

        def normal(step: str) -> bool:
            scorer.score_batch(readings(False, seqs, n=2))
            return report(rollout).step == step if rollout.reports() else False

        # In shadow, past the candidate's own feature warm-up (it judges from then on).
        await wait_until_async(lambda: normal("shadow") and report(rollout).shadow_readings > 0,
                               30, "V2 in shadow, warmed up")
        # A runaway that every model flags, marked as injected.
        scorer.score_batch([r.model_copy(update={"sim": True})
                            for r in readings(True, seqs, n=SHADOW)])
        await wait_until_async(lambda: normal("running"), 30, "V2 swapped in")
    finally:
        stop.set()
        await task
    rep = report(rollout)
    assert rep.shadow_alert_rate is not None
    assert rep.shadow_alert_rate <= 0.2
    with (models / ".ota" / "shadow" / f"motor-{V2}.csv").open() as f:
        rows = list(csv.DictReader(f))
    # The marked readings were scored and recorded all the same.
    assert len(rows) > rep.shadow_readings
    assert sum(int(r["shadow_anomalous"]) for r in rows) > 0


@pytest.mark.expected_errors("edge.rollout", "rolled back")
async def test_a_model_misbehaving_after_the_swap_is_rolled_back_to_the_kept_version(
    tmp_path: Path, bundles: Bundles,
) -> None:
    models, registry, rollout, scorer = v1_running_v2_kept(tmp_path, bundles)
    v1, v2 = (models / "motor.smb").read_bytes(), (models / KEPT / f"{V2}.smb").read_bytes()
    kept = models / KEPT
    downloader = rollout.downloader
    seqs = count()
    stop = asyncio.Event()
    task = asyncio.create_task(rollout.run(stop))
    try:
        rollout.on_desired(DesiredState(models={"motor": V2}))

        def feed(hot: bool, step: str) -> bool:
            scorer.score_batch(readings(hot, seqs))
            return report(rollout).step == step if rollout.reports() else False

        await wait_until_async(lambda: feed(False, "running"), 30, "V2 swapped in")
        assert registry.get("motor").version == V2  # type: ignore[union-attr]
        assert (models / "motor.smb").read_bytes() == v2
        assert (kept / f"{V1}.smb").read_bytes() == v1  # the previous version kept on disk
        rep = report(rollout)
        assert rep.previous_version == V1
        assert rep.shadow_readings >= SHADOW
        assert rep.shadow_alert_rate is not None
        assert rep.shadow_alert_rate <= 0.2
        with (models / ".ota" / "shadow" / f"motor-{V2}.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == rep.shadow_readings
        assert {r["current"] for r in rows} == {V1}  # both scores recorded, side by side
        assert all(r["shadow_score"] and r["current_score"] for r in rows)

        await wait_until_async(lambda: feed(True, "rolled_back"), 30, "V2 rolled back")
        rep = report(rollout)
        assert rep.reason.startswith("after the swap: alert rate")
        assert rep.reason.endswith(f"{V1} restored")
        assert registry.get("motor").version == V1  # type: ignore[union-attr]
        assert (models / "motor.smb").read_bytes() == v1
        scored = scorer.score_batch(readings(False, seqs))
        assert {s.model_version for s in scored} == {V1}  # no gap: V1 scores at once
    finally:
        stop.set()
        await task
    refused = json.loads((models / ".ota" / "refused.json").read_text())
    assert refused["motor"]["version"] == V2

    # After a restart the refusal is remembered: V2 is reported, not tried again.
    again = ModelRollout(registry, downloader, shadow_readings=SHADOW, retry_s=0.05)
    assert report(again).step == "rolled_back"
    again.on_desired(DesiredState(models={"motor": V2}))
    await again._step("motor", V2)  # one step, deterministically
    assert report(again).step == "rolled_back"
    assert registry.get("motor").version == V1  # type: ignore[union-attr]


def test_feature_spec_and_bounds_checks(bundles: Bundles) -> None:
    m = bundles.manifest
    check_spec(m, "motor", m.version)
    with pytest.raises(BundleError, match="asked for"):
        check_spec(m, "motor", "motor-other")
    with pytest.raises(BundleError, match="not 'mill'"):
        check_spec(m, "mill", m.version)
    odd = FeatureSpec("motor", ("temperature_c", "humidity_pct"), m.spec.warmup)
    with pytest.raises(BundleError, match="cannot compute"):
        check_spec(type(m)(**{**m.__dict__, "spec": odd}), "motor", m.version)
    assert alert_rate_bounds(m, 0.3) == (0.0, 0.3)
    bounded = type(m)(**{**m.__dict__, "extra": {"alert_rate": {"min": 0.01, "max": 0.1}}})
    assert alert_rate_bounds(bounded, 0.3) == (0.01, 0.1)


def test_rollout_api_roles_validation_supersession_rollback_and_ranges(
    pg_dsn: str, tmp_path: Path, bundles: Bundles,
) -> None:
    root = tmp_path / "artifacts"
    data = bundles.make(V2, bundles.manifest.created_ms + 1)
    LocalArtifactStore(root).put_bytes(f"models/motor/{V2}/bundle.smb", data)
    body: dict[str, object] = {
        "profile": "motor", "version": V2, "canaries": ["gw-1"], "fleet": ["gw-2"]}
    cases: list[tuple[dict[str, object], int]] = [
        ({"canaries": ["gw-9"]}, 404), ({"version": "motor-none"}, 404),
        ({"profile": "toaster"}, 422), ({"fleet": ["gw-1"]}, 422), ({"version": "../x"}, 422)]
    with running_biz(pg_dsn, artifacts={"local_root": str(root)}) as biz:
        assert biz.send("POST", "operator", "/api/v1/rollouts", body).status_code == 403
        for bad, status in cases:
            r = biz.send("POST", "admin", "/api/v1/rollouts", {**body, **bad})
            assert r.status_code == status, (bad, r.text)
        with psycopg.connect(pg_dsn) as conn:
            # gw-2 runs V1: the version it may fetch again to roll back to.
            conn.execute("UPDATE gateways SET reported_state = jsonb_set(coalesce("
                         "reported_state, '{}'), '{models}', %s) WHERE gateway_id = 'gw-2'",
                         (Jsonb({"motor": V1}),))
        LocalArtifactStore(root).put_bytes(f"models/motor/{V1}/bundle.smb",
                                           bundles.make(V1, bundles.manifest.created_ms))
        first = biz.send("POST", "admin", "/api/v1/rollouts", body).json()
        with psycopg.connect(pg_dsn) as conn:
            # Canaries get the version at once, the fleet only after the promotion.
            assert desired_state(conn, "gw-1").models == {"motor": V2}
            assert desired_state(conn, "gw-2").models == {}
        second = biz.send("POST", "admin", "/api/v1/rollouts", body).json()
        listed = biz.get("viewer", "/api/v1/rollouts").json()
        assert [(r["rollout_id"], r["state"]) for r in listed] == [
            (second["rollout_id"], "canary"), (first["rollout_id"], "superseded")]
        url = f"/api/v1/models/motor/{V2}/bundle"
        gw = {"Authorization": f"Bearer {biz.gateway_tokens['gw-1']}"}
        assert biz.client.get(url, headers=biz.auth("admin")).status_code == 401
        whole = biz.client.get(url, headers=gw)
        assert whole.status_code == 200
        assert whole.content == data
        etag = whole.headers["ETag"]
        part = biz.client.get(url, headers={**gw, "Range": "bytes=100-", "If-Range": etag})
        assert part.status_code == 206
        assert part.content == data[100:]
        assert part.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
        stale = biz.client.get(url, headers={**gw, "Range": "bytes=100-", "If-Range": '"x"'})
        assert stale.status_code == 200  # the bundle changed: whole again
        assert stale.content == data
        beyond = biz.client.get(url, headers={**gw, "Range": f"bytes={len(data)}-"})
        assert beyond.status_code == 416
        # Only the gateways a rollout wants the version on may download it.
        not_mine = biz.client.get(f"/api/v1/models/motor/{V1}/bundle", headers=gw)
        assert not_mine.status_code == 403
        assert "no rollout wants it there" in not_mine.text
        fleet = {"Authorization": f"Bearer {biz.gateway_tokens['gw-2']}"}
        assert biz.client.get(url, headers=fleet).status_code == 403  # not promoted yet
        previous = biz.client.get(f"/api/v1/models/motor/{V1}/bundle", headers=fleet)
        assert previous.status_code == 200  # gw-2's own previous version

        path = f"/api/v1/rollouts/{second['rollout_id']}/rollback"
        assert biz.send("POST", "viewer", path, {"reason": "x"}).status_code == 403
        assert biz.send("POST", "operator", path, {"reason": "x"}).status_code == 200
        assert biz.send("POST", "operator", path, {"reason": "x"}).status_code == 409
        # Rolled back: gw-1 ran no model before, so V2 is nobody's to download any more.
        assert biz.client.get(url, headers=gw).status_code == 403
    with psycopg.connect(pg_dsn) as conn:
        actions = [a for (a,) in conn.execute(
            "SELECT action FROM audit_log WHERE entity = 'rollout' ORDER BY audit_id")]
    assert actions == ["rollout.create", "rollout.create", "rollout.rollback"]


@pytest.mark.expected_errors("edge.rollout", "refusing a downgrade")
async def test_an_older_version_runs_again_only_when_the_cloud_orders_a_rollback(
    tmp_path: Path, bundles: Bundles,
) -> None:
    models = tmp_path / "models"
    kept = models / ".ota" / "versions" / "motor"
    kept.mkdir(parents=True)
    (models / "motor.smb").write_bytes(bundles.make(V2, bundles.manifest.created_ms + 1000))
    (kept / f"{V1}.smb").write_bytes(bundles.make(V1, bundles.manifest.created_ms))
    registry = ModelRegistry(models, [bundles.key.public_key()])
    registry.refresh()
    downloader = BundleDownloader("http://127.0.0.1:9", "unused", tmp_path / "dl")
    rollout = ModelRollout(registry, downloader, shadow_readings=SHADOW, retry_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(rollout.run(stop))
    try:
        rollout.on_desired(DesiredState(models={"motor": V1}))  # a replayed older desire
        await wait_until_async(lambda: bool(rollout.reports()) and
                               report(rollout).step == "refused", 30, "downgrade refused")
        assert "refusing a downgrade" in report(rollout).reason
        assert registry.get("motor").version == V2  # type: ignore[union-attr]
        rollout.on_desired(DesiredState(models={"motor": V1}, rollback=["motor"]))
        await wait_until_async(lambda: report(rollout).step == "running", 30, "rolled back")
    finally:
        stop.set()
        await task
    assert registry.get("motor").version == V1  # type: ignore[union-attr]
    assert report(rollout).reason == f"ordered rollback from {V2}"


def _fails_on_batches(b: Bundles, version: str, created_ms: int) -> bytes:
    """A signed bundle whose ONNX graph loads and scores one vector but fails on more.

    The Reshape to a fixed (1, features) shape is valid ONNX that onnxruntime accepts at load
    time and for the gateway's one-row load check; a batch of several rows makes it raise.
    """
    n = len(b.manifest.spec.names)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["row"]),
         helper.make_node("ReduceSum", ["row", "axes"], ["scores"], keepdims=0)],
        "fails_on_batches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [1, n]),
         helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    extra = {**b.manifest.extra, "alert_rate": {"max": 1.0}}
    onnx_bytes = model.SerializeToString()
    m = dataclasses.replace(b.manifest, version=version, created_ms=created_ms, extra=extra,
                            onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest())
    return write_bundle(m, onnx_bytes, b.key)


@pytest.mark.expected_errors("edge.rollout", "rolled back")
@pytest.mark.expected_errors("edge.score", "the rules score them")
async def test_a_model_failing_at_run_time_after_the_swap_is_rolled_back(
    tmp_path: Path, bundles: Bundles,
) -> None:
    models = tmp_path / "models"
    kept = models / ".ota" / "versions" / "motor"
    kept.mkdir(parents=True)
    v1 = bundles.make(V1, bundles.manifest.created_ms)
    (models / "motor.smb").write_bytes(v1)
    (kept / f"{V2}.smb").write_bytes(_fails_on_batches(bundles, V2,
                                                       bundles.manifest.created_ms + 1000))
    registry = ModelRegistry(models, [bundles.key.public_key()])
    registry.refresh()
    downloader = BundleDownloader("http://127.0.0.1:9", "unused", tmp_path / "dl")
    rollout = ModelRollout(registry, downloader, shadow_readings=SHADOW, retry_s=0.05,
                           max_run_failures=2)
    scorer = ObservedScorer(ModelScorer(registry.get, RuleScorer()), rollout)
    seqs = count()
    stop = asyncio.Event()
    task = asyncio.create_task(rollout.run(stop))
    try:
        rollout.on_desired(DesiredState(models={"motor": V2}))

        def feed(n: int, step: str) -> bool:
            scorer.score_batch(readings(False, seqs, n))
            return report(rollout).step == step if rollout.reports() else False

        # One reading per batch: the candidate scores in shadow and is swapped in.
        await wait_until_async(lambda: feed(1, "running"), 30, "V2 swapped in")
        assert registry.get("motor").version == V2  # type: ignore[union-attr]
        # Several readings per batch: every batch fails at run time.
        await wait_until_async(lambda: feed(10, "rolled_back"), 30, "V2 rolled back")
    finally:
        stop.set()
        await task
    rep = report(rollout)
    assert rep.version == V2
    assert rep.reason.startswith("after the swap: failed at run time on 2 batches")
    assert "inference failed" in rep.reason
    assert rep.reason.endswith(f"{V1} restored")
    assert registry.get("motor").version == V1  # type: ignore[union-attr]
    assert (models / "motor.smb").read_bytes() == v1
    assert {s.model_version for s in scorer.score_batch(readings(False, seqs))} == {V1}


def test_an_overdue_canary_stage_halts_and_an_operator_may_cancel_a_rollout(
    pg_dsn: str, tmp_path: Path, bundles: Bundles,
) -> None:
    root = tmp_path / "artifacts"
    LocalArtifactStore(root).put_bytes(f"models/mill/{V2}/bundle.smb",
                                       bundles.make(V2, bundles.manifest.created_ms + 1))
    body: dict[str, object] = {"profile": "mill", "version": V2, "canaries": ["gw-1"],
                               "fleet": ["gw-2"]}
    with running_biz(pg_dsn, artifacts={"local_root": str(root)}) as biz:
        bad = biz.send("POST", "admin", "/api/v1/rollouts", {**body, "canary_timeout_s": 0})
        assert bad.status_code == 422
        stuck = biz.send("POST", "admin", "/api/v1/rollouts",
                         {**body, "canary_timeout_s": 600}).json()
        assert stuck["canary_timeout_s"] == 600
        with psycopg.connect(pg_dsn) as conn:
            # gw-1 never reports: the rollout began longer ago than its timeout.
            conn.execute("UPDATE model_rollouts SET created_at = now() - interval '601 s'"
                         " WHERE rollout_id = %s", (stuck["rollout_id"],))
        (listed,) = biz.get("viewer", "/api/v1/rollouts?profile=mill").json()
        assert listed["state"] == "halted"
        assert listed["reason"].startswith(
            "canary gw-1 did not report the version within 600 s")
        with psycopg.connect(pg_dsn) as conn:
            assert desired_state(conn, "gw-1").models == {}  # it keeps what it runs

        fresh = biz.send("POST", "admin", "/api/v1/rollouts", body).json()
        assert fresh["canary_timeout_s"] == 3600  # the default
        path = f"/api/v1/rollouts/{fresh['rollout_id']}/cancel"
        assert biz.send("POST", "viewer", path, {"reason": "wrong model"}).status_code == 403
        cancelled = biz.send("POST", "operator", path, {"reason": "wrong model"})
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "halted"
        assert cancelled.json()["reason"].endswith("wrong model")
        assert biz.send("POST", "operator", path, {"reason": "again"}).status_code == 409
        with psycopg.connect(pg_dsn) as conn:
            assert desired_state(conn, "gw-1").models == {}
    with psycopg.connect(pg_dsn) as conn:
        actions = [a for (a,) in conn.execute(
            "SELECT action FROM audit_log WHERE entity = 'rollout' ORDER BY audit_id")]
    assert actions == ["rollout.create", "rollout.halt", "rollout.create", "rollout.cancel"]
