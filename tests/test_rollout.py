"""Model rollout over the air (issue 10, acceptance 1 and 2), real parts end to end.

The cloud API runs under uvicorn on a private PostgreSQL with a local artifact store; real
gateways (edge.service) run in the test's event loop against private Mosquitto brokers, fed by
simulated devices; bundles are trained and signed by the cloud's own code. Each bad bundle
is refused or rolled back, the previous model keeps scoring and the reason shows in the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import re
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import mlflow
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient

from cloud.access.gateway_tokens import create_gateway
from cloud.access.users import create_user
from cloud.api.app import create_app
from cloud.artifacts import LocalArtifactStore
from cloud.db.migrate import migrate
from cloud.rollout import RolloutCreate, create_rollout
from cloud.settings import CloudSettings
from cloud.training.config import TrainingConfig
from cloud.training.pipeline import TrainingResult, train_models
from devstack.mosquitto import PrivateMosquitto
from devstack.ports import free_port
from edge.ota import BundleDownloader
from edge.settings import GatewaySettings
from shared import topics
from shared.bundle import public_key_text, write_bundle
from shared.features import FeatureSpec
from tests.fixtures.bundles import V1, V2, Bundles, make_bundles, motor_series
from tests.fixtures.gateway import Publisher, RunningGateway, running_gateway
from tests.fixtures.waiting import wait_until_async

SHADOW = 40
MIN_SCORED = 30
_REFUSALS = "refused|rolled back"


@pytest.fixture(scope="module")
def bundles() -> Bundles:
    return make_bundles()


class Feeder(threading.Thread):
    """A simulated motor publishing normal readings at ~100 Hz until stopped."""

    def __init__(self, broker: PrivateMosquitto, device: str) -> None:
        super().__init__(daemon=True)
        self.broker, self.device = broker, device
        self.done = threading.Event()

    def run(self) -> None:
        values = motor_series(sum(self.device.encode()), 100_000)
        with Publisher(self.broker, f"feed-{self.device}") as pub:
            for seq, (temp, vib, cur) in enumerate(values):
                if self.done.wait(0.01):
                    return
                pub.publish(topics.telemetry(self.device), json.dumps({
                    "v": 1, "device": self.device, "boot": "0123abcd", "seq": seq,
                    "ts_ms": int(time.time() * 1000), "uptime_ms": seq * 10, "synced": True,
                    "type": "motor", "metrics": {"temperature_c": float(temp),
                                                 "vibration_rms_g": float(vib),
                                                 "current_a": float(cur)}}))


@dataclasses.dataclass
class Cloud:
    """The running cloud: its URL, database, artifact store, tokens and user keys."""

    url: str
    dsn: str
    store: LocalArtifactStore
    tokens: dict[str, str]
    keys: dict[str, str]
    http: httpx.AsyncClient

    async def api(self, method: str, who: str, path: str, body: object = None) -> Any:
        """Call the API as user ``who``; the JSON answer (fails on an error status)."""
        resp = await self.http.request(method, self.url + path, json=body,
                                       headers={"Authorization": f"Bearer {self.keys[who]}"})
        assert resp.status_code < 300, resp.text
        return resp.json()

    async def rollout(self, rid: int) -> dict[str, Any]:
        """GET one rollout."""
        data: dict[str, Any] = await self.api("GET", "viewer", f"/api/v1/rollouts/{rid}")
        return data


def settings(dsn: str, store: LocalArtifactStore) -> CloudSettings:
    """Cloud settings on ``dsn`` serving bundles from ``store``, no job worker."""
    return CloudSettings(db={"dsn": dsn}, jobs={"worker_enabled": False},
                         artifacts={"local_root": str(store.root)})


@contextlib.asynccontextmanager
async def running_cloud(dsn: str, tmp: Path, gateways: list[str]) -> AsyncIterator[Cloud]:
    """The cloud API under uvicorn in a thread, with ``gateways`` and one user per role."""
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        tokens = {g: create_gateway(conn, g) for g in gateways}
        keys = {r: create_user(conn, r, r).key for r in ("viewer", "operator", "admin")}
    store = LocalArtifactStore(tmp / "artifacts")
    port = free_port()
    app = create_app(settings(dsn, store))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    async with httpx.AsyncClient(timeout=10.0) as http:
        try:
            await wait_until_async(lambda: server.started, 30, "the cloud API listening")
            yield Cloud(f"http://127.0.0.1:{port}", dsn, store, tokens, keys, http)
        finally:
            server.should_exit = True
            thread.join(timeout=15)


def gateway_settings(tmp: Path, gid: str, broker: PrivateMosquitto, cloud: Cloud,
                     bundles: Bundles) -> GatewaySettings:
    """A gateway running model V1 for motors, syncing to ``cloud``."""
    models = tmp / gid / "models"
    models.mkdir(parents=True)
    (models / "motor.smb").write_bytes(bundles.make(V1, bundles.manifest.created_ms))
    return GatewaySettings(
        gateway_id=gid, mqtt=broker.gateway_mqtt(),
        storage={"path": str(tmp / gid / "gw.db")}, http={"port": free_port()},
        sync={"cloud_url": cloud.url, "token": cloud.tokens[gid], "interval_s": 0.2},
        scoring={"models_dir": str(models), "model_poll_s": 0.5,
                 "trusted_keys": [public_key_text(bundles.key.public_key())]},
        rollout={"shadow_readings": SHADOW, "retry_s": 0.5}, alerts={"publish": False})


@contextlib.contextmanager
def feeding(broker: PrivateMosquitto, device: str) -> Iterator[Feeder]:
    """A device publishing readings for the duration of the block."""
    feeder = Feeder(broker, device)
    feeder.start()
    try:
        yield feeder
    finally:
        feeder.done.set()
        feeder.join(timeout=10)


def scored(dsn: str, device: str) -> list[tuple[int, str, str | None]]:
    """(seq, scorer, model_version) of a device's readings in the cloud, by seq."""
    with psycopg.connect(dsn) as conn:
        return [(int(s), str(sc), v) for s, sc, v in conn.execute(
            "SELECT seq, scorer, model_version FROM readings WHERE device_id = %s ORDER BY seq",
            (device,))]


async def models_of(gw: RunningGateway) -> dict[str, str]:
    """What the gateway says it runs."""
    models: dict[str, str] = (await gw.status())["models"]
    return models


async def test_canary_then_fleet_then_manual_rollback(
    pg_dsn: str, tmp_path: Path, broker: PrivateMosquitto, fresh_broker: PrivateMosquitto,
    bundles: Bundles,
) -> None:
    async with running_cloud(pg_dsn, tmp_path, ["gw-canary", "gw-fleet"]) as cloud:
        cloud.store.put_bytes(f"models/motor/{V2}/bundle.smb",
                              bundles.make(V2, bundles.manifest.created_ms + 1000))
        s1 = gateway_settings(tmp_path, "gw-canary", broker, cloud, bundles)
        s2 = gateway_settings(tmp_path, "gw-fleet", fresh_broker, cloud, bundles)
        with feeding(broker, "ro-motor-a"), feeding(fresh_broker, "ro-motor-b"):
            async with running_gateway(s1) as g1:
                async with running_gateway(s2):
                    # Both report V1 to the cloud before the rollout starts.
                    await wait_until_async(lambda: _running(cloud, 2, V1), 30, "both on V1")
                # The fleet gateway is offline while the canary proves V2.
                made = await cloud.api("POST", "admin", "/api/v1/rollouts", {
                    "profile": "motor", "version": V2, "canaries": ["gw-canary"],
                    "fleet": ["gw-fleet"], "min_scored": MIN_SCORED})
                rid = made["rollout_id"]
                assert made["state"] == "canary"
                await wait_until_async(lambda: _state(cloud, rid, "fleet"), 60, "promoted")
                async with running_gateway(s2) as g2:  # back: it catches up
                    await wait_until_async(lambda: _state(cloud, rid, "done"), 60, "done")
                    await _after_rollout(cloud, rid, g1, g2, pg_dsn)
    for device in ("ro-motor-a", "ro-motor-b"):
        rows = [r for r in scored(pg_dsn, device) if r[1] == "onnx"]
        versions = [v for _, _, v in rows]
        first_v2 = versions.index(V2)
        last_v2 = len(versions) - 1 - versions[::-1].index(V2)
        assert set(versions[:first_v2]) == {V1}
        assert set(versions[first_v2:last_v2 + 1]) == {V2}  # no V1 between the two swaps
    with psycopg.connect(pg_dsn) as conn:
        actions = [(a, e) for a, e in conn.execute(
            "SELECT action, entity_id FROM audit_log WHERE action LIKE 'rollout.%%'"
            " OR (action = 'model.change' AND after ->> 'version' = %s) ORDER BY audit_id",
            (V2,))]
    # The fleet gateway changed only after the promotion of the canary stage.
    assert actions == [("rollout.create", str(rid)), ("model.change", "gw-canary"),
                       ("rollout.promote", str(rid)), ("model.change", "gw-fleet"),
                       ("rollout.done", str(rid)), ("rollout.rollback", str(rid))]


async def _after_rollout(cloud: Cloud, rid: int, g1: RunningGateway, g2: RunningGateway,
                         dsn: str) -> None:
    """Both run V2 and say why; readings carry it; a manual rollback brings V1 back."""
    assert await models_of(g1) == {"motor": V2}
    assert await models_of(g2) == {"motor": V2}
    running = await cloud.api("GET", "viewer", "/api/v1/models/running")
    assert {(r["gateway"], r["version"]) for r in running} == {
        ("gw-canary", V2), ("gw-fleet", V2)}
    assert all(r["reason"].startswith("shadow passed") for r in running)
    await wait_until_async(lambda: all(any(v == V2 for _, _, v in scored(dsn, d))
                                       for d in ("ro-motor-a", "ro-motor-b")), 30, "V2 readings")
    # Manual rollback: an explicit order to run the older V1 again.
    back = await cloud.api("POST", "operator", f"/api/v1/rollouts/{rid}/rollback",
                           {"reason": "operator test"})
    assert back["state"] == "rolled_back"
    assert {t["status"] for t in back["targets"]} == {"rolled_back"}
    await wait_until_async(lambda: _running(cloud, 2, V1), 60, "both back on V1")
    assert await models_of(g1) == {"motor": V1}
    running = await cloud.api("GET", "viewer", "/api/v1/models/running")
    assert {r["reason"] for r in running} == {f"ordered rollback from {V2}"}


async def _running(cloud: Cloud, n: int, version: str) -> bool:
    rows = await cloud.api("GET", "viewer", "/api/v1/models/running")
    return len(rows) == n and all(r["version"] == version for r in rows)


async def _state(cloud: Cloud, rid: int, state: str) -> bool:
    return str((await cloud.rollout(rid))["state"]) == state


def _tampered(b: Bundles, created: int) -> bytes:
    good = zipfile.ZipFile(io.BytesIO(b.make("motor-bad-1", created)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in good.namelist():
            data = good.read(name)
            zf.writestr(name, data[:-8] + b"\x00" * 8 if name == "model.onnx" else data)
    return out.getvalue()


def _bad_bundle(kind: str, b: Bundles) -> tuple[str, bytes]:
    """(version, bundle bytes) of one kind of bad bundle."""
    newer = b.manifest.created_ms + 5000
    if kind == "tampered":
        return "motor-bad-1", _tampered(b, newer)
    if kind == "truncated":
        cut = b.onnx[: len(b.onnx) // 2]
        m = dataclasses.replace(b.manifest, version="motor-bad-2", created_ms=newer,
                                onnx_sha256=hashlib.sha256(cut).hexdigest())
        return "motor-bad-2", write_bundle(m, cut, b.key)
    if kind == "older":
        return "motor-bad-3", b.make("motor-bad-3", b.manifest.created_ms - 5000)
    if kind == "spec":
        spec = FeatureSpec("motor", ("temperature_c", "vibration_rms_g", "oil_bar"),
                           b.manifest.spec.warmup)
        return "motor-bad-4", b.make("motor-bad-4", newer, spec=spec)
    return "motor-bad-5", b.make("motor-bad-5", newer, threshold=-1e9)


@pytest.mark.expected_errors("edge.rollout", _REFUSALS)
@pytest.mark.parametrize(("kind", "step", "reason"), [
    ("tampered", "refused", "checksum|signature"),
    ("truncated", "refused", "does not load"),
    ("older", "refused", "older than the running"),
    ("spec", "refused", "cannot compute"),
    ("absurd", "rolled_back", "in shadow: alert rate 1.000"),
])
async def test_a_bad_bundle_is_refused_and_the_previous_model_keeps_scoring(  # noqa: PLR0917
    pg_dsn: str, tmp_path: Path, broker: PrivateMosquitto, bundles: Bundles, kind: str,
    step: str, reason: str,
) -> None:
    device = f"ro-bad-{kind}"
    async with running_cloud(pg_dsn, tmp_path, ["gw-bad"]) as cloud:
        version, data = _bad_bundle(kind, bundles)
        cloud.store.put_bytes(f"models/motor/{version}/bundle.smb", data)
        settings = gateway_settings(tmp_path, "gw-bad", broker, cloud, bundles)
        with feeding(broker, device):
            async with running_gateway(settings) as gw:
                await wait_until_async(lambda: _running(cloud, 1, V1), 30, "V1 reported")
                made = await cloud.api("POST", "admin", "/api/v1/rollouts", {
                    "profile": "motor", "version": version, "canaries": ["gw-bad"],
                    "min_scored": MIN_SCORED})
                rid = made["rollout_id"]
                await wait_until_async(lambda: _state(cloud, rid, "failed"), 60, "halted")
                failed_at = max(s for s, _, _ in scored(pg_dsn, device))
                # The previous model goes on scoring after the refusal.
                await wait_until_async(
                    lambda: max(s for s, _, _ in scored(pg_dsn, device)) > failed_at + 50, 30,
                    "readings after the refusal")
                assert await models_of(gw) == {"motor": V1}
        target = (await cloud.rollout(rid))["targets"][0]
        assert target["status"] == step
        assert re.search(reason, target["reason"]), target["reason"]
        assert re.search(reason, (await cloud.rollout(rid))["reason"])
    rows = scored(pg_dsn, device)
    # Without a gap: once V1's window was full, every reading was scored by V1.
    assert [r for r in rows[bundles.manifest.spec.warmup:] if r[1:] != ("onnx", V1)] == []
    with psycopg.connect(pg_dsn) as conn:
        audited = conn.execute("SELECT actor, after ->> 'reason' FROM audit_log"
                               " WHERE action = %s", (f"model.{step}",)).fetchall()
    assert [actor for actor, _ in audited] == ["gateway:gw-bad"]


class _DropOnce(httpx.AsyncBaseTransport):
    """Passes requests to the app; the first response breaks off after ``cut`` bytes."""

    def __init__(self, inner: httpx.AsyncBaseTransport, cut: int) -> None:
        self.inner, self.cut = inner, cut
        self.ranges: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.ranges.append(request.headers.get("Range"))
        resp = await self.inner.handle_async_request(request)
        if len(self.ranges) > 1:
            return resp
        body = await resp.aread()
        cut = self.cut

        class Broken(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                yield body[:cut]
                raise httpx.ReadError("link dropped")

        return httpx.Response(resp.status_code, headers=resp.headers, stream=Broken())


async def test_a_dropped_download_resumes_with_a_range_request(
    pg_dsn: str, tmp_path: Path, bundles: Bundles,
) -> None:
    migrate(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        token = create_gateway(conn, "gw-dl")
    store = LocalArtifactStore(tmp_path / "artifacts")
    data = bundles.make(V2, bundles.manifest.created_ms + 1)
    store.put_bytes(f"models/motor/{V2}/bundle.smb", data)
    with psycopg.connect(pg_dsn) as conn:
        # Only a gateway a rollout wants the version on may download it.
        create_rollout(conn, "admin", RolloutCreate(profile="motor", version=V2,
                                                    canaries=["gw-dl"]), store)
    app = create_app(settings(pg_dsn, store))
    with TestClient(app):
        transport = _DropOnce(httpx.ASGITransport(app=app), cut=len(data) // 3)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as client:
            dl = BundleDownloader("http://cloud", token, tmp_path / "dl", client=client,
                                  retry_s=0.01)
            assert await dl.fetch("motor", V2) == data
            assert transport.ranges == [None, f"bytes={len(data) // 3}-"]
            bad = BundleDownloader("http://cloud", "wrong-token", tmp_path / "dl2",
                                   client=client, retry_s=0.01)
            with pytest.raises(Exception, match="HTTP 401"):
                await bad.fetch("motor", V2)


@pytest.mark.slow
async def test_a_model_trained_from_cloud_readings_is_rolled_out_to_the_gateway(
    pg_dsn: str, tmp_path: Path, broker: PrivateMosquitto, bundles: Bundles,
) -> None:
    """Train (MLflow, registry, champion gate) -> artifact store -> canary -> running."""
    device = "ro-trained"
    since = datetime.now(UTC)
    async with running_cloud(pg_dsn, tmp_path, ["gw-train"]) as cloud:
        settings = gateway_settings(tmp_path, "gw-train", broker, cloud, bundles)
        with feeding(broker, device):
            async with running_gateway(settings) as gw:
                await wait_until_async(lambda: len(scored(pg_dsn, device)) >= 800, 60,
                                       "readings to train on")
                config = TrainingConfig(data_dir=tmp_path / "mlflow", n_estimators=20,
                                        holdout_fraction=0.25, min_train_windows=200,
                                        min_heldout_windows=50)
                # Off the event loop: the gateway keeps running while the cloud trains.
                result = await asyncio.to_thread(
                    _train, pg_dsn, config, bundles, cloud.store, since)
                (trained,) = result.trained
                assert trained.decision.outcome == "promoted"
                assert trained.artifact_key == \
                    f"models/motor/{trained.bundle_version}/bundle.smb"
                made = await cloud.api("POST", "admin", "/api/v1/rollouts", {
                    "profile": "motor", "version": trained.bundle_version,
                    "canaries": ["gw-train"], "min_scored": MIN_SCORED})
                rid = made["rollout_id"]
                await wait_until_async(lambda: _state(cloud, rid, "done"), 60, "rolled out")
                assert await models_of(gw) == {"motor": trained.bundle_version}
                await wait_until_async(
                    lambda: any(v == trained.bundle_version for *_, v in scored(pg_dsn, device)),
                    30, "readings scored by the trained model")
    client = mlflow.MlflowClient(config.resolved_tracking_uri())
    run = client.get_run(trained.run_id)
    assert run.data.metrics["rows_train"] > 0
    assert "heldout_anomaly_rate" in run.data.metrics
    assert {a.path for a in client.list_artifacts(trained.run_id, "bundle")} >= {
        "bundle/model.onnx", "bundle/manifest.json"}
    champion = client.get_model_version_by_alias("smaint-motor", "champion")
    assert str(champion.version) == trained.version


def _train(dsn: str, config: TrainingConfig, bundles: Bundles, store: LocalArtifactStore,
           since: datetime) -> TrainingResult:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return train_models(conn, config, bundles.key, since=since, until=datetime.now(UTC),
                            profiles=["motor"], artifacts=store, actor="dana")
