"""Overlaps at scale (issue 17, item 2): one W-OVERLAP per visit listing the pairs, work about
n log n however many services overlap (R-F4, I-2.7, R-D3(2))."""

from __future__ import annotations

import time
from datetime import timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_builders import T0, run, svc, visit

from fhir_mappings.model import TimedService
from plugin.rules.intervals import LISTED_OVERLAPS, attribute_spans, usable_span


def _everyone_overlaps(n: int, codes: tuple[str, ...] = ("97110", "97112")) -> list[TimedService]:
    """``n`` services, each starting a minute after the previous and lasting the whole run:
    every one overlaps every other (n(n-1)/2 pairs), the shape of the issue's reproduction."""
    return [svc(codes[i % len(codes)], i * 0.01, n, ref=f"Procedure/p{i:05d}") for i in range(n)]


def test_a_visit_with_many_overlapping_pairs_has_one_overlap_finding_listing_some() -> None:
    n = 800  # 319,600 pairs: the 18,531-card request had this many Procedures
    analysis = run(visit(*_everyone_overlaps(n)))
    overlaps = [f for f in analysis.findings if f.rule.value == "W-OVERLAP"]
    assert len(overlaps) == 1
    finding = overlaps[0]
    pairs = n * (n - 1) // 2
    assert finding.message.startswith(f"{pairs} pairs of one-on-one services overlap")
    assert f"and {pairs - LISTED_OVERLAPS} more pairs, not listed here" in finding.message
    assert finding.message.count(" share ") == LISTED_OVERLAPS
    # every service overlapping another is a resource of the finding, once
    assert len(finding.resources) == n
    assert finding.codes == ("97110", "97112")
    assert len(finding.message) < 3000


def test_two_pairs_are_both_listed_with_no_truncation() -> None:
    analysis = run(
        visit(
            svc("97110", 0, 20, ref="Procedure/a"),
            svc("97112", 10, 20, ref="Procedure/b"),
            svc("97530", 60, 20, ref="Procedure/c"),
            svc("97530", 70, 20, ref="Procedure/d"),
        )
    )
    (finding,) = [f for f in analysis.findings if f.rule.value == "W-OVERLAP"]
    assert finding.message.startswith("2 pairs of one-on-one services overlap (20 minutes")
    assert "Procedure/a and Procedure/b (97110 and 97112) share 10 minutes" in finding.message
    assert "Procedure/c and Procedure/d (97530) share 10 minutes" in finding.message
    assert "not listed" not in finding.message
    assert finding.resources == ("Procedure/a", "Procedure/b", "Procedure/c", "Procedure/d")
    assert finding.facts.minutes == 20


def test_analysis_time_does_not_grow_with_the_pairs() -> None:
    """5,000 mutually overlapping services (12.5 million pairs) used to take tens of seconds and
    about 1 GB; the sweep counts the pairs without building them."""
    services = _everyone_overlaps(5000, ("97140", "97530"))
    started = time.perf_counter()
    analysis = run(visit(*services))
    elapsed = time.perf_counter() - started
    rules = [f.rule.value for f in analysis.findings]
    assert rules.count("W-OVERLAP") == 1
    assert rules.count("E-PAIR-SAME-TIMEBLOCK") == 1
    assert elapsed < 10, f"analysis of 5,000 overlapping services took {elapsed:.1f} s"


_raw = st.lists(
    st.tuples(st.sampled_from(("97110", "97140", "97530")), st.integers(0, 60), st.integers(0, 30)),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(_raw)
def test_overlapping_services_and_shared_time_equal_the_pairwise_definition(
    raw: list[tuple[str, int, int]],
) -> None:
    spans = [
        sp
        for i, (code, at, length) in enumerate(raw)
        if (sp := usable_span(svc(code, at, length, ref=f"Procedure/{i}"))) is not None
    ]
    found = attribute_spans(spans, {"97110", "97140", "97530"}, ("97140", "97530"))
    pairs = [
        (a, b)
        for x, a in enumerate(spans)
        for b in spans[x + 1 :]
        if min(a.end, b.end) > max(a.start, b.start)
    ]
    assert found.overlap_count == len(pairs)
    involved = {sp.service.ref for pair in pairs for sp in pair}
    assert {sp.service.ref for sp in found.overlapping} == involved
    marks = [T0 + timedelta(minutes=m) for m in range(91)]  # every span lies within them
    covered_twice = sum(
        1
        for left, right in pairwise(marks)
        if sum(1 for sp in spans if sp.start <= left and sp.end >= right) >= 2
    )
    assert found.shared == timedelta(minutes=covered_twice)
