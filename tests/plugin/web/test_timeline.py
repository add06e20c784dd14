"""Timeline picture: lanes per code, bars per service, overlaps found and drawn."""

from __future__ import annotations

from datetime import UTC, date, datetime
from xml.etree import ElementTree

from fhir_mappings.model import Discipline, TherapyVisit, TimedService, TimingKind
from plugin.web.timeline import build_timeline, find_overlaps, render_svg


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
