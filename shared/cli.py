"""The ``smaint`` command: one entry point for every part of the system."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``smaint <command>``."""
    args = sys.argv[1:] if argv is None else argv
    print("usage: smaint <command>", args)
    return 0
