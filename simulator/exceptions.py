"""Errors the device simulator raises on purpose."""

from __future__ import annotations

from shared.exceptions import SmaintError


class SimulatorError(SmaintError):
    """The simulator was misconfigured or could not reach its broker."""


class UnknownDeviceError(SimulatorError, KeyError):
    """A fault or command named a device the fleet does not have."""

    def __init__(self, device: str, known: list[str]) -> None:
        super().__init__(f"no simulated device {device!r}; known: {', '.join(known[:10])}")
        self.device = device
