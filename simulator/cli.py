"""``smaint simulate``: run a simulated sensor fleet against an MQTT broker."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shared.exceptions import SmaintError
from simulator.faults import FAULT_KINDS
from simulator.fleet import Fleet
from simulator.provisioning import read_login


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A ``--fault DEVICE:KIND[:AFTER_S[:DURATION_S]]`` argument."""

    device: str
    kind: str
    after_s: float = 0.0
    duration_s: float | None = None


def parse_fault(text: str) -> FaultSpec:
    """Parse ``DEVICE:KIND[:AFTER_S[:DURATION_S]]``; argparse error if malformed."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or parts[1] not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected DEVICE:KIND[:AFTER_S[:DURATION_S]], KIND one of "
            f"{', '.join(FAULT_KINDS)}"
        )
    try:
        after = float(parts[2]) if len(parts) > 2 else 0.0
        duration = float(parts[3]) if len(parts) > 3 else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: AFTER_S and DURATION_S are seconds") from None
    return FaultSpec(parts[0], parts[1], after, duration)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smaint simulate",
        description="Simulated ESP32 sensors publishing telemetry at QoS 1. Faults injected "
        "with --fault are SIMULATED and listed in the final summary as ground truth.",
    )
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker host (default %(default)s)")
    p.add_argument("--port", type=int, default=1883, help="MQTT broker port (default %(default)s)")
    p.add_argument("--devices", type=int, default=10, help="number of devices (default 10)")
    p.add_argument("--rate", type=float, default=1.0, help="samples/s per device (default 1)")
    p.add_argument(
        "--profile",
        choices=["motor", "mill", "turbofan", "mix"],
        default="mix",
        help="sensor profile, or mix to cycle through all three (default mix)",
    )
    p.add_argument(
        "--source",
        choices=["replay", "synthetic"],
        default="replay",
        help="replay public data sets (NAB, AI4I, C-MAPSS) or synthetic baselines",
    )
    p.add_argument("--seconds", type=float, default=0.0, help="run time; 0 = until Ctrl-C")
    p.add_argument(
        "--fault",
        type=parse_fault,
        action="append",
        default=[],
        metavar="DEVICE:KIND[:AFTER_S[:DURATION_S]]",
        help=f"inject a SIMULATED fault ({', '.join(FAULT_KINDS)}); repeatable",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed for repeatable runs")
    p.add_argument("--id-prefix", default="", help="prefix for device ids, e.g. 'lab1-'")
    p.add_argument("--threads", type=int, default=1, help="driver threads (default 1)")
    p.add_argument(
        "--provisioning-dir", type=Path, default=None,
        help="directory of <device id>.json provisioning files (`smaint provision device ID "
        "--out DIR/ID.json`): each device logs in with its own account, over TLS; use the "
        "broker's device port (--port 8883)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str]) -> int:
    """Run the simulator; prints progress to stderr and a JSON summary to stdout."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        fleet = Fleet(
            args.host,
            args.port,
            args.devices,
            args.rate,
            args.profile,
            seed=args.seed,
            source=args.source,
            id_prefix=args.id_prefix,
            threads=args.threads,
            login=(lambda d: read_login(args.provisioning_dir, d))
            if args.provisioning_dir else None,
        )
        for spec in args.fault:
            fleet.inject(spec.device, spec.kind, after_s=spec.after_s, seconds=spec.duration_s)
        fleet.start()
    except (SmaintError, KeyError) as exc:
        print(f"smaint simulate: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    last = 0
    try:
        while args.seconds <= 0 or time.monotonic() - started < args.seconds:
            wake = started + last + 1
            if args.seconds > 0:
                wake = min(wake, started + args.seconds)
            time.sleep(max(0.0, wake - time.monotonic()))
            elapsed = time.monotonic() - started
            if int(elapsed) > last:
                last = int(elapsed)
                if not args.quiet:
                    s = fleet.stats()
                    print(
                        f"t={last}s published={s['published']} sent={s['sent']} "
                        f"pending={s['pending']} skipped={s['skipped']} lagged={s['lagged']} "
                        f"connected={s['connected']}/{s['devices']} "
                        f"rate={s['published'] / max(elapsed, 1e-9):.0f}/s",
                        file=sys.stderr,
                        flush=True,
                    )
    except KeyboardInterrupt:
        pass
    summary = fleet.stop()
    print(json.dumps(summary))
    return 0 if summary["pending"] == 0 else 1
