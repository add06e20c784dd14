"""Plan of care and documentation flags (I-5; R-E1, R-E3, R-E4, R-E5, R-G1)."""

from __future__ import annotations

from datetime import date

import pytest
from rules_builders import charge, only, plan, rules_of, run, svc, visit

from fhir_mappings.model import Discipline
from plugin.rules import Fix

PLAN_RULES = {"W-NO-PLAN-OF-CARE", "E-PLAN-NOT-ACTIVE", "E-PLAN-PERIOD", "W-RECERT-DUE"}


@pytest.mark.parametrize(
    ("plans", "on", "expected", "source"),
    [
        ([plan()], date(2025, 3, 4), [], "R-E1: active plan, DOS in period, 31 days in"),
        ([plan(status="completed")], date(2025, 3, 4), ["E-PLAN-NOT-ACTIVE"], "R-H9 status"),
        ([plan(status="draft")], date(2025, 3, 4), ["E-PLAN-NOT-ACTIVE"], "R-H9 status"),
        ([plan(status=None)], date(2025, 3, 4), ["E-PLAN-NOT-ACTIVE"], "R-H9: unknown status"),
        ([plan()], date(2025, 1, 31), ["E-PLAN-PERIOD"], "R-E1: DOS before plan start"),
        ([plan()], date(2025, 5, 1), ["E-PLAN-PERIOD"], "R-E4: DOS after plan end"),
        ([plan()], date(2025, 4, 30), [], "period end is inclusive"),
        ([plan(end=None)], date(2025, 5, 3), ["W-RECERT-DUE"], "R-E4: 91 days after start"),
        (
            [plan(end=None, certifications=[date(2025, 4, 20)])],
            date(2025, 6, 1),
            [],
            "R-E4/R-H9: recertification 2025-04-20 restarts the 90 days",
        ),
        (
            [plan(end=None, certifications=[date(2025, 6, 10)])],
            date(2025, 6, 1),
            ["W-RECERT-DUE"],
            "a certification after the date of service does not count",
        ),
        (
            [plan(status="completed"), plan("ServiceRequest/ref", kind="ServiceRequest")],
            date(2025, 3, 4),
            [],
            "best linked plan decides: the active ServiceRequest covers the service",
        ),
    ],
)
def test_plan_checks(plans: list, on: date, expected: list[str], source: str) -> None:
    refs = [p.ref for p in plans]
    v = visit(svc("97110", 0, 20, plan_refs=refs), plans=plans, on=on)
    assert [r for r in rules_of(run(v)) if r in PLAN_RULES] == expected, source


def test_recert_boundary_exactly_90_days() -> None:
    v = visit(svc("97110", 0, 20), plans=[plan(end=None)], on=date(2025, 5, 2))
    assert (date(2025, 5, 2) - date(2025, 2, 1)).days == 90
    assert "W-RECERT-DUE" not in rules_of(run(v)), "R-E4: 'at least every 90 days'"


def test_recert_facts() -> None:
    v = visit(svc("97110", 0, 20), plans=[plan(end=None)], on=date(2025, 5, 10))
    finding = only(run(v), "W-RECERT-DUE")
    assert finding.facts.certified_on == date(2025, 2, 1)
    assert finding.facts.days_since_certification == 98
    assert finding.resources == ("CarePlan/cp1", "Procedure/97110-0")


def test_no_plan_of_care() -> None:
    v = visit(svc("97110", 0, 20, plan_refs=()), svc("97530", 20, 20), plans=[plan()])
    finding = only(run(v), "W-NO-PLAN-OF-CARE")
    assert finding.codes == ("97110",)
    assert finding.resources == ("Procedure/97110-0",)


def test_unresolved_plan_link_is_unverified_not_missing() -> None:
    v = visit(
        svc("97110", 0, 20, plan_refs=["CarePlan/elsewhere"]),
        plans=[],
        unresolved=["CarePlan/elsewhere"],
    )
    analysis = run(v)
    assert not [r for r in rules_of(analysis) if r in PLAN_RULES]
    assert analysis.unverified_plan_refs == ("CarePlan/elsewhere",)


def test_unresolved_link_beside_a_failing_plan_suppresses_the_error() -> None:
    v = visit(
        svc("97110", 0, 20, plan_refs=["CarePlan/cp1", "CarePlan/elsewhere"]),
        plans=[plan(status="completed")],
    )
    analysis = run(v)
    assert "E-PLAN-NOT-ACTIVE" not in rules_of(analysis)
    assert analysis.unverified_plan_refs == ("CarePlan/elsewhere",)


def test_no_reason() -> None:
    v = visit(svc("97110", 0, 20, has_reason=False), svc("97530", 20, 20))
    finding = only(run(v), "W-NO-REASON")
    assert finding.resources == ("Procedure/97110-0",)


@pytest.mark.parametrize(
    ("discipline", "charges", "modifiers", "expected", "source"),
    [
        (Discipline.PT, [charge("97110", 1, "GP")], (), None, "R-G1: GP on the line"),
        (Discipline.PT, [charge("97110", 1)], (), "GP", "R-G1: billed line without GP/GO/GN"),
        (Discipline.OT, [charge("97110", 1)], (), "GO", "R-G1: OT plan -> GO"),
        (Discipline.PT, [], ("GP",), None, "R-G1: modifier on the Procedure extension"),
        (Discipline.PT, [], (), None, "nothing billed yet: no line to check"),
        (Discipline.UNKNOWN, [], (), "", "I-2.5: discipline unknown -> flag, no fix"),
    ],
)
def test_discipline_modifier(
    discipline: Discipline,
    charges: list,
    modifiers: tuple[str, ...],
    expected: str | None,
    source: str,
) -> None:
    v = visit(svc("97110", 0, 20, modifiers=modifiers), charges=charges, discipline=discipline)
    analysis = run(v)
    if expected is None:
        assert "W-DISCIPLINE-MODIFIER-MISSING" not in rules_of(analysis), source
        return
    finding = only(analysis, "W-DISCIPLINE-MODIFIER-MISSING")
    if expected:
        assert finding.fixes == (
            Fix(line_code="97110", charge_refs=("ServiceRequest/sr-97110",), add_modifier=expected),
        ), source
    else:
        assert finding.fixes == (), source


def test_untimed_line_does_not_need_the_timed_check() -> None:
    v = visit(
        svc("97110", 0, 20),
        svc("97161", 20, 30),
        charges=[charge("97110", 1, "GP"), charge("97161", 1)],
    )
    assert "W-DISCIPLINE-MODIFIER-MISSING" not in rules_of(run(v))
