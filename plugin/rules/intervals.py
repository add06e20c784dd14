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

from collections.abc import Callable, Sequence
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
class Attribution:
    """Minutes per code before (``raw_minutes``) and after (``minutes``) attribution."""

    raw_minutes: CodeCounts
    minutes: CodeCounts
    overlaps: tuple[Overlap, ...]


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
    intervals = [i for i in (usable_interval(s) for s in services) if i is not None]
    raw: dict[str, timedelta] = {}
    for iv in intervals:
        raw[iv.code] = raw.get(iv.code, timedelta(0)) + iv.length
    kept: dict[str, timedelta] = {code: timedelta(0) for code in raw}
    exclusive = [iv for iv in intervals if is_one_on_one(iv.code)]
    for iv in intervals:
        if not is_one_on_one(iv.code):
            kept[iv.code] += iv.length

    def winner(active: frozenset[str]) -> str | None:
        if len(active) == 1:
            return next(iter(active))
        if pair is not None and active == frozenset(pair):
            return pair[0]
        return None

    # Sweep line over the one-on-one intervals, O(n log n): between two consecutive boundary
    # points the active codes are those of intervals started at or before the left point and
    # not yet ended (an interval ending at a point does not cover what follows it).
    events: dict[datetime, list[tuple[int, str]]] = {}
    for iv in exclusive:
        events.setdefault(iv.start, []).append((1, iv.code))
        events.setdefault(iv.end, []).append((-1, iv.code))
    points = sorted(events)
    counts: dict[str, int] = {}
    for left, right in pairwise(points):
        for delta, code_at in events[left]:
            counts[code_at] = counts.get(code_at, 0) + delta
        active = frozenset(c for c, n in counts.items() if n > 0)
        code = winner(active) if active else None
        if code is not None:
            kept[code] += right - left

    # Overlapping pairs: with the intervals sorted by start, only the ones that start before
    # an interval ends can share time with it (touching intervals share none).
    overlaps: list[Overlap] = []
    by_start = sorted(exclusive, key=lambda iv: (iv.start, iv.end, iv.ref, iv.code))
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
            refs = tuple(sorted((a.ref, b.ref)))
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
    return Attribution(
        raw_minutes=CodeCounts({c: whole_minutes(raw[c]) for c in raw}),
        minutes=CodeCounts({c: whole_minutes(kept[c]) for c in kept}),
        overlaps=tuple(overlaps),
    )
