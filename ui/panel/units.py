"""How the panel writes times, durations, rates and sizes (one way on every page)."""

from __future__ import annotations

import datetime as dt


def clock(ms: int | None) -> str:
    """Local date and time of an epoch-ms instant, to the second."""
    if ms is None:
        return "never"
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``4 d 3 h``."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def ago(ms: int | None, now_ms: int) -> str:
    """How long before ``now_ms`` the instant was (``never`` if None)."""
    if ms is None:
        return "never"
    return f"{duration((now_ms - ms) / 1000)} ago"


def size(n: float) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def number(x: float) -> str:
    """A measured value with about four significant digits."""
    return f"{x:.4g}"
