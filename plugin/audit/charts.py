"""Small inline SVG charts for the audit report: horizontal bars, a 100% stacked bar, a trend.

Plain SVG strings with inline attributes (no script, no fonts, no network). Every text that
comes from data is escaped; every mark carries a ``<title>`` so a pointer shows its numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    colour: str
    note: str = ""  # shown in the tooltip


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[int]
    colour: str
    kind: str = "line"  # "line" or "column"


def _nice_max(value: int) -> int:
    if value <= 5:
        return 5
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        top = int(step * magnitude)
        if top >= value:
            return top
    return value


def _fmt(value: int) -> str:
    return f"{value:,}"


def bar_chart(
    bars: Sequence[Bar], *, width: int = 960, label_width: int = 230, css: str = ""
) -> str:
    """Horizontal bars, one row each, the value printed at the end of the bar."""
    row = 24
    height = max(1, len(bars)) * row + 8
    plot = width - label_width - 70
    top = max((b.value for b in bars), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart bars {escape(css)}" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" {FONT} '
        f'font-size="12">'
    ]
    if not bars:
        parts.append('<text x="0" y="16" fill="#5f6368">Nothing to show.</text>')
    for index, bar in enumerate(bars):
        y = 4 + index * row
        length = max(2.0, plot * bar.value / top) if bar.value else 0.0
        tooltip = f"{bar.label}: {_fmt(bar.value)}" + (f" — {bar.note}" if bar.note else "")
        parts.append(
            f'<g class="bar-row"><title>{escape(tooltip)}</title>'
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end" fill="#202124">'
            f"{escape(bar.label)}</text>"
            f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" rx="2" '
            f'fill="{escape(bar.colour)}"/>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}" fill="#3c4043">'
            f"{_fmt(bar.value)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar(segments: Sequence[Bar], *, width: int = 960) -> str:
    """One 100% bar split into ``segments`` (labels and shares go in the legend beside it)."""
    height = 34
    total = sum(s.value for s in segments)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart stacked" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" {FONT} '
        f'font-size="12">'
    ]
    if total == 0:
        parts.append('<rect x="0" y="4" width="100%" height="26" fill="#f1f3f4" rx="4"/>')
    x = 0.0
    for segment in segments:
        if not segment.value:
            continue
        share = segment.value / total
        length = width * share
        parts.append(
            f'<rect class="segment" x="{x:.1f}" y="4" width="{length:.1f}" height="26" '
            f'fill="{escape(segment.colour)}"><title>{escape(segment.label)}: '
            f"{_fmt(segment.value)} ({share:.1%})</title></rect>"
        )
        if length > 48:
            parts.append(
                f'<text x="{x + length / 2:.1f}" y="21" text-anchor="middle" fill="#fff" '
                f'font-weight="600">{share:.0%}</text>'
            )
        x += length
    parts.append("</svg>")
    return "".join(parts)


def trend_chart(
    labels: Sequence[str], series: Sequence[Series], *, width: int = 960, height: int = 240
) -> str:
    """Columns and lines over months (``labels``), with a y axis and a legend."""
    left, right, top_pad, bottom = 48, 12, 28, 40
    plot_w = width - left - right
    plot_h = height - top_pad - bottom
    peak = _nice_max(max((v for s in series for v in s.values), default=0))
    count = max(1, len(labels))
    step = plot_w / count
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart trend" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" {FONT} '
        f'font-size="11">'
    ]
    for tick in range(5):
        value = peak * tick / 4
        y = top_pad + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e8eaed"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#5f6368">'
            f"{_fmt(round(value))}</text>"
        )

    def y_of(value: int) -> float:
        return top_pad + plot_h - plot_h * value / peak

    every = max(1, math.ceil(count / 12))
    for index, label in enumerate(labels):
        if index % every == 0:
            x = left + step * (index + 0.5)
            parts.append(
                f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                f'fill="#5f6368">{escape(label)}</text>'
            )
    for s in series:
        if s.kind == "column":
            for index, value in enumerate(s.values):
                x = left + step * index + step * 0.15
                parts.append(
                    f'<rect class="column" x="{x:.1f}" y="{y_of(value):.1f}" '
                    f'width="{step * 0.7:.1f}" height="{top_pad + plot_h - y_of(value):.1f}" '
                    f'fill="{escape(s.colour)}"><title>{escape(labels[index])} · '
                    f"{escape(s.name)}: {_fmt(value)}</title></rect>"
                )
    for s in series:
        if s.kind != "line" or not s.values:
            continue
        points = " ".join(
            f"{left + step * (i + 0.5):.1f},{y_of(v):.1f}" for i, v in enumerate(s.values)
        )
        parts.append(
            f'<polyline class="line" points="{points}" fill="none" stroke="{escape(s.colour)}" '
            'stroke-width="2.2" stroke-linejoin="round"/>'
        )
        for index, value in enumerate(s.values):
            parts.append(
                f'<circle cx="{left + step * (index + 0.5):.1f}" cy="{y_of(value):.1f}" r="3" '
                f'fill="{escape(s.colour)}"><title>{escape(labels[index])} · {escape(s.name)}: '
                f"{_fmt(value)}</title></circle>"
            )
    x = left
    for s in series:
        mark = (
            f'<rect x="{x}" y="6" width="12" height="12" fill="{escape(s.colour)}"/>'
            if s.kind == "column"
            else f'<line x1="{x}" y1="12" x2="{x + 12}" y2="12" stroke="{escape(s.colour)}" '
            'stroke-width="2.5"/>'
        )
        parts.append(mark + f'<text x="{x + 17}" y="16" fill="#3c4043">{escape(s.name)}</text>')
        x += 30 + 7 * len(s.name)
    parts.append("</svg>")
    return "".join(parts)
