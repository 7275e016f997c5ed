"""Drift settings: how often and over which window to check, when a shift counts as drift."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DriftConfig(BaseModel):
    """The ``drift`` section of the cloud settings (``SMAINT_CLOUD_DRIFT__*``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False, description="check drift periodically in the background job worker")
    check_every_s: float = Field(
        default=3600.0, ge=10, description="seconds between periodic drift checks")
    window: timedelta = Field(
        default=timedelta(hours=6), gt=timedelta(0),
        description="recent readings compared with the training reference")
    psi_threshold: float = Field(
        default=0.25, gt=0, description="a feature whose PSI exceeds this has moved")
    min_windows: int = Field(
        default=200, ge=10, description="fewer recent feature windows of a device: not checked")
    cooldown: timedelta = Field(
        default=timedelta(hours=24), ge=timedelta(0),
        description="a device, profile and model drift again only after this (one episode)")
    retrain: bool = Field(default=True, description="queue a retraining on a drift event")
    retrain_window: timedelta = Field(
        default=timedelta(days=7), gt=timedelta(0),
        description="data a drift-triggered retraining sees, up to the drift check's end")
    signing_key: Path | None = Field(
        default=None, description="Ed25519 key file that signs retrained bundles "
                                  "(required for retraining)")
