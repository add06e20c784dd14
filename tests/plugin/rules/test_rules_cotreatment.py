"""Co-treatment: 97140 under one discipline and 97530 under another on one date (R-D1, I-4).

NCCI edits apply across the disciplines of one billing provider, so the pair is checked like a
visit's own pair: distinct time blocks, a modifier on the column-2 line. Findings go on the
visit holding column 2; the pair status shows on both visits.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from rules_builders import CODES, T0, charge, svc, visit

from fhir_mappings.model import Discipline, EncounterInfo, TherapyVisit, VisitGrouping
from plugin.rules import (
    PairStatus,
    PtpEdit,
    PtpTable,
    RuleId,
    VisitAnalysis,
    analyze,
    analyze_visit,
)
from plugin.rules.pair import PairRule

PAIR_IDS = {
    "E-PAIR-NO-MODIFIER",
    "E-PAIR-SAME-TIMEBLOCK",
    "W-MODIFIER-ON-COL1",
    "W-MODIFIER-MISMATCH-XE",
    "W-MODIFIER-MISMATCH-XP",
    "W-MODIFIER-MISMATCH-XS",
    "W-59-WITH-X",
}


def pt_visit(
    *,
    at: float = 0,
    minutes: float = 20,
    modifiers: tuple[str, ...] = ("GP",),
    performer: str = "Practitioner/pt",
    encounter: str = "Encounter/pt",
    end: bool = True,
    code: str = "97140",
    discipline: Discipline = Discipline.PT,
) -> TherapyVisit:
    service = svc(
        code,
        at,
        minutes if end else None,
        ref="Procedure/pt",
        performers=(performer,),
        encounter=encounter,
    )
    if not end:
        service = replace(service, end=None)
    return visit(
        service,
        charges=[charge(code, 1, *modifiers, ref="ServiceRequest/pt")],
        discipline=discipline,
    )


def ot_visit(
    *,
    at: float = 20,
    minutes: float = 25,
    modifiers: tuple[str, ...] = ("GO",),
    performer: str = "Practitioner/ot",
    encounter: str = "Encounter/ot",
    charged: bool = True,
    code: str = "97530",
    discipline: Discipline = Discipline.OT,
) -> TherapyVisit:
    service = svc(
        code, at, minutes, ref="Procedure/ot", performers=(performer,), encounter=encounter
    )
    if not charged:  # what the mappers build for a visit without any charge line
        return replace(visit(service, discipline=discipline), charge_lines_read=False)
    return visit(
        service,
        charges=[charge(code, 2, *modifiers, ref="ServiceRequest/ot")],
        discipline=discipline,
    )


def with_provider(v: TherapyVisit, encounter: str, provider: str | None) -> TherapyVisit:
    info = EncounterInfo(
        ref=encounter,
        status="finished",
        start=T0,
        end=None,
        service_date=v.service_date,
        patient=v.patient,
        service_provider=provider,
    )
    return replace(v, encounters=(info,))


def both(
    first: TherapyVisit,
    second: TherapyVisit,
    *,
    ptp: PtpTable | None = None,
    pair_rule: PairRule = "cms",
) -> dict[str, VisitAnalysis]:
    analysis = analyze(
        VisitGrouping(visits=(first, second)), codes=CODES, ptp=ptp, pair_rule=pair_rule
    )
    return {v.discipline.value: v for v in analysis.visits}


def pair_rules(v: VisitAnalysis) -> list[str]:
    return sorted(f.rule.value for f in v.findings if f.rule.value in PAIR_IDS)


def test_xp_on_97530_with_distinct_blocks_is_supported_on_both_visits() -> None:
    result = both(pt_visit(), ot_visit(modifiers=("GO", "XP")))
    assert result["OT"].pair.status is PairStatus.SUPPORTED
    assert result["PT"].pair.status is PairStatus.SUPPORTED
    assert result["OT"].pair.co_treatment == ("PT", "OT")
    assert result["PT"].pair.co_treatment == ("PT", "OT")
    assert pair_rules(result["OT"]) == pair_rules(result["PT"]) == []
    # the pair is checked in full, so it is not noted as "not checked further"
    assert not [f for v in result.values() for f in v.findings if f.rule is RuleId.I_OTHER_PTP]


@pytest.mark.parametrize("modifier", ["59", "XU"])
def test_59_or_xu_on_97530_is_supported(modifier: str) -> None:
    result = both(pt_visit(), ot_visit(modifiers=("GO", modifier)))
    assert result["OT"].pair.status is PairStatus.SUPPORTED


def test_no_modifier_is_an_error_on_the_column_2_visit_with_xp_suggested() -> None:
    result = both(pt_visit(), ot_visit())
    assert pair_rules(result["OT"]) == ["E-PAIR-NO-MODIFIER"]
    assert pair_rules(result["PT"]) == []
    assert result["OT"].pair.status is PairStatus.NOT_SUPPORTED
    assert result["PT"].pair.status is PairStatus.NOT_SUPPORTED, "the status shows on both"
    (finding,) = [f for f in result["OT"].findings if f.rule is RuleId.E_PAIR_NO_MODIFIER]
    assert finding.message.startswith("Co-treatment (PT 97140, OT 97530 on this visit")
    assert "same billing provider assumed" in finding.message, "no serviceProvider: says so"
    assert finding.facts.co_treatment == ("PT", "OT")
    assert set(finding.resources) == {"Procedure/pt", "Procedure/ot"}
    (fix,) = finding.fixes
    # different therapists recorded: XP, the more descriptive modifier (R-D4)
    assert (fix.line_code, fix.charge_refs, fix.add_modifier) == (
        "97530",
        ("ServiceRequest/ot",),
        "XP",
    )


def test_no_modifier_with_one_performer_suggests_59() -> None:
    result = both(pt_visit(performer="Practitioner/x"), ot_visit(performer="Practitioner/x"))
    (finding,) = [f for f in result["OT"].findings if f.rule is RuleId.E_PAIR_NO_MODIFIER]
    assert finding.fixes[0].add_modifier == "59"


def test_overlapping_blocks_are_the_same_time_block() -> None:
    # PT 97140 09:00-09:20, OT 97530 09:10-09:35: ten shared minutes (R-D3(2)).
    result = both(pt_visit(), ot_visit(at=10, modifiers=("GO", "59")))
    assert pair_rules(result["OT"]) == ["E-PAIR-SAME-TIMEBLOCK"]
    (finding,) = [f for f in result["OT"].findings if f.rule is RuleId.E_PAIR_SAME_TIMEBLOCK]
    assert finding.facts.minutes == 10
    assert finding.facts.detail == "overlap"
    assert "overlap by 10 minutes" in finding.message
    assert result["OT"].pair.status is PairStatus.NOT_SUPPORTED
    assert result["PT"].pair.status is PairStatus.NOT_SUPPORTED
    assert result["PT"].pair.reason == "same-timeblock"


def test_touching_blocks_do_not_overlap() -> None:
    result = both(pt_visit(), ot_visit(at=20, modifiers=("GO", "59")))
    assert result["OT"].pair.status is PairStatus.SUPPORTED


def test_xp_needs_different_performers() -> None:
    result = both(
        pt_visit(performer="Practitioner/x"),
        ot_visit(performer="Practitioner/x", modifiers=("GO", "XP")),
    )
    assert pair_rules(result["OT"]) == ["W-MODIFIER-MISMATCH-XP"]
    assert result["PT"].pair.status is PairStatus.NOT_SUPPORTED


def test_xe_needs_different_encounters() -> None:
    same = both(
        pt_visit(encounter="Encounter/one"),
        ot_visit(encounter="Encounter/one", modifiers=("GO", "XE")),
    )
    assert pair_rules(same["OT"]) == ["W-MODIFIER-MISMATCH-XE"]
    separate = both(pt_visit(), ot_visit(modifiers=("GO", "XE")))
    assert separate["OT"].pair.status is PairStatus.SUPPORTED


def test_modifier_on_the_97140_line_only() -> None:
    result = both(pt_visit(modifiers=("GP", "59")), ot_visit())
    assert pair_rules(result["OT"]) == ["W-MODIFIER-ON-COL1"]
    (finding,) = [f for f in result["OT"].findings if f.rule is RuleId.W_MODIFIER_ON_COL1]
    assert {
        (f.line_code, f.charge_refs, f.add_modifier, f.remove_modifier) for f in finding.fixes
    } == {
        ("97530", ("ServiceRequest/ot",), "59", None),
        ("97140", ("ServiceRequest/pt",), None, "59"),
    }


def test_vice_versa_97530_under_pt_and_97140_under_ot() -> None:
    result = both(
        pt_visit(code="97530", modifiers=("GP",), minutes=25),
        ot_visit(code="97140", modifiers=("GO",), at=25, minutes=20),
    )
    assert pair_rules(result["PT"]) == ["E-PAIR-NO-MODIFIER"]
    assert pair_rules(result["OT"]) == []
    assert result["PT"].pair.co_treatment == ("OT", "PT")
    assert result["OT"].pair.status is PairStatus.NOT_SUPPORTED


def test_column_order_comes_from_the_table() -> None:
    # With a table whose column 2 is 97140 the modifier belongs on the 97140 line (PT).
    table = PtpTable((PtpEdit("97530", "97140", 1, None),), version="test", origin="test")
    result = both(pt_visit(), ot_visit(modifiers=("GO", "XP")), ptp=table)
    assert pair_rules(result["PT"]) == ["W-MODIFIER-ON-COL1"]
    assert pair_rules(result["OT"]) == []
    assert (result["PT"].pair.column1, result["PT"].pair.column2) == ("97530", "97140")


def test_different_billing_providers_are_not_a_pair() -> None:
    # R-D1: the edit applies to one provider's claims; Encounter.serviceProvider differs.
    pt = with_provider(pt_visit(), "Encounter/pt", "Organization/a")
    ot = with_provider(ot_visit(), "Encounter/ot", "Organization/b")
    result = both(pt, ot)
    assert pair_rules(result["OT"]) == []
    assert result["OT"].pair.status is PairStatus.NOT_APPLICABLE
    assert result["PT"].pair.status is PairStatus.NOT_APPLICABLE
    assert result["OT"].pair.co_treatment == ()


def test_same_billing_provider_recorded_is_named() -> None:
    pt = with_provider(pt_visit(), "Encounter/pt", "Organization/a")
    ot = with_provider(ot_visit(), "Encounter/ot", "Organization/a")
    (finding,) = [f for f in both(pt, ot)["OT"].findings if f.rule is RuleId.E_PAIR_NO_MODIFIER]
    assert "same billing provider)" in finding.message
    assert "assumed" not in finding.message


def test_a_code_without_a_unit_leaves_no_pair() -> None:
    # OT 97530 for 5 minutes earns no unit on its own visit (R-D3(3)).
    result = both(pt_visit(), ot_visit(minutes=5))
    assert result["OT"].pair.status is PairStatus.NOT_APPLICABLE
    assert result["PT"].pair.status is PairStatus.NOT_APPLICABLE
    assert pair_rules(result["OT"]) == []


def test_missing_end_is_indeterminate_on_both_visits() -> None:
    result = both(pt_visit(end=False), ot_visit())
    assert result["OT"].pair.status is PairStatus.INDETERMINATE
    assert result["PT"].pair.status is PairStatus.INDETERMINATE


def test_column_2_visit_without_charges_is_indeterminate() -> None:
    # Nothing says what the OT visit bills (issue 14): its modifier is not guessed.
    result = both(pt_visit(), ot_visit(charged=False))
    assert result["OT"].pair.status is PairStatus.INDETERMINATE
    assert result["OT"].pair.reason == "no-charges"
    assert result["PT"].pair.status is PairStatus.INDETERMINATE
    assert "I-CHARGES-NOT-AVAILABLE" in [f.rule.value for f in result["OT"].findings]
    assert pair_rules(result["OT"]) == []


def test_strict_pair_rule_applies_across_visits() -> None:
    result = both(pt_visit(minutes=10), ot_visit(at=10, modifiers=("GO", "XP")), pair_rule="strict")
    (finding,) = [f for f in result["OT"].findings if f.rule is RuleId.E_PAIR_SAME_TIMEBLOCK]
    assert finding.facts.detail == "strict"
    assert "97140 has 10" in finding.message
    assert result["PT"].pair.status is PairStatus.NOT_SUPPORTED


def test_a_visit_holding_both_codes_keeps_its_own_pair() -> None:
    # PT holds 97140 and 97530 (with 59): its own pair stands; the OT 97530 is checked against
    # the PT 97140 as a co-treatment.
    pt = visit(
        svc("97140", 0, 15, ref="Procedure/pt1", performers=("Practitioner/pt",)),
        svc("97530", 15, 15, ref="Procedure/pt2", performers=("Practitioner/pt",)),
        charges=[charge("97140", 1, "GP"), charge("97530", 1, "GP", "59")],
    )
    result = both(pt, ot_visit(at=30, minutes=20, modifiers=("GO", "XP")))
    assert result["PT"].pair.status is PairStatus.SUPPORTED
    assert result["PT"].pair.co_treatment == ()
    assert result["OT"].pair.status is PairStatus.SUPPORTED
    assert result["OT"].pair.co_treatment == ("PT", "OT")


def test_analyze_visit_with_the_same_day_agrees_with_analyze() -> None:
    pt, ot = pt_visit(), ot_visit()
    together = both(pt, ot)
    alone = analyze_visit(ot, same_day=[pt], codes=CODES)
    assert alone.pair == together["OT"].pair
    assert alone.findings == together["OT"].findings
    without = analyze_visit(ot, codes=CODES)
    assert without.pair.status is PairStatus.NOT_APPLICABLE, "no other visit: nothing guessed"
