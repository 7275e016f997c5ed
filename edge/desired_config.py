"""Apply the cloud's desired config (carried by every sync answer) at run time.

Each known setting (shared.schemas.GATEWAY_CONFIG_KEYS) has a setter here that changes the
running part in place: the statistical scorer's threshold, the alert tracker's open/resolve
counts, the sync interval. A newer ``config_version`` is checked against the shared list
again; a value that fails the check or its setter is refused with the reason and the others
are still applied. A setting the cloud no longer names goes back to the local settings' value.
What was applied is stored (table applied_config) and applied again when the gateway starts,
and reported with every upload (GatewayState.config_version / config / config_refused).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edge.store import Store, now_ms
from shared.schemas import ConfigValue, DesiredState, check_gateway_config

log = logging.getLogger(__name__)

Setter = Callable[[ConfigValue], None]

_REASON_MAX = 500  # GatewayState.config_refused values are bounded


@dataclass(frozen=True, slots=True)
class Knob:
    """One setting the cloud may change: its local (settings) value and how to change it."""

    default: ConfigValue
    setter: Setter


@dataclass(slots=True)
class AppliedConfig:
    """The desired config as applied: its version, the values applied, the values refused."""

    version: int | None = None
    applied: dict[str, ConfigValue] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


class ConfigApplier:
    """Applies desired config versions to the running gateway and remembers what it applied."""

    def __init__(self, store: Store, knobs: Mapping[str, Knob]) -> None:
        self.store = store
        self.knobs = dict(knobs)
        self.current = AppliedConfig()

    def load(self) -> AppliedConfig:
        """Apply again what was applied before a restart (nothing if no config came yet)."""
        row = self.store.conn.execute(
            "SELECT config_version, applied, refused FROM applied_config WHERE id = 1"
        ).fetchone()
        if row is not None:
            applied, refused = self._apply(json.loads(row[1]))
            self.current = AppliedConfig(row[0], applied, {**json.loads(row[2]), **refused})
            log.info("desired config %d applied again after start: %s", row[0], applied)
        return self.current

    def on_desired(self, desired: DesiredState) -> None:
        """Apply the desired config if its version is newer than the one applied."""
        if self.current.version is not None and desired.config_version <= self.current.version:
            return
        applied, refused = self._apply(desired.config)
        self.current = AppliedConfig(desired.config_version, applied, refused)
        with self.store.transaction():
            self.store.conn.execute(
                "INSERT INTO applied_config (id, config_version, applied, refused, applied_ms)"
                " VALUES (1, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                " config_version = excluded.config_version, applied = excluded.applied,"
                " refused = excluded.refused, applied_ms = excluded.applied_ms",
                (desired.config_version, json.dumps(applied), json.dumps(refused), now_ms()))
        if refused:
            log.warning("desired config %d: refused %s; applied %s", desired.config_version,
                        refused, applied)
        else:
            log.info("desired config %d applied: %s", desired.config_version, applied)

    def _apply(self, config: Mapping[str, object]) -> tuple[dict[str, ConfigValue],
                                                            dict[str, str]]:
        good, refused = check_gateway_config(dict(config))
        applied: dict[str, ConfigValue] = {}
        for name, knob in self.knobs.items():
            value = good.get(name, knob.default)
            try:
                knob.setter(value)
            except ValueError as exc:
                # This part cannot run the value: it keeps what it had, the others go on.
                refused[name] = f"not applied: {exc}"
                continue
            if name in good:
                applied[name] = value
        for name in good.keys() - self.knobs.keys():
            refused[name] = "this gateway version cannot apply it"
        return applied, {k[:200]: v[:_REASON_MAX] for k, v in refused.items()}
