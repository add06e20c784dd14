"""The visit timeline: one lane per code, each service a bar from start to end, overlaps marked.

One renderer serves every picture of a visit (the sandbox page, the SMART app, the audit report):
plain SVG built on the server, so a saved report needs no script and no network to show it.

Bounded by construction (issue 17): the axis has at most :data:`MAX_TICKS` ticks whatever the
span of the visit's times, and at most :data:`MAX_LANES` lanes, :data:`MAX_BARS` bars and
:data:`MAX_OVERLAP_BANDS` overlap bands are drawn, so one picture is at most
:data:`MAX_SVG_CHARS` characters; what is left out is said under the picture.
"""

from __future__ import annotations

import math
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
    return _overlaps(services)[0]


def _overlaps(
    services: Iterable[TimedService],
) -> tuple[tuple[OverlapSpan, ...], frozenset[str]]:
    """:func:`find_overlaps`, and the references of every service in one of them: every
    stretch of shared time (merged, so at most one per boundary of the services), not only the
    pairs a W-OVERLAP finding spells out."""
    attribution = attribute_minutes(list(services), is_one_on_one=is_one_on_one, pair=None)
    spans = tuple(OverlapSpan(t.start, t.end, t.codes) for t in attribution.shared_time)
    return spans, attribution.overlapping_refs


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
    overlaps, overlapped_refs = _overlaps(visit.services)
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
            # overlapped: the service is in one of the overlaps (a set lookup per bar, not a
            # scan of every overlap)
            overlapped = service.ref in overlapped_refs
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

#: Caps on one picture (issue 17). The drawing's work and size never depend on how long a span
#: its times cover, and depend on the visit's services only up to these counts; what is over a
#: cap is left out and the picture says so (the findings still list every service).
MAX_TICKS = 10  # axis ticks: the step is chosen from the span so that at most this many fit
MAX_LANES = 24  # codes drawn, one lane each
MAX_BARS = 120  # services drawn, all lanes together
MAX_OVERLAP_BANDS = 60  # overlap bands drawn (overlapping times merged into bands)
_MAX_CODE = 16  # characters of a code shown
_MAX_REF = 64  # characters of a reference shown (data-ref, tooltip)
_MAX_BAND_CODES = 6  # codes named in an overlap band's tooltip
_MAX_LABEL = 80  # characters of a code text kept (two lines shown, all 80 in the tooltip)
#: The most characters :func:`render_svg` returns, whatever the visit (pinned by a test).
MAX_SVG_CHARS = 200_000

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

_DAY = 24 * 60
# Tick steps in minutes, smallest first; the first giving at most MAX_TICKS ticks is used.
# Every step under a day divides a day, so ticks fall on round clock times.
_STEPS = (5, 10, 15, 30, 60, 120, 180, 360, 720, _DAY, 2 * _DAY, 7 * _DAY, 14 * _DAY, 30 * _DAY)
_YEAR = 365 * _DAY


def _step_minutes(span_seconds: float) -> int:
    """The tick step for a span: a step from :data:`_STEPS`, else whole years, always giving at
    most :data:`MAX_TICKS` steps over the span (so the axis costs the same for any span)."""
    span_minutes = span_seconds / 60
    for step in _STEPS:
        if span_minutes / step <= MAX_TICKS:
            return step
    return _YEAR * max(1, math.ceil(span_minutes / MAX_TICKS / _YEAR))


def _local(moment: datetime, tz: tzinfo | None) -> datetime:
    """``moment`` in ``tz`` (UTC without one); in UTC when ``tz`` would leave years 1..9999."""
    try:
        return moment.astimezone(tz or UTC)
    except OverflowError:
        return moment.astimezone(UTC)


def _clock(moment: datetime, tz: tzinfo | None = None) -> str:
    """``HH:MM`` in ``tz`` (the visit's own offset), else ``HH:MMZ`` in UTC."""
    if tz is None:
        return moment.astimezone(UTC).strftime("%H:%M") + "Z"
    return _local(moment, tz).strftime("%H:%M")


def _ticks(start: datetime, end: datetime, tz: tzinfo | None) -> list[tuple[datetime, str]]:
    """At most ``MAX_TICKS + 1`` axis ticks between ``start`` and ``end``, with their labels:
    clock times for steps under a day, dates above."""
    step = _step_minutes(max(60.0, (end - start).total_seconds()))
    ticks: list[tuple[datetime, str]] = []
    try:
        first = _local(start, tz).replace(second=0, microsecond=0)
        if step < _DAY:
            first -= timedelta(minutes=(first.hour * 60 + first.minute) % step)
        else:
            first = first.replace(hour=0, minute=0)
        for index in range(MAX_TICKS + 2):  # bounded whatever the span
            tick = first + timedelta(minutes=step * index)
            if tick > end:
                break
            if tick >= start:
                label = _clock(tick, tz) if step < _DAY else tick.strftime("%Y-%m-%d")
                ticks.append((tick, label))
    except OverflowError:  # the axis would leave years 1..9999: draw it without ticks
        pass
    return ticks


def _bands(overlaps: Iterable[OverlapSpan]) -> list[OverlapSpan]:
    """Overlapping times merged into disjoint bands (each with every code it covers), in time
    order: one band per stretch of overlapping time, however many pairs share it."""
    bands: list[OverlapSpan] = []
    for span in sorted(overlaps, key=lambda o: (o.start, o.end)):
        if bands and span.start < bands[-1].end:
            last = bands[-1]
            bands[-1] = OverlapSpan(
                last.start, max(last.end, span.end), tuple(sorted({*last.codes, *span.codes}))
            )
        else:
            bands.append(span)
    return bands


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def render_svg(timeline: Timeline, *, tz: tzinfo | None = None) -> str:
    """Self-contained SVG (inline styles, no fonts or scripts to fetch).

    Clock times are in UTC (marked ``Z``) unless ``tz`` gives the offset the visit was recorded
    in, as a clinician reads it; the bars do not move, only the labels. At most
    :data:`MAX_TICKS` ticks, :data:`MAX_LANES` lanes, :data:`MAX_BARS` bars and
    :data:`MAX_OVERLAP_BANDS` overlap bands are drawn (a note under the picture says what was left
    out), so the result never exceeds :data:`MAX_SVG_CHARS` characters.
    """
    lanes = timeline.lanes[:MAX_LANES]
    timed = timeline.start is not None and timeline.end is not None
    bands = _bands(timeline.overlaps) if timed else []
    bars_total = sum(len(lane.bars) for lane in timeline.lanes)
    left_out = []
    if len(timeline.lanes) > len(lanes):
        left_out.append(f"{len(lanes)} of {len(timeline.lanes)} codes")
    if timed and bars_total > MAX_BARS:
        left_out.append(f"{MAX_BARS} of {bars_total} services")
    if len(bands) > MAX_OVERLAP_BANDS:
        left_out.append(f"{MAX_OVERLAP_BANDS} of {len(bands)} overlap bands")
    width = _LABEL_WIDTH + _PLOT_WIDTH + _RIGHT
    plot_bottom = _AXIS_HEIGHT + _LANE_HEIGHT * max(1, len(lanes))
    height = plot_bottom + 24 + (18 if left_out else 0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'font-family="system-ui, sans-serif" font-size="13">',
        f"<title>Visit timeline {escape(_short(timeline.title, 80))}</title>",
    ]
    overlays: list[str] = []  # drawn last, over the bars they mark
    origin = timeline.start
    span_seconds = 60.0
    if timeline.start is None or timeline.end is None:
        parts.append(
            f'<text x="10" y="{_AXIS_HEIGHT + 14}" fill="#555">No service on this visit has both '
            "a start and an end time.</text>"
        )
    else:
        span_seconds = max(60.0, (timeline.end - timeline.start).total_seconds())
        for tick, label in _ticks(timeline.start, timeline.end, tz):
            x = _LABEL_WIDTH + _PLOT_WIDTH * (tick - timeline.start).total_seconds() / span_seconds
            parts.append(
                f'<line x1="{x:.1f}" y1="{_AXIS_HEIGHT - 6}" x2="{x:.1f}" y2="{plot_bottom + 4}" '
                'stroke="#e3e3e3"/>'
                f'<text x="{x:.1f}" y="{_AXIS_HEIGHT - 10}" text-anchor="middle" '
                f'fill="#666">{label}</text>'
            )

    def x_of(moment: datetime) -> float:
        offset = (moment - origin).total_seconds() if origin is not None else 0.0
        return _LABEL_WIDTH + _PLOT_WIDTH * offset / span_seconds

    for band in bands[:MAX_OVERLAP_BANDS]:
        x0, x1 = x_of(band.start), x_of(band.end)
        named = [_short(code, _MAX_CODE) for code in band.codes[:_MAX_BAND_CODES]]
        if len(band.codes) > _MAX_BAND_CODES:
            named.append("\u2026")
        overlays.append(
            f'<rect class="overlap" x="{x0:.1f}" y="{_AXIS_HEIGHT}" '
            f'width="{max(1.0, x1 - x0):.1f}"'
            f' height="{_LANE_HEIGHT * len(lanes)}" fill="#d93025" fill-opacity="0.22"'
            f' stroke="#d93025" stroke-dasharray="3 2"><title>Overlap {_clock(band.start, tz)}–'
            f"{_clock(band.end, tz)}: "
            f"{escape(' / '.join(named))}"
            "</title></rect>"
        )
    bars_left = MAX_BARS
    for index, lane in enumerate(lanes):
        y = _AXIS_HEIGHT + index * _LANE_HEIGHT
        code = escape(_short(lane.code, _MAX_CODE))
        label = _short(lane.label, _MAX_LABEL)
        parts.append(
            f'<g class="lane" data-code="{code}">'
            f'<text x="8" y="{y + 17}" font-weight="600" fill="#1d2733">{code}</text>'
            f'<text x="8" y="{y + 29}" fill="#6b7888" font-size="10"><title>'
            f"{escape(label)}</title>"
            + "".join(
                f'<tspan x="8" dy="{0 if i == 0 else 11}">{escape(line)}</tspan>'
                for i, line in enumerate(_label_lines(label))
            )
            + "</text>"
        )
        if timed:
            for bar in lane.bars[:bars_left]:
                x0, x1 = x_of(bar.start), x_of(bar.end)
                ref = escape(_short(bar.ref, _MAX_REF))
                # Overlapped bars keep their fill and get a red outline; the red band over
                # the shared minutes (drawn last) shows where.
                outline = ' stroke="#c5221f" stroke-width="2"' if bar.overlapped else ""
                parts.append(
                    f'<rect class="bar{" overlapped" if bar.overlapped else ""}" '
                    f'data-ref="{ref}" x="{x0:.1f}" y="{y + 6}" '
                    f'width="{max(2.0, x1 - x0):.1f}" height="{_LANE_HEIGHT - 12}" rx="3" '
                    f'fill="#1a73e8" fill-opacity="0.85"{outline}><title>{ref}: '
                    f"{_clock(bar.start, tz)}–{_clock(bar.end, tz)}, {bar.minutes} min"
                    "</title></rect>"
                )
            bars_left -= min(bars_left, len(lane.bars))
        units = "" if lane.units is None else f" · {lane.units} u"
        missing = f" · {len(lane.untimed_refs)} untimed" if lane.untimed_refs else ""
        parts.append(
            f'<text x="{_LABEL_WIDTH + _PLOT_WIDTH + 10}" y="{y + 23}" fill="#1d2733">'
            f"{lane.minutes} min{units}{missing}</text></g>"
        )
    parts.extend(overlays)
    if timeline.pair:
        parts.append(
            f'<text x="8" y="{plot_bottom + 18}" fill="#333">97140/97530 pair: '
            f"{escape(_short(timeline.pair, 40))}</text>"
        )
    if left_out:
        parts.append(
            f'<text class="truncated" x="8" y="{height - 6}" fill="#b3261e">Drawn: '
            f"{', '.join(left_out)}; the findings list every service.</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
