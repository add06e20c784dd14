"""The visit timeline: one lane per code, each service a bar from start to end, overlaps marked.

One renderer serves every picture of a visit (the sandbox page, the SMART app, the audit report):
plain SVG built on the server, so a saved report needs no script and no network to show it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from html import escape

from fhir_mappings.codes import is_one_on_one
from fhir_mappings.model import TherapyVisit, TimedService
from plugin.rules.intervals import attribute_minutes


@dataclass(frozen=True, slots=True)
class Bar:
    ref: str
    start: datetime
    end: datetime
    minutes: int
    overlapped: bool


@dataclass(frozen=True, slots=True)
class Lane:
    code: str
    label: str
    minutes: int
    units: int | None
    bars: tuple[Bar, ...]
    untimed_refs: tuple[str, ...]  # services of this code with no usable interval


@dataclass(frozen=True, slots=True)
class OverlapSpan:
    start: datetime
    end: datetime
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Timeline:
    title: str
    start: datetime | None
    end: datetime | None
    lanes: tuple[Lane, ...]
    overlaps: tuple[OverlapSpan, ...]
    pair: str | None = None


def _interval(service: TimedService) -> tuple[datetime, datetime] | None:
    if service.start is None or service.end is None or service.end < service.start:
        return None
    return service.start, service.end


def find_overlaps(services: Iterable[TimedService]) -> tuple[OverlapSpan, ...]:
    """The overlaps the rules count (R-F4): positive-length intersections between one-on-one or
    constant-attendance services. Touching intervals do not overlap (R-H10) and supervised
    modalities may overlap anything (R-F3), exactly as in :func:`attribute_minutes`."""
    attribution = attribute_minutes(list(services), is_one_on_one=is_one_on_one, pair=None)
    spans = {OverlapSpan(o.start, o.end, o.codes) for o in attribution.overlaps}
    return tuple(sorted(spans, key=lambda span: (span.start, span.end, span.codes)))


def build_timeline(
    visit: TherapyVisit,
    *,
    units: Mapping[str, int] | None = None,
    minutes: Mapping[str, int] | None = None,
    labels: Mapping[str, str] | None = None,
    pair: str | None = None,
) -> Timeline:
    """The picture of one visit. ``units``/``minutes`` come from the rules (after attribution);
    without them a lane shows its documented minutes."""
    overlaps = find_overlaps(visit.services)
    by_code: dict[str, list[TimedService]] = {}
    for service in visit.services:
        by_code.setdefault(service.code, []).append(service)
    lanes = []
    for code in sorted(by_code):
        bars = []
        untimed = []
        for service in by_code[code]:
            interval = _interval(service)
            if interval is None:
                untimed.append(service.ref)
                continue
            start, end = interval
            overlapped = any(
                code in span.codes and span.start < end and start < span.end for span in overlaps
            )
            bars.append(Bar(service.ref, start, end, service.minutes or 0, overlapped))
        documented = sum(bar.minutes for bar in bars)
        lanes.append(
            Lane(
                code=code,
                label=(labels or {}).get(code) or by_code[code][0].display or code,
                minutes=(minutes or {}).get(code, documented),
                units=(units or {}).get(code),
                bars=tuple(sorted(bars, key=lambda bar: (bar.start, bar.end))),
                untimed_refs=tuple(untimed),
            )
        )
    starts = [bar.start for lane in lanes for bar in lane.bars]
    ends = [bar.end for lane in lanes for bar in lane.bars]
    return Timeline(
        title=f"{visit.service_date.isoformat()} · {visit.discipline.value}",
        start=min(starts) if starts else None,
        end=max(ends) if ends else None,
        lanes=tuple(lanes),
        overlaps=overlaps,
        pair=pair,
    )


# ------------------------------------------------------------------------------- rendering

_LANE_HEIGHT = 46
_LABEL_CHARS = 24  # per line of a lane's code text; two lines, then the tooltip has the rest


def _label_lines(label: str) -> list[str]:
    """``label`` in at most two lines of ``_LABEL_CHARS``, broken between words only; what
    does not fit ends the second line with an ellipsis after a whole word."""
    lines: list[str] = []
    current = ""
    for word in label.split():
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= _LABEL_CHARS or not current:
            current = candidate
            continue
        lines.append(current)
        current = word
        if len(lines) == 2:
            break
    else:
        if current:
            lines.append(current)
        return lines
    return [lines[0], lines[1].rstrip(",;:") + "\u2026"]


_LABEL_WIDTH = 150
_PLOT_WIDTH = 500
_AXIS_HEIGHT = 26
_RIGHT = 110


def _clock(moment: datetime, tz: tzinfo | None = None) -> str:
    """``HH:MM`` in ``tz`` (the visit's own offset), else ``HH:MMZ`` in UTC."""
    if tz is None:
        return moment.astimezone(UTC).strftime("%H:%M") + "Z"
    return moment.astimezone(tz).strftime("%H:%M")


def render_svg(timeline: Timeline, *, tz: tzinfo | None = None) -> str:
    """Self-contained SVG (inline styles, no fonts or scripts to fetch).

    Clock times are in UTC (marked ``Z``) unless ``tz`` gives the offset the visit was recorded
    in, as a clinician reads it; the bars do not move, only the labels.
    """
    width = _LABEL_WIDTH + _PLOT_WIDTH + _RIGHT
    height = _AXIS_HEIGHT + _LANE_HEIGHT * max(1, len(timeline.lanes)) + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'font-family="system-ui, sans-serif" font-size="13">',
        f"<title>Visit timeline {escape(timeline.title)}</title>",
    ]
    overlays: list[str] = []  # drawn last, over the bars they mark
    if timeline.start is None or timeline.end is None:
        parts.append(
            f'<text x="10" y="{_AXIS_HEIGHT + 14}" fill="#555">No service on this visit has both '
            "a start and an end time.</text>"
        )
    else:
        span_seconds = max(60.0, (timeline.end - timeline.start).total_seconds())

        def x_of(moment: datetime) -> float:
            offset = (moment - timeline.start).total_seconds() if timeline.start else 0.0
            return _LABEL_WIDTH + _PLOT_WIDTH * offset / span_seconds

        # Axis: a tick every 5, 10, 15 or 30 minutes, whichever gives at most ~10 ticks.
        step = next((m for m in (5, 10, 15, 30, 60) if span_seconds / 60 / m <= 10), 120)
        local_start = timeline.start.astimezone(tz) if tz is not None else timeline.start
        tick = local_start.replace(second=0, microsecond=0)
        tick -= timedelta(minutes=(tick.hour * 60 + tick.minute) % step)
        while tick <= timeline.end:
            if tick >= timeline.start:
                x = x_of(tick)
                parts.append(
                    f'<line x1="{x:.1f}" y1="{_AXIS_HEIGHT - 6}" x2="{x:.1f}" y2="{height - 20}" '
                    'stroke="#e3e3e3"/>'
                    f'<text x="{x:.1f}" y="{_AXIS_HEIGHT - 10}" text-anchor="middle" '
                    f'fill="#666">{_clock(tick, tz)}</text>'
                )
            tick += timedelta(minutes=step)
        for span in timeline.overlaps:
            x0, x1 = x_of(span.start), x_of(span.end)
            overlays.append(
                f'<rect class="overlap" x="{x0:.1f}" y="{_AXIS_HEIGHT}" '
                f'width="{max(1.0, x1 - x0):.1f}"'
                f' height="{_LANE_HEIGHT * len(timeline.lanes)}" fill="#d93025" fill-opacity="0.22"'
                f' stroke="#d93025" stroke-dasharray="3 2"><title>Overlap {_clock(span.start, tz)}–'
                f"{_clock(span.end, tz)}: {escape(' / '.join(span.codes))}</title></rect>"
            )
    for index, lane in enumerate(timeline.lanes):
        y = _AXIS_HEIGHT + index * _LANE_HEIGHT
        parts.append(
            f'<g class="lane" data-code="{escape(lane.code)}">'
            f'<text x="8" y="{y + 17}" font-weight="600" fill="#1d2733">{escape(lane.code)}</text>'
            f'<text x="8" y="{y + 29}" fill="#6b7888" font-size="10"><title>'
            f"{escape(lane.label)}</title>"
            + "".join(
                f'<tspan x="8" dy="{0 if i == 0 else 11}">{escape(line)}</tspan>'
                for i, line in enumerate(_label_lines(lane.label))
            )
            + "</text>"
        )
        if timeline.start is not None and timeline.end is not None:
            for bar in lane.bars:
                x0, x1 = x_of(bar.start), x_of(bar.end)
                # Overlapped bars keep their fill and get a red outline; the red band over
                # the shared minutes (drawn last) shows where.
                outline = ' stroke="#c5221f" stroke-width="2"' if bar.overlapped else ""
                parts.append(
                    f'<rect class="bar{" overlapped" if bar.overlapped else ""}" '
                    f'data-ref="{escape(bar.ref)}" x="{x0:.1f}" y="{y + 6}" '
                    f'width="{max(2.0, x1 - x0):.1f}" height="{_LANE_HEIGHT - 12}" rx="3" '
                    f'fill="#1a73e8" fill-opacity="0.85"{outline}><title>{escape(bar.ref)}: '
                    f"{_clock(bar.start, tz)}–{_clock(bar.end, tz)}, {bar.minutes} min"
                    "</title></rect>"
                )
        units = "" if lane.units is None else f" · {lane.units} u"
        missing = f" · {len(lane.untimed_refs)} untimed" if lane.untimed_refs else ""
        parts.append(
            f'<text x="{_LABEL_WIDTH + _PLOT_WIDTH + 10}" y="{y + 23}" fill="#1d2733">'
            f"{lane.minutes} min{units}{missing}</text></g>"
        )
    parts.extend(overlays)
    if timeline.pair:
        parts.append(
            f'<text x="8" y="{height - 6}" fill="#333">97140/97530 pair: '
            f"{escape(timeline.pair)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
