"""Visit grouping (I-2.1, I-2.4, I-2.5, R-B2, R-B2a, R-B2b) and charge attachment."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from fhir_builders import bundle, care_plan, claim, encounter, procedure, service_request

from fhir_mappings import (
    Discipline,
    SetAsideReason,
    TherapyRecord,
    group_visits,
    map_bundle,
    map_cds_hooks,
)


def grouped(*resources: dict[str, Any]) -> tuple[TherapyRecord, Any]:
    record = map_bundle(bundle(*resources))
    return record, group_visits(record)


@pytest.mark.parametrize(
    ("source", "status", "reason"),
    [
        ("I-2.1 entered-in-error", "entered-in-error", SetAsideReason.IGNORED_STATUS),
        ("I-2.1 not-done", "not-done", SetAsideReason.IGNORED_STATUS),
        ("R-H6 in-progress", "in-progress", SetAsideReason.IGNORED_STATUS),
        ("R-H6 completed stays", "completed", None),
    ],
)
def test_status_sets_services_aside(
    source: str, status: str, reason: SetAsideReason | None
) -> None:
    _, grouping = grouped(procedure(status=status))
    if reason is None:
        assert len(grouping.visits) == 1, source
        assert grouping.set_aside == ()
    else:
        assert grouping.visits == (), source
        assert [a.reason for a in grouping.set_aside] == [reason]


def test_no_date_is_set_aside() -> None:
    _, grouping = grouped(procedure(start=None, end=None, encounter=None))
    assert [a.reason for a in grouping.set_aside] == [SetAsideReason.NO_DATE]


def test_no_patient_set_aside_when_input_has_several_patients() -> None:
    _, grouping = grouped(
        procedure(id="a", patient=None),
        procedure(id="b", patient="Patient/P1"),
        procedure(id="c", patient="Patient/P2"),
    )
    assert [(a.service.ref, a.reason) for a in grouping.set_aside] == [
        ("Procedure/a", SetAsideReason.NO_PATIENT)
    ]
    assert len(grouping.visits) == 2


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ("no subject", {"patient": None}),
        ("Group subject (R-H8)", {"subject": "Group/G1"}),
    ],
)
def test_sole_patient_is_assumed(shape: str, kwargs: dict[str, Any]) -> None:
    """POLICY: with exactly one patient in the input, data without one belongs to it."""
    _, grouping = grouped({"resourceType": "Patient", "id": "P1"}, procedure(**kwargs))
    assert [v.patient for v in grouping.visits] == ["Patient/P1"], shape


def test_context_patient_is_assumed_in_cds_hooks() -> None:
    record = map_cds_hooks(None, {"p": procedure(subject="Group/G1")}, patient_id="P9")
    grouping = group_visits(record)
    assert [v.patient for v in grouping.visits] == ["Patient/P9"]


def test_one_visit_per_day_across_encounters_r_b2b() -> None:
    _, grouping = grouped(
        encounter(id="E1"),
        encounter(id="E2", start="2025-03-04T14:00:00-05:00", end="2025-03-04T15:00:00-05:00"),
        procedure(
            id="pm",
            encounter="Encounter/E2",
            start="2025-03-04T14:05:00-05:00",
            end="2025-03-04T14:20:00-05:00",
            modifiers=("GP",),
        ),
        procedure(id="am", encounter="Encounter/E1", modifiers=("GP",)),
    )
    (visit,) = grouping.visits
    assert [s.ref for s in visit.services] == ["Procedure/am", "Procedure/pm"]  # start order
    assert [e.ref for e in visit.encounters] == ["Encounter/E1", "Encounter/E2"]
    assert visit.service_date == date(2025, 3, 4)


def test_days_and_patients_split_visits_r_b2() -> None:
    _, grouping = grouped(
        procedure(id="d1"),
        procedure(id="d2", start="2025-03-05T09:00:00-05:00", end="2025-03-05T09:20:00-05:00"),
        procedure(id="other", patient="Patient/P2"),
    )
    assert [(v.patient, v.service_date) for v in grouping.visits] == [
        ("Patient/P1", date(2025, 3, 4)),
        ("Patient/P1", date(2025, 3, 5)),
        ("Patient/P2", date(2025, 3, 4)),
    ]


@pytest.mark.parametrize(
    ("source", "resources", "discipline"),
    [
        ("I-2.5 GP on the service", [procedure(modifiers=("GP",), based_on=())], Discipline.PT),
        (
            "I-2.5 GO on the service",
            [procedure(modifiers=("GO", "59"), based_on=())],
            Discipline.OT,
        ),
        (
            "I-2.5 GN on a charge for the same code",
            [procedure(based_on=()), service_request(modifiers=("GN",))],
            Discipline.SLP,
        ),
        (
            "I-2.5 plan discipline",
            [procedure(), care_plan(discipline_code="GO")],
            Discipline.OT,
        ),
        ("I-2.5 nothing known", [procedure(based_on=())], Discipline.UNKNOWN),
    ],
)
def test_discipline_resolution(
    source: str, resources: list[dict[str, Any]], discipline: Discipline
) -> None:
    _, grouping = grouped(*resources)
    assert [v.discipline for v in grouping.visits] == [discipline], source


def test_disciplines_split_the_day_r_b2a() -> None:
    _, grouping = grouped(
        procedure(id="pt", modifiers=("GP",)),
        procedure(id="ot", code="97535", modifiers=("GO",)),
    )
    assert [(v.discipline, v.services[0].ref) for v in grouping.visits] == [
        (Discipline.OT, "Procedure/ot"),
        (Discipline.PT, "Procedure/pt"),
    ]


def test_undated_draft_orders_attach_by_code() -> None:
    _, grouping = grouped(
        procedure(id="pt", code="97530", modifiers=("GP",)),
        procedure(id="ot", code="97535", modifiers=("GO",)),
        service_request(id="sr-pt", code="97530", modifiers=("GP", "59")),
        service_request(id="sr-ot", code="97535", modifiers=("GO",)),
    )
    charges = {v.discipline: [c.ref for c in v.charges] for v in grouping.visits}
    assert charges == {
        Discipline.PT: ["ServiceRequest/sr-pt"],
        Discipline.OT: ["ServiceRequest/sr-ot"],
    }
    assert grouping.unattached_charges == ()


def test_undated_charge_for_undocumented_code_joins_the_only_visit() -> None:
    _, grouping = grouped(procedure(), service_request(code="97140"))
    assert [c.ref for c in grouping.visits[0].charges] == ["ServiceRequest/sr1"]


def test_dated_charge_on_another_day_is_unattached() -> None:
    _, grouping = grouped(procedure(), service_request(occurrence="2025-03-09"))
    assert grouping.visits[0].charges == ()
    assert [c.ref for c in grouping.unattached_charges] == ["ServiceRequest/sr1"]


def test_claim_line_attaches_to_its_procedures_visit() -> None:
    _, grouping = grouped(procedure(), claim())
    assert [c.ref for c in grouping.visits[0].charges] == ["Claim/C1#item-1"]
    assert grouping.visits[0].discipline is Discipline.PT  # GP reflected from the claim line


def test_plans_resolved_and_unresolved() -> None:
    _, grouping = grouped(
        care_plan(),
        procedure(id="a", based_on=("CarePlan/CP1",)),
        procedure(id="b", based_on=("CarePlan/missing",)),
        service_request(based_on=("CarePlan/CP1",)),
    )
    (visit,) = grouping.visits
    assert [p.ref for p in visit.plans] == ["CarePlan/CP1"]
    assert visit.unresolved_plan_refs == ("CarePlan/missing",)


def test_empty_record_groups_to_nothing() -> None:
    grouping = group_visits(map_bundle(bundle()))
    assert grouping.visits == ()
    assert grouping.set_aside == ()


def test_services_without_start_time_come_last() -> None:
    _, grouping = grouped(
        procedure(id="a-dated", start="2025-03-04", end="2025-03-04"),
        procedure(id="b-late", start="2025-03-04T11:00:00-05:00", end="2025-03-04T11:10:00-05:00"),
        procedure(id="c-early", start="2025-03-04T08:00:00-05:00", end="2025-03-04T08:10:00-05:00"),
    )
    (visit,) = grouping.visits
    assert [s.ref for s in visit.services] == [
        "Procedure/c-early",
        "Procedure/b-late",
        "Procedure/a-dated",
    ]


def test_services_with_the_same_start_are_ordered_by_reference() -> None:
    same = {"start": "2025-03-04T08:00:00-05:00", "end": "2025-03-04T08:10:00-05:00"}
    _, grouping = grouped(
        procedure(id="b", **same),
        procedure(id="a", start="2025-03-04T13:00:00Z", end="2025-03-04T13:10:00Z"),  # same instant
        procedure(id="c", start="2025-03-04T07:00:00-05:00", end="2025-03-04T07:10:00-05:00"),
    )
    (visit,) = grouping.visits
    assert [s.ref for s in visit.services] == ["Procedure/c", "Procedure/a", "Procedure/b"]
