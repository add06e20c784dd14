"""Timeline picture: lanes per code, bars per service, overlaps found and drawn."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from xml.etree import ElementTree

import pytest

from fhir_mappings.model import Discipline, TherapyVisit, TimedService, TimingKind
from plugin.web.timeline import (
    MAX_BARS,
    MAX_LANES,
    MAX_OVERLAP_BANDS,
    MAX_SVG_CHARS,
    MAX_TICKS,
    Bar,
    Lane,
    OverlapSpan,
    Timeline,
    build_timeline,
    find_overlaps,
    render_svg,
)


def _service(ref: str, code: str, start: str | None, end: str | None) -> TimedService:
    def parse(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value).astimezone(UTC)

    return TimedService(
        ref=ref,
        code=code,
        system="http://www.ama-assn.org/go/cpt",
        status="completed",
        timing=TimingKind.PERIOD,
        start=parse(start),
        end=parse(end),
        service_date=date(2025, 3, 4),
        spans_midnight=False,
        patient="Patient/p1",
        encounter="Encounter/e1",
    )


def _visit(*services: TimedService) -> TherapyVisit:
    return TherapyVisit(
        patient="Patient/p1",
        service_date=date(2025, 3, 4),
        discipline=Discipline.PT,
        services=services,
    )


def test_touching_intervals_do_not_overlap_but_offsets_hiding_one_do() -> None:
    # 09:00-09:15 -05:00 is 14:00-14:15Z; the 97530 block at 14:10Z overlaps it by 5 minutes.
    services = [
        _service("Procedure/a", "97140", "2025-03-04T09:00:00-05:00", "2025-03-04T09:15:00-05:00"),
        _service("Procedure/b", "97530", "2025-03-04T14:10:00Z", "2025-03-04T14:30:00Z"),
        _service("Procedure/c", "97110", "2025-03-04T14:30:00Z", "2025-03-04T14:40:00Z"),
    ]
    spans = find_overlaps(services)
    assert len(spans) == 1
    assert spans[0].codes == ("97140", "97530")
    assert (spans[0].end - spans[0].start).total_seconds() == 300


def test_svg_has_a_lane_per_code_a_bar_per_timed_service_and_marks_overlaps() -> None:
    visit = _visit(
        _service("Procedure/a", "97140", "2025-03-04T14:00:00Z", "2025-03-04T14:10:00Z"),
        _service("Procedure/b", "97530", "2025-03-04T14:05:00Z", "2025-03-04T14:25:00Z"),
        _service("Procedure/c", "97140", "2025-03-04T14:25:00Z", "2025-03-04T14:30:00Z"),
        _service("Procedure/d", "97110", "2025-03-04T14:30:00Z", None),
    )
    timeline = build_timeline(visit, units={"97140": 1, "97530": 1}, pair="NOT_SUPPORTED")
    assert [lane.code for lane in timeline.lanes] == ["97110", "97140", "97530"]
    assert timeline.lanes[0].untimed_refs == ("Procedure/d",)
    svg = render_svg(timeline)
    root = ElementTree.fromstring(svg)  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    bars = [r for r in root.iter(f"{ns}rect") if "bar" in r.get("class", "").split()]
    assert sorted(b.get("data-ref") for b in bars) == ["Procedure/a", "Procedure/b", "Procedure/c"]
    overlapped = {b.get("data-ref") for b in bars if "overlapped" in b.get("class", "")}
    assert overlapped == {"Procedure/a", "Procedure/b"}
    assert len([r for r in root.iter(f"{ns}rect") if r.get("class") == "overlap"]) == 1
    assert "NOT_SUPPORTED" in svg


def test_a_visit_with_no_intervals_says_so() -> None:
    svg = render_svg(build_timeline(_visit(_service("Procedure/x", "97530", None, None))))
    ElementTree.fromstring(svg)
    assert "No service on this visit has both a start and an end time." in svg


def test_a_supervised_modality_under_a_one_on_one_code_is_not_an_overlap() -> None:
    # R-F3: supervised modalities (97014 electrical stimulation) may run during timed codes; only
    # one-on-one / constant-attendance overlaps are counted by the rules, and so drawn.
    services = [
        _service("Procedure/a", "97110", "2025-03-04T14:00:00Z", "2025-03-04T14:20:00Z"),
        _service("Procedure/b", "97014", "2025-03-04T14:05:00Z", "2025-03-04T14:15:00Z"),
        _service("Procedure/c", "97112", "2025-03-04T14:18:00Z", "2025-03-04T14:30:00Z"),
    ]
    spans = find_overlaps(services)
    assert [(span.codes, (span.end - span.start).total_seconds()) for span in spans] == [
        (("97110", "97112"), 120.0)
    ]
    timeline = build_timeline(_visit(*services))
    overlapped = {bar.ref for lane in timeline.lanes for bar in lane.bars if bar.overlapped}
    assert overlapped == {"Procedure/a", "Procedure/c"}


# ------------------------------------------------------------- bounded by construction (issue 17)

_NS = "{http://www.w3.org/2000/svg}"
_ZONES = (None, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)))


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def _timed(ref: str, code: str, start: datetime, end: datetime) -> TimedService:
    return replace(_service(ref, code, None, None), start=start, end=end)


def _ticks(svg: str) -> int:
    return len(list(ElementTree.fromstring(svg).iter(f"{_NS}line")))


@pytest.mark.parametrize("tz", _ZONES)
@pytest.mark.parametrize(
    "span",
    [
        timedelta(minutes=1),
        timedelta(minutes=45),
        timedelta(hours=7),
        timedelta(hours=30),
        timedelta(days=9),
        timedelta(days=400),
        timedelta(days=3650),  # the 10-year span: 6.5 MB before
        timedelta(days=36500),  # 100 years: 57 MB in the SMART app before
    ],
)
def test_the_axis_has_at_most_max_ticks_whatever_the_span(
    span: timedelta, tz: timezone | None
) -> None:
    start = _utc(2025, 3, 4, 14, 5)
    svg = render_svg(
        build_timeline(_visit(_timed("Procedure/a", "97110", start, start + span))), tz=tz
    )
    assert 1 <= _ticks(svg) <= MAX_TICKS + 1
    assert len(svg) < 4_000


@pytest.mark.parametrize("tz", _ZONES)
def test_a_span_from_year_1_to_year_9999_draws_at_once(tz: timezone | None) -> None:
    # Defence in depth: the mapper refuses such times, but the drawing alone must stay bounded
    # (the issue: 9999-12-31T23:59:59+00:00 as an end hung the worker, one tick per 120 min).
    service = _timed("Procedure/a", "97110", _utc(1, 1, 1, 0, 0), _utc(9999, 12, 31, 23, 59, 59))
    started = time.perf_counter()
    svg = render_svg(build_timeline(_visit(service)), tz=tz)
    assert time.perf_counter() - started < 0.5
    assert _ticks(svg) <= MAX_TICKS + 1
    assert len(svg) < 4_000
    ElementTree.fromstring(svg)


def test_the_usual_visit_keeps_its_clock_ticks() -> None:
    start = _utc(2025, 3, 4, 14, 0)
    svg = render_svg(
        build_timeline(_visit(_timed("Procedure/a", "97110", start, start + timedelta(minutes=45))))
    )
    labels = [t.text for t in ElementTree.fromstring(svg).iter(f"{_NS}text")]
    assert labels[:10] == [f"14:{m:02d}Z" for m in range(0, 50, 5)]


def test_lanes_and_bars_over_their_caps_are_cut_and_the_picture_says_so() -> None:
    start = _utc(2025, 3, 4, 14, 0)
    services = [
        _timed(
            f"Procedure/p{index}",
            f"X{index % (MAX_LANES + 6):03d}",
            start + timedelta(seconds=index),
            start + timedelta(minutes=30, seconds=index * 7),
        )
        for index in range(MAX_BARS * 3)
    ]
    timeline = build_timeline(_visit(*services))
    assert len(timeline.lanes) == MAX_LANES + 6
    root = ElementTree.fromstring(render_svg(timeline))
    lanes = [g for g in root.iter(f"{_NS}g") if g.get("class") == "lane"]
    bars = [r for r in root.iter(f"{_NS}rect") if "bar" in r.get("class", "").split()]
    assert len(lanes) == MAX_LANES
    assert len(bars) == MAX_BARS
    (note,) = [t for t in root.iter(f"{_NS}text") if t.get("class") == "truncated"]
    assert f"{MAX_LANES} of {MAX_LANES + 6} codes" in (note.text or "")
    assert f"{MAX_BARS} of {MAX_BARS * 3} services" in (note.text or "")


def test_the_largest_picture_stays_under_max_svg_chars() -> None:
    # Worst case for size, built directly: every count over its cap, every text long and made of
    # the characters escaping grows most (one character -> six).
    start = _utc(2025, 3, 4, 14, 0)
    worst = '"' * 500
    lanes = tuple(
        Lane(
            code=worst,
            label=worst,
            minutes=10**12,
            units=10**12,
            bars=tuple(
                Bar(worst, start, start + timedelta(minutes=i), 10**12, True)
                for i in range(MAX_BARS)
            ),
            untimed_refs=("x",) * 1000,
        )
        for _ in range(MAX_LANES * 2)
    )
    overlaps = tuple(
        OverlapSpan(
            start + timedelta(minutes=2 * i),
            start + timedelta(minutes=2 * i + 1),
            tuple(worst + str(n) for n in range(50)),
        )
        for i in range(MAX_OVERLAP_BANDS * 2)
    )
    timeline = Timeline(worst, start, start + timedelta(days=1), lanes, overlaps, pair=worst)
    svg = render_svg(timeline, tz=timezone(timedelta(hours=-5)))
    ElementTree.fromstring(svg)
    assert len(svg) <= MAX_SVG_CHARS


def test_many_overlap_bands_are_cut_at_their_cap() -> None:
    start = _utc(2025, 3, 4, 8, 0)
    services = []
    for index in range(MAX_OVERLAP_BANDS + 10):  # separate pairs: one band each
        at = start + timedelta(minutes=10 * index)
        services.append(_timed(f"Procedure/a{index}", "97110", at, at + timedelta(minutes=5)))
        services.append(_timed(f"Procedure/b{index}", "97530", at, at + timedelta(minutes=5)))
    svg = render_svg(build_timeline(_visit(*services)))
    root = ElementTree.fromstring(svg)
    bands = [r for r in root.iter(f"{_NS}rect") if r.get("class") == "overlap"]
    assert len(bands) == MAX_OVERLAP_BANDS
    assert f"{MAX_OVERLAP_BANDS} of {MAX_OVERLAP_BANDS + 10} overlap bands" in svg
    assert len(svg) <= MAX_SVG_CHARS


def test_every_stretch_of_shared_time_is_marked_not_only_the_listed_pairs() -> None:
    # Two clusters of 8 mutually overlapping services: 56 pairs, far more than the W-OVERLAP
    # finding spells out (LISTED_OVERLAPS); the picture still marks both clusters and every bar.
    services = []
    for cluster, hour in enumerate((9, 13)):
        for index in range(8):
            services.append(
                _service(
                    f"Procedure/c{cluster}-{index}",
                    ("97110", "97112", "97530", "97140")[index % 4],
                    f"2025-03-04T{hour:02d}:{index:02d}:00-05:00",
                    f"2025-03-04T{hour:02d}:{30 + index:02d}:00-05:00",
                )
            )
    timeline = build_timeline(_visit(*services))
    assert [(span.start.hour, span.end.hour) for span in timeline.overlaps] == [(14, 14), (18, 18)]
    assert timeline.overlaps[0].codes == ("97110", "97112", "97140", "97530")
    assert all(bar.overlapped for lane in timeline.lanes for bar in lane.bars)
    # Stretches, not pairs: 56 pairs give two bands.
    assert len(find_overlaps(services)) == 2


def test_code_labels_are_whole_words_with_the_full_text_in_a_tooltip() -> None:
    # the sample bundles' CPT displays, which were cut mid-phrase at 24 characters
    visit = _visit(
        _service("Procedure/a", "97140", "2025-03-04T14:00:00Z", "2025-03-04T14:15:00Z"),
        _service("Procedure/b", "97530", "2025-03-04T14:15:00Z", "2025-03-04T14:38:00Z"),
    )
    texts = {
        "97140": "Manual therapy techniques, 1 or more regions, each 15 minutes",
        "97530": "Therapeutic activities, direct (one-on-one) patient contact, each 15 minutes",
    }
    root = ElementTree.fromstring(render_svg(build_timeline(visit, labels=texts)))
    ns = {"s": "http://www.w3.org/2000/svg"}
    for lane in root.iterfind("s:g", ns):
        label = lane.findall("s:text", ns)[1]
        assert label.findtext("s:title", namespaces=ns) == texts[lane.get("data-code", "")]
        lines = [t.text or "" for t in label.iterfind("s:tspan", ns)]
        assert 1 <= len(lines) <= 2
        words = texts[lane.get("data-code", "")].split()
        shown = " ".join(lines).removesuffix("\u2026").split()
        assert shown == words[: len(shown)]  # whole words, in order, none cut
        assert all(len(line) <= 25 for line in lines)
