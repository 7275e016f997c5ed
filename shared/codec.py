"""Decoding device messages: bytes in, a valid wire object or a DecodeError naming the field."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from shared.exceptions import DecodeError
from shared.schemas import MANUAL_BOOT, DeviceConfig, DeviceStatus, ScenarioRequest, Telemetry
from shared.sensors import PROFILES

MAX_PAYLOAD_BYTES = 16_384


def _explain(exc: ValidationError) -> DecodeError:
    """Turn pydantic's error list into one message that names the first bad field."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "json_invalid":
        return DecodeError(f"payload is not valid JSON: {err['msg']}")
    if err["type"] in {"model_type", "model_attributes_type"}:
        return DecodeError("payload must be a JSON object")
    if err["type"] == "missing":
        return DecodeError(f"missing field {loc!r}", field=loc)
    if err["type"] == "extra_forbidden":
        return DecodeError(f"unknown field {loc!r}", field=loc)
    return DecodeError(f"field {loc!r}: {err['msg']}", field=loc or None)


_M = TypeVar("_M", Telemetry, DeviceStatus, DeviceConfig, ScenarioRequest)


def _decode(model: type[_M], payload: bytes, topic_device: str | None) -> _M:
    """Size check, strict JSON validation, and the topic's device id matching the payload's."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DecodeError(f"payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
    try:
        msg = model.model_validate_json(payload)
    except ValidationError as exc:
        raise _explain(exc) from exc
    claimed = getattr(msg, "device", topic_device)  # a config carries no device id
    if topic_device is not None and claimed != topic_device:
        raise DecodeError(
            f"device {claimed!r} published on the topic of device {topic_device!r}",
            field="device",
        )
    return msg


def decode_telemetry(payload: bytes, topic_device: str | None = None) -> Telemetry:
    """Decode and validate a telemetry payload against its sensor profile's physical ranges.

    ``topic_device`` is the device id taken from the topic; a payload claiming another id is
    rejected, so a device cannot write readings for another one.
    """
    msg = _decode(Telemetry, payload, topic_device)
    if msg.boot == MANUAL_BOOT:
        raise DecodeError(f"boot {MANUAL_BOOT!r} is reserved for manual entries on the "
                          "gateway; draw another boot id", field="boot")
    check_metrics(msg.type, msg.metrics)
    return msg


def check_metrics(sensor_type: str, metrics: dict[str, float]) -> None:
    """Each metric belongs to the sensor profile and lies within its physical range.

    The rule of every reading's values, a device's or one entered by hand on the panel;
    DecodeError names the first metric at fault.
    """
    prof = PROFILES.get(sensor_type)
    if prof is None:
        raise DecodeError(
            f"unknown sensor type {sensor_type!r}; known: {', '.join(sorted(PROFILES))}",
            field="type",
        )
    expected = prof.metric_names
    for name, value in metrics.items():
        if name not in expected:
            raise DecodeError(
                f"metric {name!r} is not part of sensor type {sensor_type!r} "
                f"({', '.join(expected)})",
                field=f"metrics.{name}",
            )
        metric = prof.metric(name)
        if not metric.in_range(value):
            raise DecodeError(
                f"metric {name!r} = {value!r} {metric.unit} is outside the physical range "
                f"[{metric.low:g}, {metric.high:g}] {metric.unit}",
                field=f"metrics.{name}",
            )


def decode_status(payload: bytes, topic_device: str | None = None) -> DeviceStatus:
    """Decode a device status (online/offline) message."""
    return _decode(DeviceStatus, payload, topic_device)


def decode_config(payload: bytes, sensor_type: str) -> DeviceConfig:
    """Decode a retained device config and check its metrics belong to ``sensor_type``.

    An empty payload (the retained config was cleared) means the profile's defaults.
    """
    if not payload.strip():
        return DeviceConfig(v=1)
    cfg = _decode(DeviceConfig, payload, None)
    metrics = PROFILES[sensor_type].metric_names
    for name in cfg.enabled or []:
        if name not in metrics:
            raise DecodeError(f"enabled: {name!r} is not a metric of sensor type "
                              f"{sensor_type!r}", field="enabled")
    if cfg.enabled is not None and len(set(cfg.enabled)) != len(cfg.enabled):
        raise DecodeError("enabled: lists a metric twice", field="enabled")
    for name in cfg.sensor_ms:
        if name not in metrics:
            raise DecodeError(f"sensor_ms.{name}: not a metric of sensor type {sensor_type!r}",
                              field=f"sensor_ms.{name}")
    return cfg


def decode_scenario(payload: bytes, topic_device: str | None = None) -> ScenarioRequest:
    """Decode a SIMULATED scenario request (the simulator's side of ``.../simulate``)."""
    return _decode(ScenarioRequest, payload, topic_device)


def encode(msg: Telemetry | DeviceStatus | DeviceConfig | ScenarioRequest) -> bytes:
    """Serialise a device message exactly as a device would send it (compact JSON).

    ``sim`` is left out unless set: the firmware never sends it, and a simulated device's
    normal samples must be byte for byte what the firmware sends.
    """
    leave_out = {"sim"} if isinstance(msg, Telemetry) and not msg.sim else None
    return msg.model_dump_json(exclude_none=True, exclude=leave_out).encode()
