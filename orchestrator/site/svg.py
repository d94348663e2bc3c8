"""Charts as SVG text (no matplotlib: a year of a fleet is hundreds of charts, drawn in
milliseconds each): a sparkline for the index, a trend per host, cell and metric.

A trend: nights on x (UTC dates), the metric in its unit on y; each run's median with its exact
95 % interval; the host's own noise band per segment (between change points and environment
changes: the segment's median +- 2 robust SDs of its run medians); a change point as a shaded
range from the last good run to the first bad one, labelled with its statistics; an
environment change as a dashed line.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

Scale = Callable[[float], float]

W, H = 640, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 22, 34


@dataclass(frozen=True)
class Point:
    night: str  # YYYY-MM-DD
    median: float
    low: float
    high: float


@dataclass(frozen=True)
class Range:
    """A shaded x range from one night to another: a change point."""

    begin: str
    end: str
    label: str
    detail: str


@dataclass(frozen=True)
class Band:
    begin: str
    end: str
    low: float
    high: float


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _day(night: str) -> float:
    try:
        return float(date.fromisoformat(night).toordinal())
    except ValueError:
        return 0.0


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def sparkline(values: Sequence[float], marked: Sequence[int] = (), width: int = 120,
              height: int = 28) -> str:
    """A line of the values in order; marked indices (a change point's first run) in red."""
    shown = _finite(values)
    lo, hi = (min(shown), max(shown)) if shown else (0.0, 1.0)
    span = (hi - lo) or 1.0
    step = (width - 4) / max(1, len(values) - 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return 2 + i * step, height - 3 - (v - lo) / span * (height - 6)

    pts = " ".join(f"{x:.1f},{y:.1f}" for i, v in enumerate(values) if v is not None
                   and math.isfinite(v) for x, y in [xy(i, v)])
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#c85200"/>'
                   for i in marked if 0 <= i < len(values) and math.isfinite(values[i])
                   for x, y in [xy(i, values[i])])
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><polyline fill="none" stroke="#1170aa" '
            f'stroke-width="1.2" points="{pts}"/>{dots}</svg>')


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    raw = (hi - lo) / n or 1.0
    unit = 10 ** math.floor(math.log10(raw))
    step = next(m * unit for m in (1, 2, 2.5, 5, 10) if m * unit >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(n + 2) if first + i * step <= hi + 1e-12 * abs(hi)]


def trend(points: Sequence[Point], bands: Sequence[Band], ranges: Sequence[Range],
          markers: Sequence[tuple[str, str]], title: str, ylabel: str) -> str:
    """markers: (night, what changed) of the host's environment."""
    xs = [_day(p.night) for p in points]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    ys = _finite([v for p in points for v in (p.median, p.low, p.high)]
                 + [v for b in bands for v in (b.low, b.high)])
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = (y1 - y0) * 0.08 or abs(y0) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad

    def sx(day: float) -> float:
        return LEFT + (day - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def sy(v: float) -> float:
        return TOP + (y1 - v) / (y1 - y0) * (H - TOP - BOTTOM)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="10">',
             f'<title>{_esc(title)}</title><rect width="{W}" height="{H}" fill="white"/>']
    parts += _axes(x0, x1, y0, y1, sx, sy, ylabel)
    for band in bands:
        top, bottom = sy(band.high), sy(band.low)
        parts.append(f'<rect x="{sx(_day(band.begin)):.1f}" y="{top:.1f}" width="'
                     f'{max(1.0, sx(_day(band.end)) - sx(_day(band.begin))):.1f}" height="'
                     f'{max(0.5, bottom - top):.1f}" fill="#a3cce9" opacity="0.45"/>')
    for r in ranges:
        a, b = sx(_day(r.begin)), sx(_day(r.end))
        parts.append(f'<rect class="step" x="{a:.1f}" y="{TOP}" width="{max(2.0, b - a):.1f}" '
                     f'height="{H - TOP - BOTTOM}" fill="#c85200" opacity="0.25">'
                     f'<title>{_esc(r.detail)}</title></rect>'
                     f'<text x="{b + 2:.1f}" y="{TOP + 10}" fill="#c85200">{_esc(r.label)}</text>')
    for when, what in markers:
        x = sx(_day(when))
        parts.append(f'<line class="env" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" '
                     f'y2="{H - BOTTOM}" stroke="#6a3d9a" stroke-dasharray="4 3">'
                     f'<title>{_esc(when + ": " + what)}</title></line>'
                     f'<text x="{x + 2:.1f}" y="{H - BOTTOM - 3}" fill="#6a3d9a">env</text>')
    parts += _series(points, sx, sy, xs)
    parts.append(f'<text x="{LEFT}" y="14" font-size="11">{_esc(title)}</text></svg>')
    return "".join(parts)


def _axes(x0: float, x1: float, y0: float, y1: float, sx: Scale, sy: Scale,
          ylabel: str) -> list[str]:
    out = [f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#444"/>',
           f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" '
           f'stroke="#444"/>']
    for v in _ticks(y0, y1):
        out.append(f'<line x1="{LEFT - 3}" x2="{W - RIGHT}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" '
                   f'stroke="#ddd"/><text x="{LEFT - 5}" y="{sy(v) + 3:.1f}" '
                   f'text-anchor="end">{v:.4g}</text>')
    for i in range(4):
        day = x0 + (x1 - x0) * i / 3
        label = date.fromordinal(max(1, round(day))).isoformat()
        anchor = ("start", "middle", "middle", "end")[i]  # the outer dates stay inside
        out.append(f'<text x="{sx(day):.1f}" y="{H - BOTTOM + 13}" text-anchor="{anchor}">'
                   f'{label}</text>')
    out.append(f'<text x="{(LEFT + W) / 2:.0f}" y="{H - 4}" text-anchor="middle">'
               f'night (UTC)</text>')
    out.append(f'<text transform="translate(12 {(TOP + H - BOTTOM) / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle">{_esc(ylabel)}</text>')
    return out


def _series(points: Sequence[Point], sx: Scale, sy: Scale, xs: list[float]) -> list[str]:
    out = []
    bars = "".join(f"M{sx(x):.1f} {sy(p.low):.1f}V{sy(p.high):.1f}"
                   for x, p in zip(xs, points, strict=True)
                   if math.isfinite(p.low) and math.isfinite(p.high))
    if bars:
        out.append(f'<path d="{bars}" stroke="#7b848f" stroke-width="1"/>')
    line = " ".join(f"{sx(x):.1f},{sy(p.median):.1f}" for x, p in zip(xs, points, strict=True)
                    if math.isfinite(p.median))
    out.append(f'<polyline fill="none" stroke="#1170aa" stroke-width="1.2" points="{line}"/>')
    if len(points) <= 60:  # dots while they can be told apart
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(p.median):.1f}" r="2.2" fill="#1170aa"/>'
                for x, p in zip(xs, points, strict=True) if math.isfinite(p.median)]
    return out

