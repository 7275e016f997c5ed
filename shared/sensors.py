"""Sensor profiles: which metrics a device type reports, their units and physical ranges.

A reading outside its metric's physical range is not an anomaly, it is a broken sensor or a
corrupt message: the gateway dead-letters it instead of scoring it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    """One measured quantity of a sensor profile."""

    name: str
    unit: str
    low: float
    high: float
    description: str

    def in_range(self, value: float) -> bool:
        """True when ``value`` is physically possible for this metric."""
        return self.low <= value <= self.high


@dataclass(frozen=True, slots=True)
class SensorProfile:
    """A device type: the metrics it reports and its nominal sample interval."""

    name: str
    description: str
    metrics: tuple[Metric, ...]
    sample_interval_s: float

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metric names in their canonical order (the feature order for models)."""
        return tuple(m.name for m in self.metrics)

    def metric(self, name: str) -> Metric:
        """The metric called ``name``; KeyError if the profile has none."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)


PROFILES: dict[str, SensorProfile] = {
    p.name: p
    for p in (
        SensorProfile(
            name="motor",
            description="Electric motor: housing temperature, vibration RMS, phase current",
            metrics=(
                Metric("temperature_c", "°C", -40.0, 200.0, "housing temperature"),
                Metric("vibration_rms_g", "g", 0.0, 50.0, "accelerometer RMS over the window"),
                Metric("current_a", "A", 0.0, 500.0, "phase current RMS"),
            ),
            sample_interval_s=1.0,
        ),
        SensorProfile(
            name="mill",
            description="Milling machine spindle (AI4I 2020 quantities)",
            metrics=(
                Metric("air_temperature_k", "K", 230.0, 350.0, "ambient air temperature"),
                Metric("process_temperature_k", "K", 230.0, 400.0, "process temperature"),
                Metric("rotational_speed_rpm", "rpm", 0.0, 30000.0, "spindle speed"),
                Metric("torque_nm", "N·m", 0.0, 500.0, "spindle torque"),
                Metric("tool_wear_min", "min", 0.0, 10000.0, "accumulated tool use"),
            ),
            sample_interval_s=1.0,
        ),
        SensorProfile(
            name="turbofan",
            description="Turbofan engine health sensors (NASA C-MAPSS quantities)",
            metrics=(
                Metric("t24_r", "°R", 0.0, 2000.0, "total temperature at LPC outlet"),
                Metric("t30_r", "°R", 0.0, 3000.0, "total temperature at HPC outlet"),
                Metric("t50_r", "°R", 0.0, 3000.0, "total temperature at LPT outlet"),
                Metric("p30_psia", "psia", 0.0, 1000.0, "total pressure at HPC outlet"),
                Metric("nf_rpm", "rpm", 0.0, 10000.0, "physical fan speed"),
                Metric("nc_rpm", "rpm", 0.0, 20000.0, "physical core speed"),
                Metric("ps30_psia", "psia", 0.0, 1000.0, "static pressure at HPC outlet"),
                Metric("phi", "pps/psi", 0.0, 1000.0, "ratio of fuel flow to Ps30"),
            ),
            sample_interval_s=1.0,
        ),
    )
}


def profile(name: str) -> SensorProfile:
    """The profile called ``name``; KeyError with the known names if there is none."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown sensor type {name!r}; known: {sorted(PROFILES)}") from None
