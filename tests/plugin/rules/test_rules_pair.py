"""The 97140/97530 pair (I-4; R-D1..R-D4, R-E8): statuses, modifiers, strict reading, ties."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
from rules_builders import CODES, T0, charge, only, rules_of, run, svc, visit

from fhir_mappings.model import TherapyVisit, TimedService
from plugin.rules import Fix, PairRule, PairStatus, PtpEdit, PtpTable, analyze_visit

SPLIT = "CMS modifier-59 Example 9 (S7): 10 min 97140, 15 min 97530, 5 min 97140"


def split_block(*, m140: tuple[str, ...] = (), m530: tuple[str, ...] = ("59",)) -> list:
    return [
        svc("97140", 0, 10, modifiers=m140),
        svc("97530", 10, 15, modifiers=m530),
        svc("97140", 25, 5, ref="Procedure/97140-b", modifiers=m140),
    ]


@pytest.mark.parametrize(
    ("services", "status", "pair_findings", "source"),
    [
        (split_block(), "SUPPORTED", [], SPLIT),
        (
            [svc("97140", 0, 15), svc("97530", 15, 15, modifiers=["59"])],
            "SUPPORTED",
            [],
            "CMS Example 9 (S7): distinct 15-minute blocks, sequential; touching ends",
        ),
        (
            [svc("97140", 0, 15), svc("97530", 15, 15)],
            "NOT_SUPPORTED",
            ["E-PAIR-NO-MODIFIER"],
            "R-D3(1), I-4.4: no NCCI modifier on either line",
        ),
        (
            split_block(m140=("59",), m530=()),
            "NOT_SUPPORTED",
            ["W-MODIFIER-ON-COL1"],
            "R-D3(1) (S14): modifier on column 1 only",
        ),
        (
            [svc("97140", 0, 20), svc("97530", 10, 20, modifiers=["59"])],
            "NOT_SUPPORTED",
            ["E-PAIR-SAME-TIMEBLOCK"],
            "CMS Example 9: 'should not be reported ... same time block', 59 cannot fix it",
        ),
        (
            [svc("97140", 0, 15), svc("97530", 15, None, modifiers=["59"])],
            "INDETERMINATE",
            [],
            "R-E8, I-4.1: no usable start and end on a pair service",
        ),
        (
            [svc("97140", 0, 30), svc("97530", 30, 5)],
            "NOT_APPLICABLE",
            [],
            "R-D3(3), I-4.3: 35 min = 2 units, both kept by 97140 (R-B4); 97530 earns none",
        ),
        ([svc("97140", 0, 30)], "NOT_APPLICABLE", [], "I-4: only one code of the pair"),
        (
            [svc("97140", 0, 15), svc("97530", 15, 15, modifiers=["XU"])],
            "SUPPORTED",
            [],
            "R-D4 POLICY: XU accepted when the blocks do not overlap",
        ),
        (
            [svc("97140", 0, 15), svc("97530", 15, 15, modifiers=["59", "XU"])],
            "SUPPORTED",
            ["W-59-WITH-X"],
            "R-D4 (S9): 59 and an X modifier are not reported together; I-4.5",
        ),
    ],
)
def test_pair_status(
    services: list[TimedService], status: str, pair_findings: list[str], source: str
) -> None:
    analysis = run(visit(*services))
    assert analysis.pair.status.value == status, source
    found = [r for r in rules_of(analysis) if r in PAIR_RULES]
    assert found == pair_findings, source


PAIR_RULES = {
    "E-PAIR-NO-MODIFIER",
    "W-MODIFIER-ON-COL1",
    "E-PAIR-SAME-TIMEBLOCK",
    "W-MODIFIER-MISMATCH-XE",
    "W-MODIFIER-MISMATCH-XP",
    "W-MODIFIER-MISMATCH-XS",
    "W-59-WITH-X",
}


def test_split_block_units_and_columns() -> None:
    analysis = run(visit(*split_block()))
    assert dict(analysis.units) == {"97140": 1, "97530": 1}
    assert (analysis.pair.column1, analysis.pair.column2) == ("97140", "97530")
    assert analysis.pair.modifier_indicator == 1
    assert analysis.pair.pair_rule == "cms"


def test_no_modifier_fix_adds_59_on_column_2_charge() -> None:
    v = visit(
        svc("97140", 0, 15),
        svc("97530", 15, 15),
        charges=[charge("97140", 1, "GP"), charge("97530", 1, "GP")],
    )
    finding = only(run(v), "E-PAIR-NO-MODIFIER")
    assert finding.fixes == (
        Fix(line_code="97530", charge_refs=("ServiceRequest/sr-97530",), add_modifier="59"),
    )
    assert (finding.facts.column1, finding.facts.column2) == ("97140", "97530")


def test_modifiers_are_the_union_of_charges_and_services() -> None:
    v = visit(
        svc("97140", 0, 15),
        svc("97530", 15, 15),
        charges=[charge("97140", 1, "GP"), charge("97530", 1, "GP", "59")],
    )
    assert run(v).pair.status is PairStatus.SUPPORTED


def test_modifier_on_column_1_moves_to_column_2() -> None:
    finding = only(run(visit(*split_block(m140=("59",), m530=()))), "W-MODIFIER-ON-COL1")
    assert [(f.line_code, f.add_modifier, f.remove_modifier) for f in finding.fixes] == [
        ("97530", "59", None),
        ("97140", None, "59"),
    ]


@pytest.mark.parametrize(
    ("modifier", "first", "second", "status", "source"),
    [
        ("XE", {}, {}, "NOT_SUPPORTED", "R-D4 POLICY: XE needs different encounters"),
        (
            "XE",
            {"encounter": "Encounter/am"},
            {"encounter": "Encounter/pm"},
            "SUPPORTED",
            "R-D4: XE with different encounters",
        ),
        ("XE", {"encounter": None}, {}, "NOT_SUPPORTED", "R-D4: XE with an unknown encounter"),
        ("XP", {}, {}, "NOT_SUPPORTED", "R-D4 POLICY: XP needs different performers"),
        (
            "XP",
            {"performers": ["Practitioner/a"]},
            {"performers": ["Practitioner/b"]},
            "SUPPORTED",
            "R-D4: XP with different performers",
        ),
        ("XP", {"performers": []}, {}, "NOT_SUPPORTED", "R-D4: XP with no performer recorded"),
        ("XS", {}, {}, "NOT_SUPPORTED", "R-D4 POLICY: XS needs body sites on both"),
        (
            "XS",
            {"body_sites": ["sct|1"]},
            {"body_sites": ["sct|2"]},
            "SUPPORTED",
            "R-D4: XS with different body sites",
        ),
        (
            "XS",
            {"body_sites": ["sct|1"]},
            {"body_sites": ["sct|1"]},
            "NOT_SUPPORTED",
            "R-D4: XS with the same body site",
        ),
        ("XS", {"body_sites": ["sct|1"]}, {}, "NOT_SUPPORTED", "R-D4: XS with one site only"),
    ],
)
def test_x_modifier_conditions(
    modifier: str, first: dict, second: dict, status: str, source: str
) -> None:
    v = visit(svc("97140", 0, 15, **first), svc("97530", 15, 15, modifiers=[modifier], **second))
    analysis = run(v)
    assert analysis.pair.status.value == status, source
    mismatch = [r for r in rules_of(analysis) if r.startswith("W-MODIFIER-MISMATCH")]
    assert mismatch == ([] if status == "SUPPORTED" else [f"W-MODIFIER-MISMATCH-{modifier}"])
    if mismatch:
        fix = only(analysis, mismatch[0]).fixes[0]
        assert (fix.line_code, fix.remove_modifier, fix.add_modifier) == ("97530", modifier, "59")


def test_59_with_failing_x_suggests_removing_the_x() -> None:
    v = visit(svc("97140", 0, 15), svc("97530", 15, 15, modifiers=["59", "XE"]))
    analysis = run(v)
    assert analysis.pair.status is PairStatus.NOT_SUPPORTED
    assert only(analysis, "W-59-WITH-X").fixes[0].remove_modifier == "XE"
    assert only(analysis, "W-MODIFIER-MISMATCH-XE").fixes[0].add_modifier is None


def test_59_with_evidenced_x_suggests_removing_59() -> None:
    v = visit(svc("97140", 0, 15), svc("97530", 15, 15, modifiers=["59", "XU"]))
    assert only(run(v), "W-59-WITH-X").fixes[0].remove_modifier == "59"


@pytest.mark.parametrize(
    ("services", "cms", "strict", "source"),
    [
        (split_block(), "SUPPORTED", "SUPPORTED", f"{SPLIT}: 15 + 15 distinct minutes"),
        (
            [svc("97140", 0, 10), svc("97530", 10, 15, modifiers=["59"])],
            "SUPPORTED",
            "NOT_SUPPORTED",
            "R-D3 note POLICY: strict needs >= 15 distinct minutes for each code",
        ),
        (
            [svc("97140", 0, 20), svc("97530", 20, 14, modifiers=["59"])],
            "SUPPORTED",
            "NOT_SUPPORTED",
            "strict boundary 14 / 15",
        ),
    ],
)
def test_strict_pair_rule(services: list, cms: str, strict: str, source: str) -> None:
    v = visit(*services)
    assert run(v).pair.status.value == cms, source
    strict_result = run(v, pair_rule="strict")
    assert strict_result.pair.status.value == strict, source
    assert strict_result.pair.pair_rule == "strict"
    if strict == "NOT_SUPPORTED":
        finding = only(strict_result, "E-PAIR-SAME-TIMEBLOCK")
        assert (finding.facts.detail, finding.facts.pair_rule) == ("strict", "strict")


def test_ties_that_disagree_report_the_status_if_both_are_billed() -> None:
    # 8 + 8 + 8 = 24 min = 2 units among three tied codes (R-B6): one allocation of three
    # bills both pair codes.
    services = [svc("97110", 0, 8), svc("97140", 8, 8), svc("97530", 16, 8)]
    analysis = run(visit(*services))
    assert [dict(a) for a in analysis.allocations] == [
        {"97110": 1, "97140": 1, "97530": 0},
        {"97110": 1, "97140": 0, "97530": 1},
        {"97110": 0, "97140": 1, "97530": 1},
    ]
    assert analysis.pair.status is PairStatus.NOT_SUPPORTED
    assert analysis.pair.by_allocation == (
        PairStatus.NOT_APPLICABLE,
        PairStatus.NOT_APPLICABLE,
        PairStatus.NOT_SUPPORTED,
    )
    assert "bills only one" in only(analysis, "E-PAIR-NO-MODIFIER").message


def test_ties_resolved_by_the_billed_allocation() -> None:
    services = [svc("97110", 0, 8), svc("97140", 8, 8), svc("97530", 16, 8)]
    billed = [charge("97110", 1, "GP"), charge("97140", 1, "GP"), charge("97530", 0, "GP")]
    analysis = run(visit(*services, charges=billed))
    assert analysis.pair.status is PairStatus.NOT_APPLICABLE
    assert dict(analysis.units) == {"97110": 1, "97140": 1, "97530": 0}


def test_ama_vs_cms_changes_applicability() -> None:
    # R-C2: 7 min 97140 earns nothing under AMA; under CMS the pooled 27 min give it a unit.
    v = visit(svc("97140", 0, 7), svc("97530", 7, 20))
    assert run(v).pair.status is PairStatus.NOT_SUPPORTED
    assert run(v, payer_rule="ama").pair.status is PairStatus.NOT_APPLICABLE


def _table(*edits: PtpEdit) -> PtpTable:
    return PtpTable(edits, version="test", origin="test")


def test_column_direction_comes_from_the_table() -> None:
    reversed_pair = _table(PtpEdit("97530", "97140", 1, None))
    v = visit(*split_block(m140=("59",), m530=()))
    analysis = analyze_visit(v, ptp=reversed_pair, codes=CODES)
    assert analysis.pair.status is PairStatus.SUPPORTED
    assert (analysis.pair.column1, analysis.pair.column2) == ("97530", "97140")


def test_overlap_goes_to_the_table_column_1() -> None:
    reversed_pair = _table(PtpEdit("97530", "97140", 1, None))
    v = visit(svc("97140", 0, 20), svc("97530", 10, 20))
    analysis = analyze_visit(v, ptp=reversed_pair, codes=CODES)
    assert dict(analysis.minutes) == {"97140": 10, "97530": 20}


@pytest.mark.parametrize(
    ("table", "reason", "source"),
    [
        (_table(), "no-edit", "R-D2: no edit in the table"),
        (_table(PtpEdit("97140", "97530", 9, None)), "no-edit", "R-D1: indicator 9"),
        (
            _table(PtpEdit("97140", "97530", 1, date(2026, 1, 1))),
            "no-edit",
            "edit effective after the date of service",
        ),
        (
            _table(PtpEdit("97140", "97530", 1, date(2020, 1, 1), deleted=date(2025, 3, 4))),
            "no-edit",
            "edit deleted on the date of service",
        ),
    ],
)
def test_no_edit_in_effect(table: PtpTable, reason: str, source: str) -> None:
    v = visit(svc("97140", 0, 15), svc("97530", 15, 15))
    analysis = analyze_visit(v, ptp=table, codes=CODES)
    assert analysis.pair.status is PairStatus.NOT_APPLICABLE, source
    assert analysis.pair.reason == reason


def test_indicator_0_cannot_be_bypassed() -> None:
    v = visit(*split_block())
    analysis = analyze_visit(v, ptp=_table(PtpEdit("97140", "97530", 0, None)), codes=CODES)
    assert analysis.pair.status is PairStatus.NOT_SUPPORTED
    assert only(analysis, "E-PAIR-NO-MODIFIER").facts.detail == "indicator-0"


def test_group_delivered_97530_leaves_no_pair() -> None:
    v = visit(svc("97140", 0, 15), svc("97530", 15, 15, group=True))
    assert run(v).pair.status is PairStatus.NOT_APPLICABLE


def test_sub_minute_overlap_still_breaks_the_pair() -> None:
    # I-4.2: any positive-length intersection; 30 seconds floor to 0 minutes (R-H10).
    first = svc("97140", at=None, start=T0, end=T0 + timedelta(minutes=15, seconds=30))
    second = svc("97530", 15, 15, modifiers=["59"])
    analysis = run(visit(first, second))
    assert analysis.pair.status is PairStatus.NOT_SUPPORTED
    finding = only(analysis, "E-PAIR-SAME-TIMEBLOCK")
    assert finding.facts.minutes == 0
    assert "less than a minute" in finding.message


# ---- issue 14: no charge line can be read -> no claim about what was billed


def _no_charge_lines(*services: TimedService) -> TherapyVisit:
    return replace(visit(*services), charge_lines_read=False)


@pytest.mark.parametrize(
    ("services", "pair_rule", "status", "pair_findings"),
    [
        # distinct blocks, both earn a unit: step 4 has no line to read
        ([svc("97140", 0, 15), svc("97530", 15, 15)], "cms", "INDETERMINATE", []),
        # the same time block is a fact of the documentation, charges or not
        (
            [svc("97140", 0, 20), svc("97530", 10, 20)],
            "cms",
            "NOT_SUPPORTED",
            ["E-PAIR-SAME-TIMEBLOCK"],
        ),
        # so is the strict reading's 15 minutes of own time
        (
            [svc("97140", 0, 10), svc("97530", 10, 20)],
            "strict",
            "NOT_SUPPORTED",
            ["E-PAIR-SAME-TIMEBLOCK"],
        ),
        # steps 1 and 3 come first
        ([svc("97140", 0, 15), svc("97530", 15, None)], "cms", "INDETERMINATE", []),
        ([svc("97140", 0, 30), svc("97530", 30, 5)], "cms", "NOT_APPLICABLE", []),
    ],
)
def test_without_charge_lines_the_pair_never_claims_a_missing_modifier(
    services: list[TimedService], pair_rule: PairRule, status: str, pair_findings: list[str]
) -> None:
    analysis = run(_no_charge_lines(*services), pair_rule=pair_rule)
    assert analysis.pair.status.value == status
    assert [r for r in rules_of(analysis) if r in PAIR_RULES] == pair_findings
    assert "I-CHARGES-NOT-AVAILABLE" in rules_of(analysis)
    assert "E-UNITS-EXCEED" not in rules_of(analysis)


def test_charges_not_available_says_what_the_pair_needs() -> None:
    analysis = run(_no_charge_lines(svc("97140", 0, 15), svc("97530", 15, 15)))
    assert analysis.pair.reason == "no-charges"
    finding = only(analysis, "I-CHARGES-NOT-AVAILABLE")
    assert finding.severity.value == "info"
    assert "not checked" in finding.message
    assert "59 (or XU)" in finding.message
    assert finding.codes == ("97140", "97530")
    # the same visit with its lines read (the default of a visit built by hand) is judged
    assert run(visit(svc("97140", 0, 15), svc("97530", 15, 15))).pair.status.value == (
        "NOT_SUPPORTED"
    )


def test_indicator_0_holds_whatever_was_billed() -> None:
    v = _no_charge_lines(*split_block(m530=()))
    analysis = analyze_visit(v, ptp=_table(PtpEdit("97140", "97530", 0, None)), codes=CODES)
    assert analysis.pair.status is PairStatus.NOT_SUPPORTED
    assert only(analysis, "E-PAIR-NO-MODIFIER").facts.detail == "indicator-0"
