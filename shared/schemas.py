"""Versioned wire schemas, defined once: device messages, stored readings, alerts, sync batches.

Device messages are strict: a number sent as a string, a missing field or an unknown field is an
error, because a device that sends them is misconfigured and someone must be told.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.anomaly import FEATURES_PER_METRIC
from shared.topics import ID_PATTERN

# The rules, defined once: the models below and the columnar codec (shared.batchcodec) both use
# these. Patterns are bare: pydantic gets them anchored (its ``$`` is the end of the text),
# the codec ``fullmatch``es them (Python's ``$`` would also match before a trailing newline).
BOOT_PATTERN = "[0-9a-f]{8,32}"
METRIC_PATTERN = "[a-z][a-z0-9_]{0,63}"
TEXT_PATTERN = "[^\\x00]*"  # free text PostgreSQL can store: no NUL
MAX_SEQ = 2**32 - 1
MAX_EPOCH_MS = 2**53
MAX_METRICS = 64  # room for a few dozen channels; more is a corrupt or hostile message
MAX_PROFILE_NAME = 32
MAX_MODEL_VERSION = 64
MAX_BATCH_SEQ = 2**63 - 1
MAX_READINGS = 50_000
MAX_NOTE = 1000  # an inspection note: a few sentences, not a report
# The boot id of a device's manual entries (edge/manual.py numbers them 0, 1, ... in it), so a
# manual reading's identity (device, boot, seq) never meets a sensor's: the decoder refuses it
# from a device, whose firmware draws 16 random hex digits at boot anyway.
MANUAL_BOOT = "00000000000000000000000000000000"


def anchored(pattern: str) -> str:
    """``pattern`` anchored at both ends, as pydantic and JSON Schema need it."""
    return f"^{pattern}$"


DeviceId = Annotated[str, Field(pattern=anchored(ID_PATTERN), description="device id")]
GatewayId = Annotated[str, Field(pattern=anchored(ID_PATTERN), description="gateway id")]
BootId = Annotated[
    str,
    Field(
        pattern=anchored(BOOT_PATTERN),
        description="random id a device draws at every boot, so seq restarting is not a duplicate",
    ),
]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ, description="per-boot message counter, from 0")]
EpochMs = Annotated[
    int, Field(ge=0, le=MAX_EPOCH_MS, description="milliseconds since the Unix epoch")]
MetricName = Annotated[str, Field(pattern=anchored(METRIC_PATTERN))]
# An explanation names a metric, or one of its features (shared.anomaly.FEATURES_PER_METRIC).
ExplanationKey = Annotated[str, Field(pattern=anchored(
    f"{METRIC_PATTERN}(\\.({'|'.join(FEATURES_PER_METRIC)}))?"))]
# JSON Schema: pydantic lists the key pattern but would let other keys through; pydantic refuses.
_ONLY_METRIC_KEYS: dict[str, Any] = {"additionalProperties": False}
Metrics = Annotated[dict[MetricName, float], Field(
    min_length=1, max_length=MAX_METRICS, json_schema_extra=_ONLY_METRIC_KEYS)]
ProfileName = Annotated[str, Field(max_length=MAX_PROFILE_NAME, pattern=anchored(TEXT_PATTERN),
                                   description="sensor profile name (shared.sensors)")]
ModelVersion = Annotated[str, Field(max_length=MAX_MODEL_VERSION, pattern=anchored(TEXT_PATTERN),
                                    description="model version")]


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is not a finite number")
    return metrics


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Telemetry(_Wire):
    """One reading as a device publishes it on ``smaint/v1/dev/<device>/telemetry``."""

    v: Literal[1] = Field(description="wire version")
    device: DeviceId
    boot: BootId
    seq: Seq
    ts_ms: EpochMs = Field(description="device clock at sampling; meaningless if synced is false")
    uptime_ms: int = Field(ge=0, le=2**53, description="milliseconds since the device booted")
    synced: bool = Field(description="true once the device clock was set by NTP")
    type: ProfileName
    metrics: Metrics = Field(description="metric name -> value, in the profile's units")
    # Last and optional: the firmware never sends it (its bytes are the fields above, in this
    # order); the simulator sets it while it injects a fault, and the gateway stores such a
    # reading with origin "simulated".
    sim: bool = Field(default=False,
                      description="this sample carries an injected SIMULATED fault")

    _check_finite = field_validator("metrics")(_finite)


class DeviceStatus(_Wire):
    """A device's online/offline state, retained on ``.../status`` and used as its last will."""

    v: Literal[1] = Field(description="wire version")
    device: DeviceId
    boot: BootId
    state: Literal["online", "offline"] = Field(description="offline is the last will")
    ts_ms: EpochMs = Field(description="device clock when sent (0 if not yet synced)")
    type: ProfileName | None = None
    fw: str | None = Field(default=None, max_length=32, description="firmware version")
    interval_ms: int | None = Field(
        default=None, ge=10, le=86_400_000, description="sample interval the device runs"
    )


class DeviceConfig(_Wire):
    """Desired device configuration, retained on ``smaint/v1/dev/<device>/config``.

    Missing fields mean the profile's defaults; an empty retained message clears the config.
    The firmware's parser (firmware/esp32, config.cpp) accepts exactly these; both are checked
    against shared/golden/config.json.
    """

    v: Literal[1] = Field(description="wire version")
    interval_ms: int | None = Field(
        default=None, ge=10, le=86_400_000, description="sample interval of every sensor")
    enabled: list[MetricName] | None = Field(
        default=None, min_length=1, max_length=MAX_METRICS,
        description="metrics to sample (others off)")
    sensor_ms: dict[MetricName, Annotated[int, Field(ge=10, le=86_400_000)]] = Field(
        default_factory=dict, max_length=MAX_METRICS, json_schema_extra=_ONLY_METRIC_KEYS,
        description="per-metric sample interval override")


Scorer = Literal["onnx", "stat", "none"]
SCORERS: frozenset[str] = frozenset(get_args(Scorer))
# Where a reading came from: a device's sensor, a technician's manual entry on the gateway
# panel (a measurement and/or an inspection note), or a device while a SIMULATED fault was
# injected into it (a demo or a drill: labelled as such wherever it shows).
Origin = Literal["sensor", "manual", "simulated"]
ORIGINS: frozenset[str] = frozenset(get_args(Origin))
Note = Annotated[str, Field(min_length=1, max_length=MAX_NOTE, pattern=anchored(TEXT_PATTERN),
                            description="inspection note written with a manual entry")]


class Reading(BaseModel):
    """A validated reading as the gateway stores it and syncs it upstream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DeviceId
    boot: BootId
    seq: Seq
    type: ProfileName
    ts_ms: EpochMs = Field(description="best-known sampling time (device clock or re-timed)")
    device_ts_ms: EpochMs | None = Field(description="device clock as sent; null if unsynced")
    received_ms: EpochMs = Field(description="gateway clock on receipt")
    # Empty only for a manual inspection note without a measurement (checked below).
    metrics: Annotated[dict[MetricName, float], Field(
        max_length=MAX_METRICS, json_schema_extra=_ONLY_METRIC_KEYS)]
    score: float | None = Field(
        allow_inf_nan=False, description="anomaly score; higher is more anomalous")
    scorer: Scorer = Field(description="which detector produced the score")
    model_version: ModelVersion | None = Field(default=None, description="if a model scored")
    anomalous: bool = Field(description="score crossed the detector's threshold")
    replay: bool = Field(default=False, description="sent again by a backfill or catch-up")
    origin: Origin = Field(default="sensor", description="sensor, manual entry or simulated")
    note: Note | None = Field(default=None, description="inspection note (manual entries)")

    _check_finite = field_validator("metrics")(_finite)

    @model_validator(mode="after")
    def _has_content(self) -> Reading:
        if not self.metrics and not (self.origin == "manual" and self.note is not None):
            raise ValueError("a reading needs at least one metric (only a manual entry may "
                             "carry a note alone)")
        if self.note is not None and self.origin != "manual":
            raise ValueError("only a manual entry carries a note")
        return self


Severity = Literal["low", "medium", "high"]  # of an alert; the one definition both sides use
ALERT_ID_PATTERN = "[0-9a-f-]{8,64}"
MAX_ACTOR = 64
MAX_ALERT_COMMENT = 2000
# What an operator decides when resolving an alert (cloud review; sent down to the gateway).
ReviewDecision = Literal["confirmed_failure", "false_positive", "needs_inspection"]
Actor = Annotated[str, Field(min_length=1, max_length=MAX_ACTOR, pattern=anchored(TEXT_PATTERN),
                             description="who: a user name or label, or panel / api")]
AlertComment = Annotated[str, Field(max_length=MAX_ALERT_COMMENT, pattern=anchored(TEXT_PATTERN),
                                    description="free text an operator wrote")]


class AlertAck(BaseModel):
    """An acknowledgement made on the gateway (panel or HTTP API), carried up with the alert."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: Actor
    at_ms: EpochMs = Field(description="gateway clock when acknowledged")
    comment: AlertComment = ""


class Alert(BaseModel):
    """An alert raised by a gateway, with the metrics that drove it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: str = Field(pattern=anchored(ALERT_ID_PATTERN), description="gateway-unique id")
    device: DeviceId
    opened_ms: EpochMs
    resolved_ms: EpochMs | None = None
    severity: Severity
    state: Literal["open", "acknowledged", "resolved"]
    score: float = Field(allow_inf_nan=False, description="peak anomaly score while open")
    scorer: Scorer
    model_version: ModelVersion | None = None
    explanation: dict[ExplanationKey, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=MAX_METRICS * (1 + len(FEATURES_PER_METRIC)),
        json_schema_extra=_ONLY_METRIC_KEYS,
        description="what drove the score: metric -> share, and <metric>.<feature> -> share "
                    "(each kind sums to 1; shared.anomaly.explain)")
    updated_ms: EpochMs = Field(description="last state change, for last-writer-wins upserts")
    ack: AlertAck | None = Field(
        default=None, description="the acknowledgement made on the gateway, once made; null "
                                  "if none (an acknowledgement from the cloud is not echoed)")
    simulated: bool = Field(default=False,
                            description="opened on a reading with an injected SIMULATED fault")


class DeviceEvent(BaseModel):
    """A device's online/offline change as the gateway saw it (synced before readings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DeviceId
    boot: BootId
    state: Literal["online", "offline"] = Field(description="offline: its last will fired")
    at_ms: EpochMs = Field(description="gateway clock when the status arrived")
    type: ProfileName | None = None
    fw: str | None = Field(default=None, max_length=32, description="firmware version")


class ReadingAggregate(BaseModel):
    """What the gateway kept of unsynced readings it had to drop under its disk budget.

    One row per device, metric and minute; a later fold of the same minute merges into it and
    sends it again with a newer ``updated_ms`` (the cloud keeps the newest: last writer wins).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DeviceId
    metric: MetricName
    minute_ms: EpochMs = Field(multiple_of=60_000, description="start of the minute (UTC)")
    type: ProfileName
    n: int = Field(ge=1, le=2**31 - 1, description="readings folded into this row")
    min: float = Field(allow_inf_nan=False)
    max: float = Field(allow_inf_nan=False)
    mean: float = Field(allow_inf_nan=False)
    sum: float = Field(allow_inf_nan=False)
    first_ts_ms: EpochMs = Field(description="earliest reading folded in")
    last_ts_ms: EpochMs = Field(description="latest reading folded in")
    updated_ms: EpochMs = Field(description="last merge, for last-writer-wins upserts")

    @model_validator(mode="after")
    def _consistent(self) -> ReadingAggregate:
        if not self.min <= self.max:
            raise ValueError("min is above max")
        if not self.minute_ms <= self.first_ts_ms <= self.last_ts_ms < self.minute_ms + 60_000:
            raise ValueError("first_ts_ms..last_ts_ms must lie within the minute, in order")
        return self


RolloutStep = Literal["downloading", "verifying", "shadow", "running", "rolled_back", "refused"]
MAX_REASON = 500


class RolloutReport(BaseModel):
    """One profile's model change on a gateway: the step it reached and why (edge.rollout)."""

    model_config = ConfigDict(extra="forbid")

    profile: ProfileName
    version: ModelVersion = Field(description="the model version being rolled out")
    step: RolloutStep = Field(
        description="rolled_back: ran (in shadow or after the swap) and was removed; "
                    "refused: never ran (download, signature, checksum, age, features, load)")
    reason: str = Field(default="", max_length=MAX_REASON, pattern=anchored(TEXT_PATTERN),
                        description="why this step (a refusal or rollback names its cause)")
    at_ms: EpochMs = Field(description="gateway clock when the step was reached")
    previous_version: ModelVersion | None = Field(
        default=None, description="the version that ran before (kept on disk)")
    scored: int = Field(default=0, ge=0, le=2**53,
                        description="readings the new version scored since the swap")
    shadow_readings: int = Field(default=0, ge=0, le=2**53,
                                 description="readings the new version scored in shadow")
    shadow_alert_rate: float | None = Field(
        default=None, ge=0, le=1, description="share of shadow readings it found anomalous")


ConfigValue = int | float
# A desired-config setting's name as a gateway reports it back (known or not: it says why not).
ConfigName = Annotated[str, Field(max_length=64)]

# The gateway settings the cloud may change at run time (desired config): name -> type and
# range. The cloud refuses other names; the gateway checks again before applying. Strict: a
# string "9" or a bool is not a number here.
GATEWAY_CONFIG_KEYS: dict[str, TypeAdapter[Any]] = {
    "scoring.threshold": TypeAdapter(Annotated[
        float, Field(strict=True, gt=0, le=1e6, allow_inf_nan=False)]),
    "alerts.open_after": TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=1000)]),
    "alerts.resolve_after": TypeAdapter(Annotated[int, Field(strict=True, ge=1, le=10_000)]),
    "sync.interval_s": TypeAdapter(Annotated[
        float, Field(strict=True, ge=0.05, le=3600, allow_inf_nan=False)]),
    # Published by the gateway as every known device's retained DeviceConfig.interval_ms.
    "devices.interval_ms": TypeAdapter(Annotated[int, Field(strict=True, ge=10,
                                                            le=86_400_000)]),
}


def check_gateway_config(config: dict[str, Any]) -> tuple[dict[str, ConfigValue], dict[str, str]]:
    """Split a desired config into valid values and refusals (name -> reason)."""
    good: dict[str, ConfigValue] = {}
    refused: dict[str, str] = {}
    for name, value in config.items():
        adapter = GATEWAY_CONFIG_KEYS.get(name)
        if adapter is None:
            refused[name] = f"unknown setting; known: {', '.join(sorted(GATEWAY_CONFIG_KEYS))}"
            continue
        try:
            good[name] = adapter.validate_python(value)
        except ValidationError as exc:
            refused[name] = exc.errors(include_url=False)[0]["msg"]
    return good, refused


class GatewayState(BaseModel):
    """What a gateway actually runs, reported with every upload (the desired state's mirror)."""

    model_config = ConfigDict(extra="forbid")

    config_version: int | None = Field(
        default=None, ge=0, description="version of the desired config the gateway applied")
    models: dict[ProfileName, ModelVersion] = Field(
        default_factory=dict, max_length=32, description="sensor profile -> model version run")
    software: str | None = Field(default=None, max_length=64, description="gateway version")
    backlog: int = Field(default=0, ge=0, description="readings stored but not yet synced")
    rollout: list[RolloutReport] = Field(
        default_factory=list, max_length=32,
        description="model rollouts in progress or last finished, one per profile")
    config: dict[ConfigName, ConfigValue] | None = Field(
        default=None, max_length=32,
        description="desired config values applied (config_version's), name -> value")
    config_refused: dict[ConfigName, Annotated[str, Field(max_length=500)]] = Field(
        default_factory=dict, max_length=32,
        description="desired config values not applied, name -> reason")
    alert_decision: int = Field(
        default=0, ge=0, le=MAX_BATCH_SEQ,
        description="id of the newest cloud alert decision applied (DesiredState.alert_decisions"
                    " sends those after it)")


class BackfillRequest(BaseModel):
    """The cloud asks the gateway to upload a time range again from its store."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1, le=2**63 - 1, description="request id; reported back when done")
    since_ms: EpochMs = Field(description="inclusive start of the range (reading ts)")
    until_ms: EpochMs = Field(description="exclusive end of the range")


MAX_ALERT_DECISIONS = 100


class AlertDecision(BaseModel):
    """An operator's review of an alert taken in the cloud, sent down to the alert's gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1, le=MAX_BATCH_SEQ,
                    description="the gateway's decision counter: 1, 2, ... in the order taken")
    alert_id: str = Field(pattern=anchored(ALERT_ID_PATTERN))
    action: Literal["acknowledge", "resolve"]
    by: Actor
    at_ms: EpochMs = Field(description="cloud clock when decided")
    decision: ReviewDecision | None = Field(default=None, description="set by resolve only")
    comment: AlertComment = ""

    @model_validator(mode="after")
    def _decided(self) -> AlertDecision:
        if (self.action == "resolve") != (self.decision is not None):
            raise ValueError("a resolve carries a decision, an acknowledge none")
        return self


# SIMULATION ONLY: scenarios a simulated device plays on request (simulator/faults.py).
ScenarioKind = Literal["spike", "drift", "stuck", "noise"]
SCENARIO_KINDS: tuple[str, ...] = get_args(ScenarioKind)
MAX_SCENARIO_SECONDS = 300
MAX_SCENARIOS = 16  # pending requests one sync answer carries, oldest first
ScenarioId = Annotated[str, Field(pattern="^[0-9a-f]{32}$",
                                  description="request id: a UUID as 32 hex digits")]


class ScenarioRequest(_Wire):
    """SIMULATION ONLY: play a scenario on a simulated device (``.../dev/<device>/simulate``).

    The gateway publishes it (QoS 1, not retained) after a panel or cloud request; only the
    simulator subscribes, real firmware never does. Carried down in DesiredState.scenarios.
    """

    v: Literal[1] = Field(description="wire version")
    id: ScenarioId
    device: DeviceId
    kind: ScenarioKind = Field(description="spike, drift, stuck sensor or noise burst")
    seconds: float = Field(gt=0, le=MAX_SCENARIO_SECONDS, allow_inf_nan=False,
                           description="how long the scenario lasts")
    requested_by: str = Field(min_length=1, max_length=64, pattern=anchored(TEXT_PATTERN),
                              description="who asked: a cloud user, or the gateway panel")


class ScenarioDone(BaseModel):
    """The gateway's report on a cloud scenario request: published once, or refused."""

    model_config = ConfigDict(extra="forbid")

    id: ScenarioId
    outcome: Literal["published", "refused"]
    reason: str = Field(default="", max_length=MAX_REASON, pattern=anchored(TEXT_PATTERN),
                        description="why it was refused (e.g. simulation is off here)")
    at_ms: EpochMs = Field(description="gateway clock when it was published or refused")


class DesiredState(BaseModel):
    """What the cloud wants the gateway to run, carried by every sync answer."""

    model_config = ConfigDict(extra="forbid")

    config_version: int = Field(default=0, ge=0, description="bumped on every config change")
    config: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="gateway settings to apply (name -> value)")
    models: dict[str, str] = Field(
        default_factory=dict, description="sensor profile -> model version to run")
    rollback: list[ProfileName] = Field(
        default_factory=list, max_length=32,
        description="profiles whose desired version is an ordered rollback: an older bundle "
                    "than the one running is accepted for these only")
    backfill: list[BackfillRequest] = Field(
        default_factory=list, description="time ranges to upload again, oldest first")
    alert_decisions: list[AlertDecision] = Field(
        default_factory=list, max_length=MAX_ALERT_DECISIONS,
        description="cloud decisions on this gateway's alerts after the one its state reported "
                    "applied (GatewayState.alert_decision), oldest first")
    scenarios: list[ScenarioRequest] = Field(
        default_factory=list, max_length=MAX_SCENARIOS,
        description="SIMULATION ONLY: scenario requests not yet reported done, oldest first; "
                    "the gateway runs each id once and reports it in scenarios_done")


class SyncBatch(BaseModel):
    """What a gateway uploads: applied exactly once per (gateway, batch_seq)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    gateway: GatewayId
    batch_seq: int = Field(
        ge=1, le=MAX_BATCH_SEQ, description="gateway's upload counter; retries reuse it")
    created_ms: EpochMs
    readings: list[Reading] = Field(default_factory=list, max_length=MAX_READINGS)
    alerts: list[Alert] = Field(default_factory=list, max_length=10_000)
    events: list[DeviceEvent] = Field(
        default_factory=list, max_length=10_000, description="device status changes")
    aggregates: list[ReadingAggregate] = Field(
        default_factory=list, max_length=50_000,
        description="per-minute aggregates of readings folded under the disk budget")
    state: GatewayState | None = Field(default=None, description="the gateway's actual state")
    backfill_done: list[Annotated[int, Field(ge=1, le=MAX_BATCH_SEQ)]] = Field(
        default_factory=list, max_length=1000, description="backfill requests completed")
    scenarios_done: list[ScenarioDone] = Field(
        default_factory=list, max_length=1000,
        description="SIMULATION ONLY: cloud scenario requests published or refused")


class SyncAck(BaseModel):
    """The cloud's answer, sent only after the batch is committed."""

    model_config = ConfigDict(extra="forbid")

    gateway: GatewayId
    batch_seq: int
    first_time: bool = Field(description="false when this batch had been applied before")
    readings_inserted: int = Field(description="rows new to the cloud")
    readings_duplicate: int = Field(description="rows the cloud already had")
    alerts_upserted: int = 0
    readings_dead_lettered: int = Field(
        default=0, description="rows outside the cloud's plausible time window, not stored")
    rotate_token: bool = Field(
        default=False, description="fetch a new token (POST /api/v1/sync/token); the one in "
                                   "use stays valid for an overlap period")
    desired: DesiredState | None = Field(
        default=None, description="what the gateway should run; null from older clouds")
