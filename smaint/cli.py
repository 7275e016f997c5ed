"""The ``smaint`` command: one entry point for every part of the system.

Each part is imported only when its subcommand runs, so ``smaint gateway`` on a Pi never
imports the cloud's dependencies (which the edge install does not have).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import cast

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("devstack.demo", "run the whole system on this machine and show every hop"),
    "gateway": ("smaint.gateway",
                "the edge gateway service (ingest, store, score, alert, sync, web panel)"),
    "panel": ("ui.panel.cli", "the gateway web panel's password (hash it, set it)"),
    "provision": ("smaint.provision",
                  "broker accounts, site CA and device provisioning files (on the gateway)"),
    "cloud": ("smaint.cloud", "the cloud API service, its web console and its administration"),
    "simulate": ("simulator.cli", "a fleet of simulated ESP32 sensor nodes"),
    "contract": ("smaint.contract", "write or check the wire contract's documents (docs/contract)"),
    "train": ("cloud.training.cli", "retrain models from cloud data, track in MLflow, gate"),
    "drift": ("cloud.drift.cli", "check feature drift against each model, list drift events"),
    "eval": ("evaluation.cli", "measure the detector on NAB and labelled failures (checkout)"),
}

USAGE = "usage: smaint <command> [options]\n\ncommands:\n" + "\n".join(
    f"  {name:<10}{help_}" for name, (_, help_) in COMMANDS.items()
)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``smaint <command> ...`` to the part that implements it."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"smaint: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"smaint {name}: missing dependency {exc.name!r}; install the matching extra, "
            f"e.g. pip install '.[edge]' or '.[cloud]'",
            file=sys.stderr,
        )
        return 2
    entry = cast(Callable[[list[str]], int], module.main)
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
