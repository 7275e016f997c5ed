"""What every panel page works with (no NiceGUI here: the gateway imports this module
before it knows whether the panel is enabled)."""

from __future__ import annotations

from dataclasses import dataclass

from edge.service import Gateway
from ui.panel.auth import PanelAuth


@dataclass
class Panel:
    """The running gateway, its panel password, and how often open views refresh."""

    gateway: Gateway
    auth: PanelAuth
    refresh_s: float = 2.0
    # A failed sign-in answers only after this pause, which slows guessing down.
    failed_sign_in_delay_s: float = 1.0
