"""What every console page works with (no NiceGUI here)."""

from __future__ import annotations

from dataclasses import dataclass

from ui.console.api import CloudApi
from ui.console.config import ConsoleConfig
from ui.console.sessions import Sessions


@dataclass
class Console:
    """The cloud API of this process, the signed-in browsers and the console's settings."""

    api: CloudApi
    sessions: Sessions
    config: ConsoleConfig
