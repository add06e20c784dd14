"""Property tests (hypothesis) for the unit rules and attribution (R-B3..R-B7, R-C2, R-F4)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_builders import CODES, run, svc, visit

from plugin.rules import ama_units, cms_allocations, units

CODE_POOL = ["97110", "97112", "97116", "97140", "97530", "97035", "97010"]
minutes_maps = st.dictionaries(st.sampled_from(CODE_POOL[:6]), st.integers(0, 200), max_size=6)


@given(minutes_maps)
def test_cms_total_never_exceeds_units_of_total(minutes: dict[str, int]) -> None:
    total = sum(minutes.values())
    allocations = cms_allocations(minutes)
    assert allocations
    for allocation in allocations:
        assert set(allocation) == set(minutes)
        assert sum(allocation.values()) <= units(total)  # R-B7
        assert sum(allocation.values()) == units(total)  # R-B6 places every unit


@given(minutes_maps)
def test_every_code_keeps_its_full_15_minute_units(minutes: dict[str, int]) -> None:
    for allocation in cms_allocations(minutes):
        for code, m in minutes.items():
            assert allocation[code] >= m // 15  # R-B4
            assert allocation[code] <= m // 15 + 1  # at most one remainder unit (R-B6)


@given(minutes_maps)
def test_allocations_differ_only_among_tied_remainders(minutes: dict[str, int]) -> None:
    allocations = cms_allocations(minutes)
    assert len({tuple(a.items()) for a in allocations}) == len(allocations)
    if len(allocations) > 1:
        varying = {c for a in allocations for c in a if a[c] != allocations[0][c]}
        assert len({minutes[c] % 15 for c in varying}) == 1  # R-B6 step 4: ties only


@given(minutes_maps)
def test_ama_is_per_code(minutes: dict[str, int]) -> None:
    result = ama_units(minutes)
    assert {c: units(m) for c, m in minutes.items()} == dict(result)  # R-C2


service_specs = st.lists(
    st.tuples(st.sampled_from(CODE_POOL), st.integers(0, 120), st.integers(1, 45)),
    min_size=1,
    max_size=7,
)


def _services(specs: list[tuple[str, int, int]]) -> list:
    return [
        svc(code, at, minutes, ref=f"Procedure/p{i}", modifiers=["59"] if code == "97530" else ())
        for i, (code, at, minutes) in enumerate(specs)
    ]


@settings(deadline=None, max_examples=150)
@given(service_specs, st.randoms(use_true_random=False))
def test_analysis_is_invariant_under_reordering_services(
    specs: list[tuple[str, int, int]], rnd: object
) -> None:
    services = _services(specs)
    shuffled = list(services)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    for payer_rule in ("cms", "ama"):
        a = run(visit(*services), payer_rule=payer_rule)  # type: ignore[arg-type]
        b = run(visit(*shuffled), payer_rule=payer_rule)  # type: ignore[arg-type]
        assert [dict(x) for x in a.allocations] == [dict(x) for x in b.allocations]
        assert dict(a.minutes) == dict(b.minutes)
        assert a.pair.status == b.pair.status
        assert a.findings == b.findings


@settings(deadline=None, max_examples=150)
@given(service_specs)
def test_visit_units_respect_the_caps(specs: list[tuple[str, int, int]]) -> None:
    analysis = run(visit(*_services(specs)))
    assert analysis.total_timed_minutes == sum(analysis.minutes.values())
    for code, m in analysis.minutes.items():
        assert m <= analysis.raw_minutes[code]  # attribution never adds minutes (R-F4)
        assert CODES.is_timed(code)
    for allocation in analysis.allocations:
        assert sum(allocation.values()) <= units(analysis.total_timed_minutes)
        for code, m in analysis.minutes.items():
            assert allocation[code] >= m // 15
