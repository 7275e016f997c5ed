"""The console's settings as the cloud hands them over (no NiceGUI here: the cloud's start-up
builds this before it knows whether the console is installed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConsoleConfig:
    """How long a sign-in lasts and how often open views refresh.

    The cloud fills it from ``SMAINT_CLOUD_CONSOLE__SESSION_HOURS`` and
    ``SMAINT_CLOUD_CONSOLE__REFRESH_S`` (cloud/settings.py, section ``console``).
    """

    environment: str = "development"
    session_s: float = 8 * 3600
    refresh_s: float = 5.0
    # The "where it runs" bar: its checks are cached by the API for a few seconds anyway.
    status_refresh_s: float = 10.0
    # A failed sign-in answers only after this pause, which slows guessing down.
    failed_sign_in_delay_s: float = 1.0
