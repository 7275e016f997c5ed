"""Training settings: where MLflow keeps runs, which data a run sees, the model and the gate.

A plain pydantic model (no environment parsing of its own): the cloud settings nest it, the
CLI and the API build it from their arguments.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shared.features import DEFAULT_WARMUP


class GatePolicy(BaseModel):
    """When a new version beats the champion, measured on the same held-out data.

    A challenger is promoted when, within the tolerances, it is no worse on every measure:
    its false-alarm rate on held-out normal windows, its detection of operator-confirmed
    failures, and its silence on alerts operators marked as false positives.
    """

    model_config = ConfigDict(extra="forbid")

    far_tolerance: float = Field(
        default=0.002, ge=0, le=1,
        description="held-out false-alarm rate may exceed the champion's by this much")
    recall_tolerance: float = Field(
        default=0.0, ge=0, le=1,
        description="share of confirmed failures the challenger may detect less than it")
    false_positive_tolerance: float = Field(
        default=0.0, ge=0, le=1,
        description="share of labelled false positives the challenger may flag more than it")


class TrainingConfig(BaseModel):
    """Everything a training run needs besides its database connection and signing key."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(
        default=Path("data/training"),
        description="MLflow's sqlite store and artifacts live here unless tracking_uri is set")
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (e.g. http://mlflow:5000); default sqlite in data_dir")
    registry_uri: str | None = Field(
        default=None, description="MLflow model registry URI; default: the tracking URI")
    artifact_location: str | None = Field(
        default=None,
        description="artifact root of a new experiment (e.g. s3://bucket/mlflow); "
                    "default data_dir/artifacts")
    experiment: str = Field(default="smaint-models", min_length=1, description="MLflow experiment")
    model_prefix: str = Field(
        default="smaint-", description="registered model name is prefix + sensor profile")
    window: timedelta = Field(
        default=timedelta(days=7), gt=timedelta(0),
        description="data window when no start is given: the last this-long before the end")
    holdout_fraction: float = Field(
        default=0.2, gt=0, lt=0.9, description="last share of the data window held out")
    min_train_windows: int = Field(
        default=500, ge=10, description="fewer feature windows before the cut: profile skipped")
    min_heldout_windows: int = Field(
        default=100, ge=1, description="fewer feature windows after the cut: profile skipped")
    feature_warmup: int = Field(
        default=DEFAULT_WARMUP, ge=2, le=100_000,
        description="readings each device warms its feature state up with before it is scored")
    n_estimators: int = Field(default=100, ge=1, le=2000, description="trees per forest")
    max_samples: int = Field(default=256, ge=2, description="rows per tree")
    quantile: float = Field(
        default=1.0, gt=0.5, le=1.0,
        description="forest calibration: the training quantile its threshold lies beyond "
                    "(1.0: the most anomalous training reading; shared.anomaly)")
    seed: int = Field(default=0, ge=0, description="random seed of the forest")
    event_margin_s: float = Field(
        default=60.0, ge=0, le=86_400,
        description="an alert's labelled interval extends this far before and after it")
    alert_rate_factor: float = Field(
        default=3.0, ge=1.0, le=1000.0,
        description="a gateway rolls the model back when its alert rate exceeds this many "
                    "times the held-out anomaly rate (manifest alert_rate.max)")
    alert_rate_floor: float = Field(
        default=0.05, gt=0, le=1.0,
        description="alert_rate.max is never below this share of readings")
    signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 key that signs bundles of runs started through the API "
                    "(create one with `smaint cloud train-initial --key ...`)")
    gate: GatePolicy = Field(default_factory=GatePolicy)

    def resolved_tracking_uri(self) -> str:
        """The tracking URI to use: the configured one, else sqlite in ``data_dir``."""
        if self.tracking_uri:
            return self.tracking_uri
        # MLflow 3 refuses the file store; sqlite needs an absolute path to be cwd-proof.
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    def resolved_registry_uri(self) -> str:
        """The registry URI: the configured one, else the tracking URI."""
        return self.registry_uri or self.resolved_tracking_uri()

    def resolved_artifact_location(self) -> str:
        """Where a newly created experiment stores artifacts."""
        if self.artifact_location:
            return self.artifact_location
        return (self.data_dir / "artifacts").resolve().as_uri()

    def model_name(self, profile: str) -> str:
        """The registered model of a sensor profile."""
        return f"{self.model_prefix}{profile}"
