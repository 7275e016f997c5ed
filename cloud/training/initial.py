"""The first models: one per sensor profile, trained on normal stretches of the bundled data.

The series come from the simulator's replay sources (simulator.signals), so the models
see exactly what simulated devices publish, through the same feature code the gateway runs.
Only normal operation is used:

- ``motor``: NAB machine temperature outside NAB's labelled anomaly windows (the motor's
  vibration and current are synthesised from the temperature by the replay, seeded);
- ``mill``: AI4I 2020 rows without a machine failure, in file order;
- ``turbofan``: the first half of each C-MAPSS FD001 engine's life (it degrades to failure
  after that).
"""

from __future__ import annotations

import csv
import logging
import os
import random
import time
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cloud.training.train import train_bundle
from shared.bundle import generate_key, load_private_key, public_key_text
from simulator.signals import (
    AI4I_COLUMNS,
    AI4I_FILE,
    NAB_FILE,
    MotorReplay,
    cmapss_units,
    nab_machine_temperature_f,
)

log = logging.getLogger(__name__)

Series = npt.NDArray[np.float64]

# NAB v1.1 labels/combined_windows.json for realKnownCause/machine_temperature_system_failure.
NAB_ANOMALY_WINDOWS = (
    ("2013-12-10 06:25:00", "2013-12-12 05:35:00"),
    ("2013-12-15 17:50:00", "2013-12-17 17:00:00"),
    ("2014-01-27 14:20:00", "2014-01-29 13:30:00"),
    ("2014-02-07 14:55:00", "2014-02-09 14:05:00"),
)
PUBLIC_KEY_FILE = "trusted_keys.txt"


def _data_text(name: str, encoding: str = "utf-8") -> list[str]:
    path = resources.files("simulator").joinpath("data").joinpath(name)
    return path.read_text(encoding=encoding).splitlines()


def motor_series(max_rows: int, seed: int = 0) -> list[Series]:
    """Normal stretches of the motor replay, split at NAB's anomaly windows."""
    stamps = [datetime.fromisoformat(r["timestamp"]) for r in csv.DictReader(_data_text(NAB_FILE))]
    windows = [(datetime.fromisoformat(a), datetime.fromisoformat(b))
               for a, b in NAB_ANOMALY_WINDOWS]
    normal = [not any(a <= t <= b for a, b in windows) for t in stamps]
    n = len(nab_machine_temperature_f())
    replay = MotorReplay(0, random.Random(seed))
    rows = [replay.next() for _ in range(n)]
    names = replay.profile.metric_names
    out: list[Series] = []
    start: int | None = None
    for i, ok in enumerate([*normal, False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            out.append(np.array([[rows[j][m] for m in names] for j in range(start, i)]))
            start = None
    return _cap(out, max_rows)


def mill_series(max_rows: int) -> list[Series]:
    """AI4I rows without a machine failure, in file order, as one series."""
    reader = csv.DictReader(_data_text(AI4I_FILE, encoding="utf-8-sig"))
    order = list(AI4I_COLUMNS)
    rows = [[float(r[AI4I_COLUMNS[m]]) for m in order] for r in reader
            if r["Machine failure"] == "0"]
    return _cap([np.array(rows)], max_rows)


def turbofan_series(max_rows: int) -> list[Series]:
    """The healthy first half of every C-MAPSS FD001 engine, one series per engine."""
    return _cap([np.array(unit[:len(unit) // 2]) for unit in cmapss_units()], max_rows)


def _cap(series: list[Series], max_rows: int) -> list[Series]:
    """Whole series (then a head of the last one) until ``max_rows`` rows: bounds training time."""
    out: list[Series] = []
    left = max_rows
    for s in series:
        if left <= 0:
            break
        out.append(s[:left])
        left -= len(out[-1])
    return out


SERIES: dict[str, Callable[[int], list[Series]]] = {
    "motor": motor_series,
    "mill": mill_series,
    "turbofan": turbofan_series,
}


def _write_atomically(path: Path, data: bytes) -> None:
    """Write then rename, so a gateway polling the directory never reads half a bundle."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def train_initial(out_dir: Path, key_path: Path, *, max_rows: int = 25_000,
                  n_estimators: int = 100, profiles: tuple[str, ...] = tuple(SERIES)
                  ) -> dict[str, str]:
    """Train and sign one bundle per profile into ``out_dir``; returns profile -> version.

    The signing key is read from ``key_path`` (created if missing); its public key is written
    to ``out_dir/trusted_keys.txt`` for the gateway's ``model_trusted_keys_file``.
    """
    key = load_private_key(key_path) if key_path.exists() else None
    if key is None:
        generate_key(key_path)
        key = load_private_key(key_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    versions: dict[str, str] = {}
    stamp = int(time.time())
    for name in profiles:
        t0 = time.perf_counter()
        series = SERIES[name](max_rows)
        manifest, bundle = train_bundle(
            name, series, key, n_estimators=n_estimators,
            version=f"{name}-initial-{stamp}",
            extra={"data": {"motor": "NAB machine temperature, normal windows",
                            "mill": "AI4I 2020, rows without failure",
                            "turbofan": "C-MAPSS FD001, first half of each engine"}[name]})
        _write_atomically(out_dir / f"{name}.smb", bundle)
        versions[name] = manifest.version
        log.info("trained %s on %d rows in %.1f s", manifest.version,
                 sum(len(s) for s in series), time.perf_counter() - t0)
    (out_dir / PUBLIC_KEY_FILE).write_text(public_key_text(key.public_key()) + "\n")
    return versions
