"""Interval arithmetic and minute attribution (R-H10, R-F3, R-F4, I-2.7, R-B8).

All instants are compared in UTC. Intervals that only touch (end == next start) do not overlap.
Durations are summed in seconds per code and floored to whole minutes at the end (R-H10).

Attribution among one-on-one / constant-attendance timed services (R-F4 POLICY):
- time covered by one code only goes to that code (two services of the same code overlapping
  each other count their shared time once);
- time covered by exactly the NCCI pair's two codes goes to the pair's column-1 code
  (97140 against 97530: "97530 should not be reported ... same time block");
- time covered by any other combination of codes goes to none of them (conservative).
Supervised modalities and other codes that are not one-on-one may overlap anything (R-F3) and
keep their full duration.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TypeVar

from fhir_mappings.model import TimedService
from plugin.rules.counts import CodeCounts


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive value is taken to be UTC already (R-H10)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Interval:
    """A service's usable period in UTC (start <= end)."""

    ref: str
    code: str
    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return self.end - self.start


def usable_interval(service: TimedService) -> Interval | None:
    """The service's UTC interval, or ``None`` without both start and end or with end < start."""
    if service.start is None or service.end is None:
        return None
    start, end = as_utc(service.start), as_utc(service.end)
    if end < start:
        return None
    return Interval(service.ref, service.code, start, end)


def intersection(a: Interval, b: Interval) -> timedelta:
    """Length of the overlap of two intervals; touching intervals give zero (R-H10)."""
    return max(timedelta(0), min(a.end, b.end) - max(a.start, b.start))


def whole_minutes(span: timedelta) -> int:
    """Floor of a duration in minutes (R-H10)."""
    return int(span.total_seconds() // 60)


def describe_minutes(span: timedelta) -> str:
    """``"1 minute"``, ``"12 minutes"``, or ``"less than a minute"`` for messages."""
    minutes = whole_minutes(span)
    if minutes == 0:
        return "less than a minute"
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two one-on-one services whose intervals share positive time."""

    refs: tuple[str, str]  # sorted
    codes: tuple[str, ...]  # sorted, de-duplicated
    start: datetime  # the shared span, UTC
    end: datetime
    kept_by: str | None  # the code that keeps the shared minutes, None when neither does

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def minutes(self) -> int:
        return whole_minutes(self.length)


@dataclass(frozen=True, slots=True)
class Attribution:
    """Minutes per code before (``raw_minutes``) and after (``minutes``) attribution."""

    raw_minutes: CodeCounts
    minutes: CodeCounts
    overlaps: tuple[Overlap, ...]


@dataclass(slots=True)
class Span:
    """A service's usable interval in UTC (start <= end): :class:`Interval` with the service.

    The rules' working form, built once per service and visit; never changed once built.
    """

    service: TimedService
    code: str
    start: datetime
    end: datetime


_ZERO = timedelta(0)


def usable_span(service: TimedService) -> Span | None:
    """:func:`usable_interval` as a :class:`Span`: ``None`` without both start and end or with
    end < start (compared in UTC)."""
    start, end = service.start, service.end
    if start is None or end is None:
        return None
    # as_utc returns a UTC value itself, so it is only needed for other offsets (or naive)
    if start.tzinfo is not UTC:
        start = as_utc(start)
    if end.tzinfo is not UTC:
        end = as_utc(end)
    if end < start:
        return None
    return Span(service, service.code, start, end)


@dataclass(slots=True)
class SpanAttribution:
    """:class:`Attribution` before flooring to minutes."""

    raw: dict[str, timedelta]  # every code with a span, in first-seen order
    kept: dict[str, timedelta]  # same keys
    overlaps: list[Overlap]


def attribute_spans(
    spans: Sequence[Span], one_on_one: Container[str], pair: tuple[str, str] | None
) -> SpanAttribution:
    """The attribution of :func:`attribute_minutes` over usable spans (R-F4, I-2.7, R-B8).

    ``one_on_one`` holds the codes (at least those of ``spans``) that may not overlap another.
    """
    raw: dict[str, timedelta] = {}
    kept: dict[str, timedelta] = {}
    exclusive: list[Span] = []
    for sp in spans:
        code, length = sp.code, sp.end - sp.start
        raw[code] = raw.get(code, _ZERO) + length
        if code in one_on_one:
            kept.setdefault(code, _ZERO)
            exclusive.append(sp)
        else:
            kept[code] = kept.get(code, _ZERO) + length

    def winner(active: frozenset[str]) -> str | None:
        if len(active) == 1:
            return next(iter(active))
        if pair is not None and active == frozenset(pair):
            return pair[0]
        return None

    # Overlapping pairs: with the spans sorted by start, only the ones that start before a span
    # ends can share time with it (touching intervals share none).
    overlaps: list[Overlap] = []
    by_start = sorted(exclusive, key=lambda sp: (sp.start, sp.end, sp.service.ref, sp.code))
    count = len(by_start)
    for index, a in enumerate(by_start):
        for other in range(index + 1, count):
            b = by_start[other]
            if b.start >= a.end:
                break
            start, end = max(a.start, b.start), min(a.end, b.end)
            if end <= start:
                continue
            codes = frozenset({a.code, b.code})
            refs = sorted((a.service.ref, b.service.ref))
            overlaps.append(
                Overlap(
                    refs=(refs[0], refs[1]),
                    codes=tuple(sorted(codes)),
                    start=start,
                    end=end,
                    kept_by=winner(codes),
                )
            )
    overlaps.sort(key=lambda o: (o.refs, o.codes))

    if not overlaps:
        # No two one-on-one spans share time: each keeps its whole length (what the sweep
        # below would give, segment by segment).
        for sp in exclusive:
            kept[sp.code] += sp.end - sp.start
        return SpanAttribution(raw, kept, overlaps)

    # Sweep line over the one-on-one spans, O(n log n): between two consecutive boundary
    # points the active codes are those of spans started at or before the left point and
    # not yet ended (a span ending at a point does not cover what follows it).
    events: dict[datetime, list[tuple[int, str]]] = {}
    for sp in exclusive:
        events.setdefault(sp.start, []).append((1, sp.code))
        events.setdefault(sp.end, []).append((-1, sp.code))
    points = sorted(events)
    counts: dict[str, int] = {}
    for left, right in pairwise(points):
        for delta, code_at in events[left]:
            counts[code_at] = counts.get(code_at, 0) + delta
        active = frozenset(c for c, n in counts.items() if n > 0)
        keeper = winner(active) if active else None
        if keeper is not None:
            kept[keeper] += right - left
    return SpanAttribution(raw, kept, overlaps)


P = TypeVar("P")
Q = TypeVar("Q")


def overlapping_pairs(
    firsts: Sequence[tuple[Span, P]], seconds: Sequence[tuple[Span, Q]]
) -> list[tuple[P, Q, timedelta]]:
    """Every (first, second) pair whose spans share positive time, with the shared length.

    A sweep over both lists by start: a pair is found when its later-starting span is reached,
    while the other is still open (ends after that start); touching spans share nothing. About
    n log n plus the pairs found, instead of every first against every second. Pairs come in
    sweep order; the caller only sums them and collects their references.
    """
    events = sorted(
        [(sp.start, 0, index) for index, (sp, _) in enumerate(firsts)]
        + [(sp.start, 1, index) for index, (sp, _) in enumerate(seconds)]
    )
    open_firsts: list[tuple[Span, P]] = []
    open_seconds: list[tuple[Span, Q]] = []
    found: list[tuple[P, Q, timedelta]] = []
    for start, side, index in events:
        if side == 0:
            span, first = firsts[index]
            open_seconds = [o for o in open_seconds if o[0].end > start]  # the rest have ended
            if span.end > start:  # an empty span shares nothing
                found += [(first, o, min(span.end, sp.end) - start) for sp, o in open_seconds]
            open_firsts.append((span, first))
        else:
            span, second = seconds[index]
            open_firsts = [o for o in open_firsts if o[0].end > start]
            if span.end > start:
                found += [(o, second, min(span.end, sp.end) - start) for sp, o in open_firsts]
            open_seconds.append((span, second))
    return found


def attribute_minutes(
    services: Sequence[TimedService],
    *,
    is_one_on_one: Callable[[str], bool],
    pair: tuple[str, str] | None,
) -> Attribution:
    """Attribute documented minutes to codes (R-F4, I-2.7; same code summed, R-B8).

    ``services`` are the timed services whose minutes count; those without a usable interval
    contribute nothing. ``pair`` is the NCCI (column 1, column 2) whose shared time goes to
    column 1. The result does not depend on the order of ``services``.
    """
    spans = [sp for sp in (usable_span(s) for s in services) if sp is not None]
    one_on_one = {sp.code for sp in spans if is_one_on_one(sp.code)}
    found = attribute_spans(spans, one_on_one, pair)
    return Attribution(
        raw_minutes=CodeCounts({c: whole_minutes(span) for c, span in found.raw.items()}),
        minutes=CodeCounts({c: whole_minutes(span) for c, span in found.kept.items()}),
        overlaps=tuple(found.overlaps),
    )
