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
    """A service's usable interval as whole microseconds since the epoch, in UTC (start <= end).

    The rules' working form of :class:`Interval`: integer arithmetic is exact and cheap, and
    :func:`minutes_of` floors a sum exactly as :func:`whole_minutes` floors a ``timedelta``.
    Internal to the rules; never mutated after it is built.
    """

    service: TimedService
    code: str
    start: int
    end: int


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def utc_microseconds(moment: datetime) -> int:
    """``moment`` in whole microseconds since the Unix epoch, UTC (naive is UTC, as in
    :func:`as_utc`). Exact: no float is involved."""
    if moment.tzinfo is not UTC:
        moment = as_utc(moment)
    return (moment - _EPOCH) // _MICROSECOND


def minutes_of(microseconds: int) -> int:
    """Whole minutes in a duration of ``microseconds``: the same value :func:`whole_minutes`
    gives for ``timedelta(microseconds=microseconds)`` (``total_seconds()`` is that integer
    divided by 10**6, then floored by 60), without building the ``timedelta``."""
    return int(microseconds / 1_000_000 // 60)


def usable_span(service: TimedService) -> Span | None:
    """:func:`usable_interval` as a :class:`Span`: ``None`` without both start and end or with
    end < start (compared in UTC)."""
    start, end = service.start, service.end
    if start is None or end is None:
        return None
    start_us, end_us = utc_microseconds(start), utc_microseconds(end)
    if end_us < start_us:
        return None
    return Span(service, service.code, start_us, end_us)


@dataclass(slots=True)
class SpanAttribution:
    """:class:`Attribution` in microseconds per code, before flooring to minutes."""

    raw: dict[str, int]  # every code with a span, in first-seen order
    kept: dict[str, int]  # same keys
    overlaps: list[Overlap]


def attribute_spans(
    spans: Sequence[Span], one_on_one: Container[str], pair: tuple[str, str] | None
) -> SpanAttribution:
    """The attribution of :func:`attribute_minutes` over usable spans (R-F4, I-2.7, R-B8).

    ``one_on_one`` holds the codes (at least those of ``spans``) that may not overlap another.
    """
    raw: dict[str, int] = {}
    kept: dict[str, int] = {}
    exclusive: list[Span] = []
    for sp in spans:
        code, length = sp.code, sp.end - sp.start
        raw[code] = raw.get(code, 0) + length
        if code in one_on_one:
            kept.setdefault(code, 0)
            exclusive.append(sp)
        else:
            kept[code] = kept.get(code, 0) + length

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
            # the shared span, as max(start) / min(end) of the UTC datetimes would pick it
            first_start = a if a.start >= b.start else b
            first_end = a if a.end <= b.end else b
            if first_end.end <= first_start.start:
                continue
            codes = frozenset({a.code, b.code})
            refs = sorted((a.service.ref, b.service.ref))
            overlaps.append(
                Overlap(
                    refs=(refs[0], refs[1]),
                    codes=tuple(sorted(codes)),
                    start=_utc_start(first_start.service),
                    end=_utc_end(first_end.service),
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
    events: dict[int, list[tuple[int, str]]] = {}
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


def _utc_start(service: TimedService) -> datetime:
    assert service.start is not None  # a span's service has both ends
    return as_utc(service.start)


def _utc_end(service: TimedService) -> datetime:
    assert service.end is not None
    return as_utc(service.end)


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
        raw_minutes=CodeCounts({c: minutes_of(us) for c, us in found.raw.items()}),
        minutes=CodeCounts({c: minutes_of(us) for c, us in found.kept.items()}),
        overlaps=tuple(found.overlaps),
    )
