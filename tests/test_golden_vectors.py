"""shared/golden/telemetry.json: the vectors the ESP32 firmware's C++ encoder is checked against.

The C++ side checks exact bytes (firmware/esp32/tests/test_golden.cpp); here the Python decoder
must accept every valid vector with exactly the listed values, and reject every invalid one
naming the listed field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from shared.codec import decode_config, decode_status, decode_telemetry
from shared.exceptions import DecodeError
from shared.schemas import DeviceStatus, Telemetry
from shared.sensors import PROFILES

# Fields the firmware never sends (the simulator's marker of an injected fault): optional and
# last, so the firmware's bytes are the other fields in schema order.
SIMULATOR_ONLY = ("sim",)
FIRMWARE_FIELDS = [f for f in Telemetry.model_fields if f not in SIMULATOR_ONLY]
GOLDEN = Path(__file__).resolve().parents[1] / "shared" / "golden"
DOC: dict[str, Any] = json.loads((GOLDEN / "telemetry.json").read_text(encoding="utf-8"))
CONFIG_DOC: dict[str, Any] = json.loads((GOLDEN / "config.json").read_text(encoding="utf-8"))


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


@pytest.mark.parametrize("case", DOC["telemetry_valid"], ids=_ids(DOC["telemetry_valid"]))
def test_valid_vector_decodes_to_its_input(case: dict[str, Any]) -> None:
    """The decoder accepts the C++ bytes and returns exactly the input's fields."""
    payload = case["json"].encode()
    msg = decode_telemetry(payload, topic_device=case["input"]["device"])
    inp = case["input"]
    got = msg.model_dump()
    assert got.pop("v") == 1
    assert got.pop("sim") is False  # not sent: a firmware sample is never a simulated fault
    got_metrics = got.pop("metrics")
    want = {k: v for k, v in inp.items() if k != "metrics"}
    assert got == want
    # Same floats (== treats -0.0 as 0.0, sent as 0), same metric order.
    assert list(got_metrics) == list(inp["metrics"])
    for name, value in inp["metrics"].items():
        assert got_metrics[name] == value, name
        assert isinstance(got_metrics[name], float)


@pytest.mark.parametrize("case", DOC["telemetry_valid"], ids=_ids(DOC["telemetry_valid"]))
def test_valid_vector_bytes_are_compact_and_ordered(case: dict[str, Any]) -> None:
    """Compact JSON, keys in schema order, numbers that plain json reads back identically."""
    text: str = case["json"]
    assert " " not in text
    assert "\n" not in text
    parsed = json.loads(text)
    assert list(parsed) == FIRMWARE_FIELDS
    for name, value in parsed["metrics"].items():
        assert math.isfinite(value)
        assert float(value) == case["input"]["metrics"][name]
        # Shortest round trip: no more significant digits than Python's own repr needs.
        raw = text.split(f'"{name}":', 1)[1].split(",", 1)[0].rstrip("}")
        digits = raw.lstrip("-").split("e")[0].replace(".", "").strip("0")
        shortest = repr(abs(float(value))).split("e")[0].replace(".", "").strip("0")
        assert len(digits) <= max(len(shortest), 1), (raw, repr(float(value)))


@pytest.mark.parametrize("case", DOC["telemetry_invalid"], ids=_ids(DOC["telemetry_invalid"]))
def test_invalid_vector_rejected_naming_field(case: dict[str, Any]) -> None:
    """The decoder refuses each invalid vector and names the listed field."""
    with pytest.raises(DecodeError) as err:
        decode_telemetry(case["json"].encode())
    assert err.value.field == case["field"], err.value.reason


@pytest.mark.parametrize("case", DOC["status_valid"], ids=_ids(DOC["status_valid"]))
def test_status_vector_decodes(case: dict[str, Any]) -> None:
    """DeviceStatus bytes from the C++ encoder decode to the input fields."""
    msg = decode_status(case["json"].encode(), topic_device=case["input"]["device"])
    assert msg == DeviceStatus(v=1, **case["input"])
    assert list(json.loads(case["json"])) == ["v", *case["input"]]


def test_profiles_match_shared_sensors() -> None:
    """The profiles copied into the vectors (and checked by C++) are shared/sensors.py's."""
    want = [
        {
            "name": p.name,
            "sample_interval_ms": round(p.sample_interval_s * 1000),
            "metrics": [
                {"name": m.name, "unit": m.unit, "low": m.low, "high": m.high} for m in p.metrics
            ],
        }
        for p in PROFILES.values()
    ]
    assert DOC["profiles"] == want


def test_vectors_cover_the_contract() -> None:
    """Each firmware Telemetry field is exercised by an invalid vector, each profile by a
    valid one (``sim`` is the simulator's: tests/test_codec.py covers it)."""
    fields = {c["field"].split(".")[0] for c in DOC["telemetry_invalid"]}
    assert set(FIRMWARE_FIELDS) <= fields
    assert list(Telemetry.model_fields)[-len(SIMULATOR_ONLY):] == list(SIMULATOR_ONLY)
    assert {c["input"]["type"] for c in DOC["telemetry_valid"]} == set(PROFILES)


def test_config_vectors_well_formed() -> None:
    """shared/golden/config.json names real profiles and metrics (the C++ parser runs it)."""
    for case in CONFIG_DOC["valid"]:
        prof = PROFILES[case["type"]]
        assert set(case["expect"]["enabled"]) <= set(prof.metric_names)
        assert set(case["expect"]["sensor_ms"]) <= set(prof.metric_names)
        if case["payload"]:
            assert json.loads(case["payload"])["v"] == 1
    assert len(CONFIG_DOC["invalid"]) >= 20


# --- device config: the Python schema and the firmware's parser agree -------------------------

CONFIG_VECTORS = json.loads((GOLDEN / "config.json").read_text(encoding="utf-8"))
# Strictness the firmware's hand-written JSON reader adds on top of standard JSON: Python's
# parser (like most) takes the last of duplicate keys, and has no nesting or size limit this
# small. Everything else must be rejected by both.
FIRMWARE_ONLY = {"duplicate key", "nested too deep", "too large"}


@pytest.mark.parametrize("case", CONFIG_VECTORS["valid"], ids=lambda c: c["name"])
def test_config_vectors_the_firmware_accepts_decode_in_python(case: dict[str, Any]) -> None:
    cfg = decode_config(case["payload"].encode(), case["type"])
    prof = PROFILES[case["type"]]
    expect = case["expect"]
    assert (cfg.enabled or list(prof.metric_names)) == expect["enabled"]
    assert cfg.sensor_ms == expect["sensor_ms"]
    if cfg.interval_ms is not None:
        assert cfg.interval_ms == expect["interval_ms"]


@pytest.mark.parametrize(
    "case", [c for c in CONFIG_VECTORS["invalid"] if c["name"] not in FIRMWARE_ONLY],
    ids=lambda c: c["name"])
def test_config_vectors_the_firmware_rejects_are_rejected_in_python(
    case: dict[str, Any],
) -> None:
    with pytest.raises(DecodeError) as err:
        decode_config(case["payload"].encode("utf-8", "surrogatepass"), case["type"])
    field = case["error_starts_with"].split(":")[0]
    if case["error_starts_with"].endswith(":"):  # the firmware names a field: so must we
        assert err.value.field is not None
        assert err.value.field.split(".")[0] == field.split(".")[0]
