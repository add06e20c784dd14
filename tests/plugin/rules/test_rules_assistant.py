"""CQ/CO assistant modifiers (R-G3): W-ASSISTANT-MODIFIER-MISSING / -UNSUPPORTED."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest
from rules_builders import charge, only, rules_of, run, svc, visit

from fhir_mappings.model import Discipline, PerformerRole, TimedService
from plugin.rules import Fix
from plugin.rules.assistant import above_de_minimis, own_units

PTA, OTA, OTHER, UNKNOWN = (
    PerformerRole.PTA,
    PerformerRole.OTA,
    PerformerRole.OTHER,
    PerformerRole.UNKNOWN,
)
MISSING, UNSUPPORTED = "W-ASSISTANT-MODIFIER-MISSING", "W-ASSISTANT-MODIFIER-UNSUPPORTED"


def by(role: PerformerRole, code: str, at: float, minutes: float, **kw: object) -> TimedService:
    return dataclasses.replace(
        svc(code, at, minutes, ref=f"Procedure/{code}-{at}", **kw),  # type: ignore[arg-type]
        performer_role=role,
    )


def test_de_minimis_boundary_exactly_10_percent_is_not_above() -> None:
    assert not above_de_minimis(3, 30)  # exactly 10 %
    assert above_de_minimis(4, 30)
    assert not above_de_minimis(0, 0)
    assert [own_units(m) for m in (7, 8, 22, 23, 37, 38)] == [0, 1, 1, 2, 2, 3]


@pytest.mark.parametrize(
    ("therapist", "assistant", "units", "expected"),
    [
        (27, 3, 2, False),  # 3 of 30 = exactly 10 %: not "more than" 10 %
        (26, 4, 2, False),  # over 10 %, but the PT's own 26 minutes earn both units
        (20, 5, 2, True),  # 5 of 25 = 20 %; the PT's 20 minutes earn 1 of 2 units
        (15, 20, 2, True),  # the sample assistant-cq-missing.json
        (0, 30, 2, True),  # in whole
    ],
)
def test_missing_cq_follows_share_and_own_units(
    therapist: int, assistant: int, units: int, expected: bool
) -> None:
    services = [by(OTHER, "97110", 0, therapist)] if therapist else []
    services.append(by(PTA, "97110", therapist, assistant))
    analysis = run(visit(*services, charges=[charge("97110", units, "GP")]))
    assert (MISSING in rules_of(analysis)) is expected
    if expected:
        finding = only(analysis, MISSING)
        assert finding.facts.minutes == assistant
        assert finding.fixes == (
            Fix(line_code="97110", charge_refs=("ServiceRequest/sr-97110",), add_modifier="CQ"),
        )


def test_ot_needs_co_and_a_pta_on_an_ot_visit_is_not_an_ota() -> None:
    ot = run(
        visit(by(OTA, "97530", 0, 30), charges=[charge("97530", 2, "GO")], discipline=Discipline.OT)
    )
    assert only(ot, MISSING).fixes[0].add_modifier == "CO"
    cross = run(
        visit(by(PTA, "97530", 0, 30), charges=[charge("97530", 2, "GO")], discipline=Discipline.OT)
    )
    assert MISSING not in rules_of(cross)


def test_the_modifier_present_or_split_lines_satisfy_it() -> None:
    done = run(visit(by(PTA, "97110", 0, 30), charges=[charge("97110", 2, "GP", "CQ")]))
    assert MISSING not in rules_of(done)
    assert UNSUPPORTED not in rules_of(done)
    split = run(
        visit(
            by(OTHER, "97110", 0, 15),
            by(PTA, "97110", 15, 15),
            charges=[
                charge("97110", 1, "GP", ref="ServiceRequest/a"),
                charge("97110", 1, "GP", "CQ", ref="ServiceRequest/b"),
            ],
        )
    )
    assert MISSING not in rules_of(split)


def test_no_guess_without_readable_performers() -> None:
    unknown = run(visit(by(UNKNOWN, "97110", 0, 30), charges=[charge("97110", 2, "GP", "CQ")]))
    assert UNSUPPORTED not in rules_of(unknown)
    assert MISSING not in rules_of(unknown)
    partly = run(
        visit(
            by(UNKNOWN, "97110", 0, 15),
            by(PTA, "97110", 15, 20),
            charges=[charge("97110", 2, "GP")],
        )
    )
    assert MISSING not in rules_of(partly)


def test_unsupported_modifier_is_removed() -> None:
    analysis = run(
        visit(
            by(OTHER, "97530", 0, 30),
            charges=[charge("97530", 2, "GO", "CO")],
            discipline=Discipline.OT,
        )
    )
    finding = only(analysis, UNSUPPORTED)
    assert finding.fixes == (
        Fix(line_code="97530", charge_refs=("ServiceRequest/sr-97530",), remove_modifier="CO"),
    )


def test_not_required_before_2020() -> None:
    v = visit(
        by(PTA, "97110", 0, 30, service_date=date(2019, 12, 31)),
        charges=[charge("97110", 2, "GP")],
        on=date(2019, 12, 31),
    )
    assert MISSING not in rules_of(run(v))
