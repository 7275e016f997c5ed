"""docs/contract/ is fresh, says what the code does, and the firmware's tables match shared/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from shared import topics
from smaint import cli, contract

GOLDEN = Path(__file__).resolve().parents[1] / "shared" / "golden"


@pytest.fixture(scope="module")
def documents() -> dict[str, str]:
    """Every document, generated once for the module."""
    return contract.documents()


def test_committed_documents_are_fresh(documents: dict[str, str]) -> None:
    stale = contract.stale(contract.DOCS_DIR, documents)
    assert stale == [], f"stale contract documents {stale}: run `smaint contract --write`"


def test_generation_is_deterministic(documents: dict[str, str]) -> None:
    assert contract.documents() == documents
    for text in documents.values():
        assert text == contract.render(json.loads(text))  # sorted keys, one layout


def test_check_fails_on_a_stale_copy_and_write_repairs_it(tmp_path: Path) -> None:
    assert cli.COMMANDS["contract"][0] == "smaint.contract"
    assert cli.main(["contract", "--write", "--dir", str(tmp_path)]) == 0
    assert cli.main(["contract", "--check", "--dir", str(tmp_path)]) == 0
    telemetry = tmp_path / "schemas" / "telemetry.json"
    text = telemetry.read_text(encoding="utf-8")
    telemetry.write_text(text.replace('"maxProperties": 64', '"maxProperties": 65'),
                         encoding="utf-8")
    (tmp_path / "openapi.json").unlink()
    assert contract.stale(tmp_path) == ["openapi.json", "schemas/telemetry.json"]
    assert cli.main(["contract", "--check", "--dir", str(tmp_path)]) == 1
    assert contract.write(tmp_path) == ["openapi.json", "schemas/telemetry.json"]
    assert contract.stale(tmp_path) == []


def _schema(documents: dict[str, str], name: str) -> Any:
    return jsonschema_rs.validator_for(json.loads(documents[f"schemas/{name}"]))


def test_payload_schemas_accept_the_golden_vectors(documents: dict[str, str]) -> None:
    golden = json.loads((GOLDEN / "telemetry.json").read_text(encoding="utf-8"))
    config = json.loads((GOLDEN / "config.json").read_text(encoding="utf-8"))
    telemetry = _schema(documents, "telemetry.json")
    for case in golden["telemetry_valid"]:
        telemetry.validate(json.loads(case["json"]))
    for case in golden["status_valid"]:
        _schema(documents, "device-status.json").validate(json.loads(case["json"]))
    for case in config["valid"]:
        if case["payload"].strip():  # an empty payload clears the config: not JSON
            _schema(documents, "device-config.json").validate(json.loads(case["payload"]))
    # What the models refuse, the schema refuses too: trailing newline, foreign keys.
    doc = json.loads(golden["telemetry_valid"][0]["json"])
    for bad in ({**doc, "device": doc["device"] + "\n"}, {**doc, "extra": 1},
                {**doc, "metrics": {"Bad-Name": 1.0}}, {**doc, "metrics": {}}):
        assert not telemetry.is_valid(bad), bad


def test_asyncapi_describes_every_topic_and_its_references_resolve(
        documents: dict[str, str]) -> None:
    doc = json.loads(documents["asyncapi.json"])
    assert doc["asyncapi"] == "3.0.0"
    for ch in topics.CHANNELS:
        channel = doc["channels"][ch.name]
        # The address is what the topic functions build, with the id as its parameter.
        assert getattr(topics, ch.name)("x") == channel["address"].format(**{ch.parameter: "x"})
        assert list(channel["parameters"]) == [ch.parameter]
        sends = [op for op in doc["operations"].values()
                 if op["channel"]["$ref"] == f"#/channels/{ch.name}"]
        assert sorted(op["action"] for op in sends) == sorted(
            ["send"] + ["receive"] * len(ch.receivers))
        assert all(op["bindings"]["mqtt"]["qos"] == ch.qos and
                   op["bindings"]["mqtt"]["retain"] == ch.retain for op in sends)

    def resolve(ref: str) -> Any:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
        return [r for v in node for r in refs(v)] if isinstance(node, list) else []

    for ref in refs(doc):
        assert resolve(ref) is not None, ref


def test_openapi_is_the_cloud_app(documents: dict[str, str]) -> None:
    doc = json.loads(documents["openapi.json"])
    assert doc["info"]["title"] == "Smart Maintenance cloud"
    assert "/api/v1/sync/batches" in doc["paths"]
    sync_batch = doc["components"]["schemas"]["SyncBatch"]["properties"]
    assert sync_batch["aggregates"]["maxItems"] == 50_000


# -- firmware ------------------------------------------------------------------------------------

FIRMWARE_FILES = ("profiles.cpp", "profiles.hpp", "topics.hpp")


def test_firmware_tables_match_shared() -> None:
    assert contract.firmware_drift() == []


@pytest.mark.parametrize(("file", "old", "new", "names"), [
    ("profiles.cpp", '{"current_a", "A", 0.0, 500.0}', '{"current_a", "mA", 0.0, 500.0}', "motor"),
    ("profiles.cpp", '{"torque_nm", "N·m", 0.0, 500.0}', '{"torque_nm", "N·m", 0.0, 501.0}',
     "mill"),
    ("profiles.cpp", '{"t24_r", "°R", 0.0, 2000.0},      {"t30_r", "°R", 0.0, 3000.0},',
     '{"t30_r", "°R", 0.0, 3000.0},      {"t24_r", "°R", 0.0, 2000.0},', "turbofan"),
    ("profiles.cpp", '{"mill", kMill, std::size(kMill), 1000},', "", "kProfiles"),
    ("profiles.cpp", '{"motor", kMotor, std::size(kMotor), 1000}',
     '{"motor", kMotor, std::size(kMotor), 500}', "sample interval"),
    ("profiles.hpp", "kMaxMetrics = 8;", "kMaxMetrics = 7;", "kMaxMetrics"),
    ("topics.hpp", '"smaint/v1"', '"smaint/v2"', "kRoot"),
    ("topics.hpp", 'device_topic(device, "status")', 'device_topic(device, "state")', "status()"),
    ("topics.hpp", 't += "/dev/";', 't += "/devices/";', "device_topic"),
])
def test_firmware_check_catches_a_real_drift(tmp_path: Path, file: str, old: str, new: str,
                                             names: str) -> None:
    for name in FIRMWARE_FILES:
        shutil.copy(contract.FIRMWARE_DIR / name, tmp_path / name)
    source = (tmp_path / file).read_text(encoding="utf-8")
    assert old in source, "the firmware source changed: update this mutation"
    (tmp_path / file).write_text(source.replace(old, new), encoding="utf-8")
    drift = contract.firmware_drift(tmp_path)
    assert drift, f"{file}: {old!r} -> {new!r} went unnoticed"
    assert any(names in d for d in drift), drift
