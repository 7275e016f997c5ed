"""A tiny inline SVG line of a device's last readings, anomalous ones marked in red."""

from __future__ import annotations

from collections.abc import Sequence

WIDTH, HEIGHT, PAD = 160, 32, 3


def svg(values: Sequence[float], anomalous: Sequence[bool], title: str) -> str:
    """An SVG polyline of ``values`` (oldest first) scaled to fit; red dots where anomalous.

    Only numbers and an escaped title go into the markup, so it is safe to render as HTML.
    """
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    step = (WIDTH - 2 * PAD) / (len(values) - 1)
    pts = [(PAD + i * step, HEIGHT - PAD - (v - lo) / span * (HEIGHT - 2 * PAD))
           for i, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#c62828"/>'
                   for (x, y), bad in zip(pts, anomalous, strict=True) if bad)
    safe = (title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))
    return (f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'role="img" aria-label="{safe}"><title>{safe}</title>'
            f'<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="1.5"/>'
            f"{dots}</svg>")
