"""The per-visit view and the exact helpers under it (I-2.6, R-H10, R-D1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_builders import CODES, T0, charge, svc, visit

from fhir_mappings import codes as therapy_codes
from fhir_mappings.model import TimingKind
from plugin.rules import CodeCounts, PtpEdit, PtpTable, StaticCodeCatalog, default_ptp_table
from plugin.rules.code_catalog import TherapyCodeCatalog, classify
from plugin.rules.intervals import Span, cross_overlap, usable_interval, usable_span
from plugin.rules.view import visit_view


def test_usable_span_agrees_with_usable_interval() -> None:
    minus5 = timezone(timedelta(hours=-5))
    services = [
        svc("97110", 0, 15),
        svc("97110", 0, 0),
        svc("97110", 0, None),
        svc("97110", None, None),
        svc("97110", start=T0.astimezone(minus5), end=T0 + timedelta(seconds=59)),
        svc("97110", start=T0 + timedelta(seconds=1), end=T0.astimezone(minus5)),  # end < start
    ]
    for service in services:
        interval, span = usable_interval(service), usable_span(service)
        assert (interval is None) == (span is None)
        if interval is not None and span is not None:
            assert (span.start, span.end) == (interval.start, interval.end)
            assert span.start.tzinfo is UTC
            assert span.end.tzinfo is UTC


class AskingCatalog:
    """A catalog that is neither of the known classes: answered code by code."""

    def is_timed(self, code: str) -> bool:
        return code.startswith("971")

    def is_one_on_one(self, code: str) -> bool:
        return code.endswith("0")


def test_classify_agrees_with_the_catalog_questions() -> None:
    asked = [*therapy_codes.CODE_LIST.codes, "99999", "", "97110 ", "g0283"]
    for catalog in (TherapyCodeCatalog(), CODES, AskingCatalog()):
        timed, one_on_one = classify(catalog, asked)
        assert timed == {c for c in asked if catalog.is_timed(c)}
        assert one_on_one == {c for c in asked if catalog.is_one_on_one(c)}


def test_code_counts_from_sorted_equals_the_sorting_constructor() -> None:
    made = CodeCounts.from_sorted({"97110": 2, "97530": 1})
    assert made == CodeCounts({"97530": 1, "97110": 2})
    assert hash(made) == hash(CodeCounts({"97530": 1, "97110": 2}))
    assert list(made) == ["97110", "97530"]


def _edits_among_pairwise(table: PtpTable, codes: set[str], on: datetime) -> list[PtpEdit]:
    unique = sorted(codes)
    found = [
        e
        for i, a in enumerate(unique)
        for b in unique[i + 1 :]
        if (e := table.lookup(a, b, on.date())) is not None
    ]
    return sorted(found, key=lambda e: (e.column1, e.column2))


_TABLE_CODES = sorted({c for e in default_ptp_table().edits for c in (e.column1, e.column2)})
_OTHER_TABLE = PtpTable(
    (
        PtpEdit("97140", "97530", 1, None, T0.date()),
        PtpEdit("97530", "97140", 0, T0.date()),
        PtpEdit("97110", "97110", 1, None),
        PtpEdit("97110", "97112", 9, None),
        PtpEdit("97112", "97116", 1, (T0 + timedelta(days=1)).date()),
    ),
    version="test",
    origin="test",
)


@settings(max_examples=200)
@given(
    st.sets(st.sampled_from([*_TABLE_CODES, "97110", "97112", "97116", "99999"])),
    st.sampled_from([T0 - timedelta(days=2000), T0 - timedelta(days=1), T0, T0 + timedelta(1)]),
    st.sampled_from([default_ptp_table(), _OTHER_TABLE]),
)
def test_edits_among_equals_every_pairwise_lookup(
    codes: set[str], on: datetime, table: PtpTable
) -> None:
    assert list(table.edits_among(codes, on.date())) == _edits_among_pairwise(table, codes, on)


def test_visit_view_sorts_services_into_counted_group_and_billable() -> None:
    catalog = StaticCodeCatalog.of(
        timed=("97110", "97530", "97035"), one_on_one=("97110", "97530", "97150")
    )
    services = (
        svc("97110", 0, 15),
        svc("97530", 15, 10, group=True),  # timed one-on-one, to a group: excluded (I-2.6)
        svc("97150", 15, 10, group=True),  # untimed one-on-one to a group: neither
        svc("97035", 25, None),  # timed, no end: counted without a span
        svc("97010", 25, 10),  # untimed: billable only
        svc("97110", 40, 10, ref="Procedure/second", timing=TimingKind.PERIOD, spans_midnight=True),
    )
    view = visit_view(
        visit(
            *services,
            charges=[
                charge("97530", 1),
                charge("97012", 1, status="cancelled"),
                charge("97016", 1),
            ],
        ),
        catalog,
    )
    assert [s.code for s in view.counted] == ["97110", "97035", "97110"]
    assert [s.code for s in view.group] == ["97530"]
    assert view.billable_codes == {"97110", "97035", "97010", "97530", "97016"}
    assert view.timed_codes == {"97110", "97530", "97035"}
    assert list(view.counted_by_code) == ["97035", "97110"]
    assert [sp.service.ref for sp in view.spans] == [services[0].ref, "Procedure/second"]
    assert view.codes_without_span == {"97035"}
    assert [s.code for s in view.timing_suspects] == ["97035", "97110"]
    assert set(view.lines) == {"97010", "97016", "97035", "97110", "97150", "97530"}


_spans = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 30)), max_size=8)


@settings(max_examples=300)
@given(_spans, _spans)
def test_cross_overlap_equals_every_pair_compared(
    firsts: list[tuple[int, int]], seconds: list[tuple[int, int]]
) -> None:
    """The sweep sums the same shared time and finds the same services as comparing every
    (97140, 97530) pair, which it never does (E-PAIR-SAME-TIMEBLOCK, R-D3(2))."""

    def spans(raw: list[tuple[int, int]], code: str) -> list[Span]:
        made = []
        for i, (at, length) in enumerate(raw):
            span = usable_span(svc(code, at, length, ref=f"Procedure/{code}-{i}"))
            assert span is not None
            made.append(span)
        return made

    a, b = spans(firsts, "97140"), spans(seconds, "97530")
    pairs = [
        (x, y, min(x.end, y.end) - max(x.start, y.start))
        for x in a
        for y in b
        if min(x.end, y.end) - max(x.start, y.start) > timedelta(0)
    ]
    found = cross_overlap(a, b)
    assert found.shared == sum((shared for _, _, shared in pairs), timedelta(0))
    assert found.refs == tuple(sorted({s.service.ref for x, y, _ in pairs for s in (x, y)}))
