"""A training window from the cloud database: readings per device and operator-labelled events.

Readings are read per sensor profile as one time-ordered series per device, a missing metric
left missing (NaN), which ``shared.features.series_features`` treats exactly as the gateway's
``DeviceFeatures`` treats a reading without that metric, so the features here are those the
gateway computed. Alerts that operators resolved
as ``confirmed_failure`` or ``false_positive`` become labelled time intervals on their device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt

from cloud.db.pool import Conn
from shared.features import FeatureSpec, series_features
from shared.sensors import profile as get_profile

log = logging.getLogger(__name__)

Label = Literal["confirmed_failure", "false_positive"]
_FETCH = 10_000


@dataclass(frozen=True)
class DeviceSeries:
    """One device's readings in the window: times (epoch ms) and values in metric order."""

    device: str
    ts_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


@dataclass(frozen=True)
class ProfileData:
    """The readings of one sensor profile in a window, per device."""

    profile: str
    metrics: tuple[str, ...]
    series: list[DeviceSeries]

    @property
    def rows(self) -> int:
        """Readings in all series."""
        return sum(len(s.ts_ms) for s in self.series)

    def span_ms(self) -> tuple[int, int]:
        """Earliest and latest reading time; ValueError when there are no readings."""
        if not self.rows:
            raise ValueError(f"no {self.profile} readings")
        return (min(int(s.ts_ms[0]) for s in self.series if len(s.ts_ms)),
                max(int(s.ts_ms[-1]) for s in self.series if len(s.ts_ms)))

    def rows_before(self, cutoff_ms: int) -> int:
        """Readings stamped before ``cutoff_ms``."""
        return sum(int(np.searchsorted(s.ts_ms, cutoff_ms)) for s in self.series)


@dataclass(frozen=True)
class LabelledEvent:
    """An alert an operator resolved with a decision, as a labelled interval of its device."""

    gateway: str
    alert_id: str
    device: str
    start_ms: int
    end_ms: int
    label: Label


@dataclass(frozen=True)
class FeatureWindows:
    """Feature vectors of every full window, with the time and device of its newest reading."""

    x: npt.NDArray[np.float32]
    ts_ms: npt.NDArray[np.int64]
    device: npt.NDArray[np.str_]
    # The metric values of the reading each row describes (NaN where it lacked one).
    raw: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def select(self, mask: npt.NDArray[np.bool_]) -> FeatureWindows:
        """The windows where ``mask`` is true."""
        return FeatureWindows(self.x[mask], self.ts_ms[mask], self.device[mask], self.raw[mask])

    def in_events(self, events: list[LabelledEvent], label: Label) -> npt.NDArray[np.bool_]:
        """True for windows whose newest reading lies in an event with ``label``."""
        mask = np.zeros(len(self), dtype=bool)
        for e in events:
            if e.label == label:
                mask |= ((self.device == e.device) & (self.ts_ms >= e.start_ms)
                         & (self.ts_ms <= e.end_ms))
        return mask


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def load_profile(conn: Conn, profile: str, since: datetime, until: datetime) -> ProfileData:
    """Readings of ``profile`` in ``[since, until)``: one series per device, gaps as NaN."""
    metrics = get_profile(profile).metric_names
    columns = ", ".join("(metrics->>%s)::float8" for _ in metrics)
    # The metric values are extracted in SQL: no jsonb document is parsed in Python. Only the
    # sensors' stream: a technician's manual entry is not a sample of it, and a SIMULATED
    # fault is not the machine's behaviour.
    sql = (f"SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, {columns} FROM readings"
           " WHERE type = %s AND ts >= %s AND ts < %s AND origin = 'sensor'"
           " ORDER BY device_id, ts, boot_id, seq")
    devices: dict[str, list[tuple[object, ...]]] = {}
    with conn.transaction(), conn.cursor(name="training_window") as cur:
        cur.itersize = _FETCH
        cur.execute(sql, (*metrics, profile, since, until))
        for row in cur:
            devices.setdefault(str(row[0]), []).append(row[1:])
    series = []
    for device, rows in devices.items():
        ts = np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=len(rows))  # type: ignore[call-overload]
        values = np.array([[np.nan if v is None else v for v in r[1:]] for r in rows],
                          dtype=np.float64)
        some = ~np.isnan(values).all(axis=1)
        series.append(DeviceSeries(device, ts[some], values[some]))
    data = ProfileData(profile, metrics, series)
    log.info("%s: %d readings of %d devices in [%s, %s)", profile, data.rows, len(series),
             since.isoformat(), until.isoformat())
    return data


def profiles_in_window(conn: Conn, since: datetime, until: datetime) -> list[str]:
    """The sensor profiles (reading types) that have readings in the window."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT DISTINCT type FROM readings WHERE ts >= %s AND ts < %s ORDER BY 1",
            (since, until)).fetchall()
    return [str(r[0]) for r in rows]


def load_events(conn: Conn, since: datetime, until: datetime,
                margin: timedelta) -> list[LabelledEvent]:
    """Alerts resolved as confirmed failure or false positive that overlap the window.

    An event spans from its alert's opening to the gateway's clearing of it (its opening if
    it never cleared), widened by ``margin`` on both sides: the readings that drove an alert
    lie just before it opened.
    """
    with conn.transaction():
        rows = conn.execute(
            "SELECT a.gateway_id, a.alert_id, a.device_id, a.opened_at,"
            " coalesce(a.resolved_at, a.opened_at), r.decision"
            " FROM alerts a JOIN alert_reviews r USING (gateway_id, alert_id)"
            " WHERE r.status = 'resolved' AND r.decision IN ('confirmed_failure', 'false_positive')"
            " AND a.opened_at - %(margin)s < %(until)s"
            " AND coalesce(a.resolved_at, a.opened_at) + %(margin)s >= %(since)s"
            " ORDER BY a.opened_at, a.gateway_id, a.alert_id",
            {"since": since, "until": until, "margin": margin}).fetchall()
    pad = int(margin.total_seconds() * 1000)
    return [LabelledEvent(gateway=r[0], alert_id=r[1], device=r[2], start_ms=_ms(r[3]) - pad,
                          end_ms=_ms(r[4]) + pad, label=r[5]) for r in rows]


def feature_windows(data: ProfileData, spec: FeatureSpec) -> FeatureWindows:
    """Feature windows of every device series, computed by ``shared.features`` for ``spec``.

    ValueError when the spec needs a metric this profile's readings do not carry.
    """
    missing = [m for m in spec.metrics if m not in data.metrics]
    if missing:
        raise ValueError(f"feature spec needs metrics {missing} that {data.profile} lacks")
    cols = [data.metrics.index(m) for m in spec.metrics]
    xs, ts, devs, raws = [], [], [], []
    for s in data.series:
        values = s.values[:, cols]
        x = series_features(values, spec)
        if len(x):
            xs.append(x)
            ts.append(s.ts_ms[spec.warmup:])
            devs.append(np.full(len(x), s.device))
            raws.append(values[spec.warmup:])
    if not xs:
        return FeatureWindows(np.empty((0, len(spec.names)), dtype=np.float32),
                              np.empty(0, dtype=np.int64), np.empty(0, dtype=np.str_),
                              np.empty((0, len(spec.metrics)), dtype=np.float64))
    return FeatureWindows(np.concatenate(xs), np.concatenate(ts), np.concatenate(devs),
                          np.concatenate(raws))


def default_window(until: datetime | None, since: datetime | None,
                   length: timedelta) -> tuple[datetime, datetime]:
    """The window to train on: up to ``until`` (now), from ``since`` (``length`` before)."""
    # A naive time is UTC: psycopg would otherwise read it in the server's time zone.
    end = _aware(until) if until else datetime.now(UTC)
    start = _aware(since) if since else end - length
    if start >= end:
        raise ValueError(f"empty window: since {start.isoformat()} is not before "
                         f"until {end.isoformat()}")
    return start, end


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
