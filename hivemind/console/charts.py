"""Charts drawn on the server as SVG: one polyline per series, no script and
no third-party asset (the page re-fetches the fragment to update it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT, PAD = 440, 170, 12
COLOURS = ("#2f7de1", "#e8843a", "#3aa76d", "#b457c9")


@dataclass(frozen=True)
class Line:
    label: str
    points: Sequence[tuple[float, float]]  # (t, value)


def _fmt(value: float, unit: str) -> str:
    if unit == "B":
        for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} B"
    if unit == "B/s":
        return _fmt(value, "B") + "/s"
    return f"{value:.0f}{unit}" if abs(value) >= 10 else f"{value:.1f}{unit}"


def svg(title: str, lines: Sequence[Line], unit: str = "%", ymax: float | None = None, chart_id: str = "") -> str:
    """An SVG line chart; `ymax` fixes the scale (100 for percentages)."""
    everything = [p for line in lines for p in line.points]
    head = f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}"'
    head += f' data-chart="{escape(chart_id)}">' if chart_id else ">"
    parts = [head, f'<text class="chart-title" x="{PAD}" y="18">{escape(title)}</text>']
    if not everything:
        parts.append(
            f'<text class="chart-empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no samples yet</text></svg>'
        )
        return "".join(parts)
    t0 = min(p[0] for p in everything)
    t1 = max(p[0] for p in everything)
    span = max(t1 - t0, 1.0)
    top = ymax if ymax is not None else max(max(p[1] for p in everything) * 1.15, 1e-9)
    x0, x1, y0, y1 = PAD + 44, WIDTH - 10, HEIGHT - 22, 28
    for frac in (0.0, 0.5, 1.0):
        y = y0 - (y0 - y1) * frac
        parts.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{x0 - 4}" y="{y + 3:.1f}" text-anchor="end">{_fmt(top * frac, unit)}</text>')
    parts.append(f'<text class="axis" x="{x0}" y="{HEIGHT - 5}">{_ago(span)}</text>')
    parts.append(f'<text class="axis" x="{x1}" y="{HEIGHT - 5}" text-anchor="end">now</text>')
    for index, line in enumerate(lines):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(
            f"{x0 + (x1 - x0) * (t - t0) / span:.1f},{y0 - (y0 - y1) * min(v, top) / top:.1f}" for t, v in line.points
        )
        parts.append(
            f'<polyline class="series" data-series="{escape(line.label)}" data-points="{len(line.points)}" '
            f'fill="none" stroke="{colour}" stroke-width="1.8" points="{coords}"/>'
        )
        if line.points:
            last = _fmt(line.points[-1][1], unit)
            parts.append(
                f'<text class="legend" x="{x1 - 120 * (len(lines) - index - 1)}" y="18" text-anchor="end" '
                f'fill="{colour}">{escape(line.label)} {last}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _ago(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h ago"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds:.0f} s ago"


def rates(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Per-second rates of a growing counter (network bytes); a reset gives no point."""
    out = []
    for (ta, va), (tb, vb) in zip(points, points[1:]):
        if tb > ta and vb >= va:
            out.append((tb, (vb - va) / (tb - ta)))
    return out
