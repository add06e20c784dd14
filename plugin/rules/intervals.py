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

import heapq
from bisect import bisect_left
from collections.abc import Callable, Collection, Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

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
class SharedTime:
    """A stretch of time that two or more one-on-one services cover (R-F4), with their codes.

    Consecutive stretches are merged, so a visit has at most one per boundary of its services:
    what a picture of the visit marks, however many pairs overlap there."""

    start: datetime
    end: datetime
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Attribution:
    """Minutes per code before (``raw_minutes``) and after (``minutes``) attribution."""

    raw_minutes: CodeCounts
    minutes: CodeCounts
    overlaps: tuple[Overlap, ...]  # at most LISTED_OVERLAPS, in time order
    overlap_count: int = 0  # every overlapping pair
    shared_time: tuple[SharedTime, ...] = ()  # every stretch covered twice or more, in order
    overlapping_refs: frozenset[str] = frozenset()  # every service sharing time with another


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


LISTED_OVERLAPS = 10
"""How many overlapping pairs a visit's W-OVERLAP finding spells out (R-F4, I-2.7); the others
are counted, not built, so the work stays about n log n even when every service overlaps every
other one (n services can make n(n-1)/2 pairs)."""


@dataclass(slots=True)
class SpanAttribution:
    """:class:`Attribution` before flooring to minutes, with the overlaps of the one-on-one spans.

    ``overlaps`` holds at most :data:`LISTED_OVERLAPS` pairs, in time order (by the start of the
    later span); ``overlap_count`` counts every pair, ``overlapping`` every span that shares time
    with another (in start order) and ``shared`` the time two or more of them cover.
    """

    raw: dict[str, timedelta]  # every code with a span, in first-seen order
    kept: dict[str, timedelta]  # same keys
    overlaps: list[Overlap]
    overlap_count: int = 0
    overlapping: tuple[Span, ...] = ()
    shared: timedelta = timedelta(0)
    shared_time: tuple[SharedTime, ...] = ()


def _by_start(spans: Iterable[Span]) -> list[Span]:
    """The spans of positive length (an empty one shares no time), sorted by start."""
    return sorted(
        (sp for sp in spans if sp.end > sp.start),
        key=lambda sp: (sp.start, sp.end, sp.service.ref, sp.code),
    )


def _overlapping(by_start: Sequence[Span]) -> tuple[Span, ...]:
    """The spans (sorted by start, positive length) sharing time with another: one started
    earlier ends after this one starts (the running maximum of ends), or the next one starts
    before this one ends. O(n)."""
    found = []
    latest_end: datetime | None = None
    last = len(by_start) - 1
    for index, sp in enumerate(by_start):
        if (latest_end is not None and latest_end > sp.start) or (
            index < last and by_start[index + 1].start < sp.end
        ):
            found.append(sp)
        if latest_end is None or sp.end > latest_end:
            latest_end = sp.end
    return tuple(found)


def attribute_spans(
    spans: Sequence[Span], one_on_one: Container[str], pair: tuple[str, str] | None
) -> SpanAttribution:
    """The attribution of :func:`attribute_minutes` over usable spans (R-F4, I-2.7, R-B8).

    ``one_on_one`` holds the codes (at least those of ``spans``) that may not overlap another.
    About n log n for n spans, however many of them overlap.
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

    def winner(active: Collection[str]) -> str | None:
        if len(active) == 1:
            return next(iter(active))
        if pair is not None and len(active) == 2 and pair[0] in active and pair[1] in active:
            return pair[0]
        return None

    # Overlapping pairs by a sweep over the spans sorted by start: when a span starts, the open
    # spans (started before, ending after its start) are exactly those it shares time with.
    # Every pair is counted; only the first LISTED_OVERLAPS are built.
    by_start = _by_start(exclusive)
    overlaps: list[Overlap] = []
    count = 0
    open_spans: dict[int, Span] = {}  # by position in by_start, so in start order
    ends: list[tuple[datetime, int]] = []  # heap of (end, position) of the open spans
    for index, b in enumerate(by_start):
        while ends and ends[0][0] <= b.start:
            del open_spans[heapq.heappop(ends)[1]]
        count += len(open_spans)
        for a in open_spans.values():
            if len(overlaps) >= LISTED_OVERLAPS:
                break
            codes = tuple(sorted({a.code, b.code}))
            refs = sorted((a.service.ref, b.service.ref))
            overlaps.append(
                Overlap(
                    refs=(refs[0], refs[1]),
                    codes=codes,
                    start=b.start,
                    end=min(a.end, b.end),
                    kept_by=winner(codes),
                )
            )
        open_spans[index] = b
        heapq.heappush(ends, (b.end, index))

    if not count:
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
    counts: dict[str, int] = {}
    active: set[str] = set()
    depth = 0  # open spans, of any code
    shared = _ZERO
    stretches: list[SharedTime] = []
    for left, right in pairwise(sorted(events)):
        for delta, code_at in events[left]:
            now = counts.get(code_at, 0) + delta
            counts[code_at] = now
            depth += delta
            if now > 0:
                active.add(code_at)
            else:
                active.discard(code_at)
        if depth >= 2:
            shared += right - left
            if stretches and stretches[-1].end == left:
                last = stretches.pop()
                codes = tuple(sorted({*last.codes, *active}))
                stretches.append(SharedTime(last.start, right, codes))
            else:
                stretches.append(SharedTime(left, right, tuple(sorted(active))))
        keeper = winner(active) if active else None
        if keeper is not None:
            kept[keeper] += right - left
    return SpanAttribution(
        raw, kept, overlaps, count, _overlapping(by_start), shared, tuple(stretches)
    )


@dataclass(frozen=True, slots=True)
class CrossOverlap:
    """What two groups of spans share (E-PAIR-SAME-TIMEBLOCK): ``shared`` is the sum, over every
    (first, second) pair, of the time the two share; ``refs`` the services of either group that
    share time with the other, sorted."""

    shared: timedelta
    refs: tuple[str, ...]


def _sharing_with(spans: Sequence[Span], others: Sequence[Span]) -> list[str]:
    """References of ``spans`` sharing positive time with one of ``others`` (both sorted by
    start, positive length): an other that starts before the span ends and ends after it
    starts. The others starting before the end are a prefix; its latest end decides."""
    starts = [o.start for o in others]
    latest: list[datetime] = []
    for o in others:
        latest.append(o.end if not latest or o.end > latest[-1] else latest[-1])
    found = []
    for sp in spans:
        before_end = bisect_left(starts, sp.end)
        if before_end and latest[before_end - 1] > sp.start:
            found.append(sp.service.ref)
    return found


def cross_overlap(firsts: Iterable[Span], seconds: Iterable[Span]) -> CrossOverlap:
    """The time shared between two groups of spans and who shares it, in about n log n.

    Summed over pairs, shared time is the integral of (open firsts x open seconds) over time, so
    one sweep over the boundary points gives it without looking at pairs (R-D3(2), R-F4).
    """
    one, two = _by_start(firsts), _by_start(seconds)
    events: dict[datetime, list[tuple[int, int]]] = {}
    for side, group in ((0, one), (1, two)):
        for sp in group:
            events.setdefault(sp.start, []).append((side, 1))
            events.setdefault(sp.end, []).append((side, -1))
    open_count = [0, 0]
    shared = _ZERO
    for left, right in pairwise(sorted(events)):
        for side, delta in events[left]:
            open_count[side] += delta
        if open_count[0] and open_count[1]:
            shared += (right - left) * (open_count[0] * open_count[1])
    if not shared:
        return CrossOverlap(_ZERO, ())
    refs = sorted({*_sharing_with(one, two), *_sharing_with(two, one)})
    return CrossOverlap(shared, tuple(refs))


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
        overlap_count=found.overlap_count,
        shared_time=found.shared_time,
        overlapping_refs=frozenset(sp.service.ref for sp in found.overlapping),
    )
