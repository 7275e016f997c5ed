"""Property tests: the codec fails only with DecodeError, round-trips, and the gateway keeps
every message it refuses."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.alert_lifecycle import AlertTracker
from edge.pipeline import Pipeline
from edge.score import RuleScorer
from edge.store import Store
from edge.validate import Incoming
from shared import topics
from shared.codec import decode_status, decode_telemetry, encode
from shared.exceptions import DecodeError
from shared.schemas import MANUAL_BOOT, Telemetry
from shared.sensors import PROFILES

DEVICE = "prop-dev"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def telemetry(draw: st.DrawFn) -> Telemetry:
    """A valid reading: any profile, any non-empty subset of its metrics, values in range."""
    prof = PROFILES[draw(st.sampled_from(sorted(PROFILES)))]
    names = draw(st.lists(st.sampled_from(prof.metric_names), min_size=1, unique=True))
    metrics = {n: draw(st.floats(prof.metric(n).low, prof.metric(n).high)) for n in names}
    return Telemetry(
        v=1, device=draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)),
        boot=draw(st.from_regex(r"[0-9a-f]{8,32}", fullmatch=True).filter(
            lambda b: b != MANUAL_BOOT)),
        seq=draw(st.integers(0, 2**32 - 1)), ts_ms=draw(st.integers(0, 2**53)),
        uptime_ms=draw(st.integers(0, 2**53)), synced=draw(st.booleans()), type=prof.name,
        metrics=metrics, sim=draw(st.booleans()),
    )


def valid_dict(seq: int) -> dict[str, Any]:
    """A valid motor reading of DEVICE as a JSON-ready dict."""
    return {"v": 1, "device": DEVICE, "boot": "a1b2c3d4", "seq": seq, "ts_ms": 1, "uptime_ms": 1,
            "synced": False, "type": "motor",
            "metrics": {"temperature_c": 40.0, "vibration_rms_g": 1.0, "current_a": 3.0}}


def decodes(payload: bytes) -> bool:
    """True if the codec accepts the payload; any error but DecodeError fails the test."""
    try:
        decode_telemetry(payload, topic_device=DEVICE)
    except DecodeError as exc:
        reason = exc.reason
    else:
        return True
    assert reason
    return False


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_decode_error(payload: bytes) -> None:
    decodes(payload)
    with contextlib.suppress(DecodeError):
        decode_status(payload)


@given(json_values)
def test_arbitrary_json_raises_only_decode_error(value: object) -> None:
    payload = json.dumps(value).encode()
    assert not decodes(payload)
    with contextlib.suppress(DecodeError):
        decode_status(payload)


@given(st.integers(0, 1000), st.sampled_from(sorted(valid_dict(0))), json_values)
def test_a_valid_reading_with_one_field_replaced_raises_only_decode_error(
    seq: int, key: str, value: object
) -> None:
    msg = valid_dict(seq)
    msg[key] = value
    decodes(json.dumps(msg).encode())


@given(telemetry())
def test_valid_telemetry_round_trips(msg: Telemetry) -> None:
    assert decode_telemetry(encode(msg), topic_device=msg.device) == msg


def test_sim_is_sent_only_when_set_and_only_as_a_boolean() -> None:
    """A normal sample encodes without ``sim`` (the firmware's bytes); a simulated one says
    ``"sim":true``; a device sending it as a string is refused naming the field."""
    normal = decode_telemetry(json.dumps(valid_dict(1)).encode(), topic_device=DEVICE)
    assert normal.sim is False
    assert b"sim" not in encode(normal)
    injected = decode_telemetry(json.dumps({**valid_dict(2), "sim": True}).encode())
    assert injected.sim is True
    assert encode(injected).endswith(b',"sim":true}')
    with pytest.raises(DecodeError) as err:
        decode_telemetry(json.dumps({**valid_dict(3), "sim": "true"}).encode())
    assert err.value.field == "sim"


mutated = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda s: json.dumps(valid_dict(s)).encode(), st.integers(0, 50)),
    st.builds(lambda s, k, v: json.dumps({**valid_dict(s), k: v}).encode(),
              st.integers(0, 50), st.sampled_from(sorted(valid_dict(0))), json_values),
    st.builds(lambda s, t: json.dumps({**valid_dict(s), "metrics": {"temperature_c": t}}).encode(),
              st.integers(0, 50), st.floats(allow_nan=False)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(mutated, max_size=30))
def test_every_refused_message_is_dead_lettered_with_a_reason(payloads: list[bytes]) -> None:
    store = Store.open(":memory:")
    pipe = Pipeline(store, RuleScorer(), AlertTracker(), "gw-prop")
    topic = topics.telemetry(DEVICE)
    result = pipe.handle([Incoming(topic, p, 1) for p in payloads])
    refused = [p for p in payloads if not decodes(p)]
    accepted = {json.loads(p)["seq"] for p in payloads if decodes(p)}
    letters = store.dead_letters()
    assert [d["payload"] for d in letters] == refused
    assert all(d["reason"] and d["topic"] == topic for d in letters)
    assert result.dead_letters == len(refused)
    assert result.stored == len(accepted) == store.count("readings")
    assert result.duplicates == len(payloads) - len(refused) - len(accepted)
    store.close()
