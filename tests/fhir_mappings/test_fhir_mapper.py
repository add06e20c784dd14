"""Fast-path mapping, shape by shape; R4 and R5 side by side give the same domain model."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fhir_builders import (
    CPT,
    EXT,
    HCPCS,
    SNOMED,
    bundle,
    care_plan,
    claim,
    coding,
    encounter,
    procedure,
    service_request,
)

from fhir_mappings import (
    ChargeSource,
    DeliveryMode,
    Discipline,
    FhirVersion,
    TherapyRecord,
    TimedService,
    TimingKind,
    map_bundle,
)

VERSIONS = ("R4", "R5")


def only_service(record: TherapyRecord) -> TimedService:
    assert len(record.services) == 1, record.issues
    return record.services[0]


def version_free(record: TherapyRecord) -> TherapyRecord:
    return replace(record, fhir_version=None)


# --------------------------------------------------------------------- R4 / R5 equivalence


def visit_resources(version: str) -> list[dict[str, Any]]:
    return [
        {"resourceType": "Patient", "id": "P1"},
        encounter(version),
        care_plan(version),
        procedure(
            version,
            id="p1",
            code="97140",
            modifiers=("GP",),
            start="2025-03-04T09:00:00-05:00",
            end="2025-03-04T09:10:00-05:00",
        ),
        procedure(
            version,
            id="p2",
            code="97530",
            modifiers=("GP", "59"),
            body_site="12345",
            start="2025-03-04T09:10:00-05:00",
            end="2025-03-04T09:25:00-05:00",
        ),
        procedure(version, id="p3", code="97110", date_time="2025-03-04T09:30:00-05:00"),
        procedure(version, id="p4", code="97112", start="2025-03-04", end="2025-03-04"),
        procedure(version, id="p5", code="97150", subject="Group/G1"),
        service_request(version, id="sr1", code="97530", units=1),
        service_request(version, id="sr2", code="97140", units=1, modifiers=("GP",)),
    ]


def test_r4_and_r5_visits_map_to_the_same_domain_model() -> None:
    r4 = map_bundle(bundle(*visit_resources("R4")))
    r5 = map_bundle(bundle(*visit_resources("R5")))
    assert r4.fhir_version is FhirVersion.R4
    assert r5.fhir_version is FhirVersion.R5
    assert r4.issues == ()
    assert r5.issues == ()
    assert version_free(r4) == version_free(r5)
    assert len(r4.services) == 5
    assert len(r4.charges) == 2


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("shape", "kwargs", "timing", "start", "end", "day", "minutes"),
    [
        (
            "period with -05:00 offsets",
            {},
            TimingKind.PERIOD,
            datetime(2025, 3, 4, 14, 0, tzinfo=UTC),
            datetime(2025, 3, 4, 14, 20, tzinfo=UTC),
            date(2025, 3, 4),
            20,
        ),
        (
            "period in Z",
            {"start": "2025-03-04T14:00:00Z", "end": "2025-03-04T14:08:30Z"},
            TimingKind.PERIOD,
            datetime(2025, 3, 4, 14, 0, tzinfo=UTC),
            datetime(2025, 3, 4, 14, 8, 30, tzinfo=UTC),
            date(2025, 3, 4),
            8,
        ),
        (
            "period +01:00 (HL7 f201 style)",
            {"start": "2013-01-28T13:31:00+01:00", "end": "2013-01-28T14:27:00+01:00"},
            TimingKind.PERIOD,
            datetime(2013, 1, 28, 12, 31, tzinfo=UTC),
            datetime(2013, 1, 28, 13, 27, tzinfo=UTC),
            date(2013, 1, 28),
            56,
        ),
        (
            "missing end",
            {"end": None},
            TimingKind.PERIOD,
            datetime(2025, 3, 4, 14, 0, tzinfo=UTC),
            None,
            date(2025, 3, 4),
            None,
        ),
        (
            "missing start: date from the end",
            {"start": None},
            TimingKind.PERIOD,
            None,
            datetime(2025, 3, 4, 14, 20, tzinfo=UTC),
            date(2025, 3, 4),
            None,
        ),
        (
            "dateTime only: an instant",
            {"date_time": "2025-03-04T09:00:00-05:00"},
            TimingKind.INSTANT,
            datetime(2025, 3, 4, 14, 0, tzinfo=UTC),
            None,
            date(2025, 3, 4),
            None,
        ),
        (
            "date-only period",
            {"start": "2025-03-04", "end": "2025-03-04"},
            TimingKind.DATE,
            None,
            None,
            date(2025, 3, 4),
            None,
        ),
        (
            "date-only dateTime",
            {"date_time": "2025-03-04"},
            TimingKind.DATE,
            None,
            None,
            date(2025, 3, 4),
            None,
        ),
        (
            "year-month dateTime: encounter date used",
            {"date_time": "2025-03"},
            TimingKind.DATE,
            None,
            None,
            date(2025, 3, 4),
            None,
        ),
        (
            "year dateTime: encounter date used",
            {"date_time": "2025"},
            TimingKind.DATE,
            None,
            None,
            date(2025, 3, 4),
            None,
        ),
        (
            "nothing recorded: encounter date used",
            {"start": None, "end": None},
            TimingKind.NONE,
            None,
            None,
            date(2025, 3, 4),
            None,
        ),
        (
            "nothing recorded, no encounter",
            {"start": None, "end": None, "encounter": None},
            TimingKind.NONE,
            None,
            None,
            None,
            None,
        ),
    ],
)
def test_procedure_timing_shapes(
    version: str,
    shape: str,
    kwargs: dict[str, Any],
    timing: TimingKind,
    start: datetime | None,
    end: datetime | None,
    day: date | None,
    minutes: int | None,
) -> None:
    record = map_bundle(bundle(encounter(version), procedure(version, **kwargs)))
    service = only_service(record)
    assert service.timing is timing, shape
    assert service.start == start
    assert service.end == end
    assert service.service_date == day
    assert service.minutes == minutes
    assert record.issues == ()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("shape", "extra", "timing"),
    [
        ("performed/occurrence String", {"String": "morning session"}, TimingKind.NONE),
        ("performed/occurrence Age", {"Age": {"value": 52, "unit": "a"}}, TimingKind.NONE),
        ("performed/occurrence Range", {"Range": {"low": {"value": 1}}}, TimingKind.NONE),
    ],
)
def test_untimed_choice_types(
    version: str, shape: str, extra: dict[str, Any], timing: TimingKind
) -> None:
    prefix = "performed" if version == "R4" else "occurrence"
    res = procedure(version, start=None, end=None, encounter=None)
    res.update({prefix + key: value for key, value in extra.items()})
    service = only_service(map_bundle(bundle(res)))
    assert service.timing is timing, shape
    assert service.service_date is None


def test_r5_occurrence_timing_and_performer_period_do_not_break() -> None:
    res = procedure("R5", start=None, end=None)
    res["occurrenceTiming"] = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}
    res["performer"] = [
        {
            "actor": {"reference": "Practitioner/T1"},
            "period": {"start": "2025-03-04T09:00:00-05:00", "end": "2025-03-04T09:15:00-05:00"},
        }
    ]
    record = map_bundle(bundle(encounter("R5"), res))
    service = only_service(record)
    assert service.timing is TimingKind.NONE
    assert service.performers == ("Practitioner/T1",)
    assert service.service_date == date(2025, 3, 4)
    assert record.fhir_version is FhirVersion.R5


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("shape", "start", "end", "spans", "day"),
    [
        (
            "ends after local midnight",
            "2025-03-04T23:50:00-05:00",
            "2025-03-05T00:10:00-05:00",
            True,
            date(2025, 3, 4),
        ),
        (
            "crosses UTC midnight only",
            "2025-03-04T18:50:00-05:00",
            "2025-03-04T19:10:00-05:00",
            False,
            date(2025, 3, 4),
        ),
        (
            "end written in another offset, same local day",
            "2025-03-04T23:00:00-05:00",
            "2025-03-05T04:20:00Z",
            False,
            date(2025, 3, 4),
        ),
        (
            "end written in another offset, next local day",
            "2025-03-04T23:00:00-05:00",
            "2025-03-05T05:20:00Z",
            True,
            date(2025, 3, 4),
        ),
    ],
)
def test_spans_midnight_in_the_start_offset(
    version: str, shape: str, start: str, end: str, spans: bool, day: date
) -> None:
    """I-2.4: the date of service is the start's local date; crossing midnight is flagged."""
    service = only_service(map_bundle(bundle(procedure(version, start=start, end=end))))
    assert service.spans_midnight is spans, shape
    assert service.service_date == day


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("shape", "kwargs", "field", "expect_start"),
    [
        ("time without offset", {"start": "2025-03-04T09:00:00"}, "Period.start", True),
        ("unreadable start", {"start": "9am"}, "Period.start", False),
        ("end before start", {"end": "2025-03-04T08:00:00-05:00"}, "Period", True),
        ("date-only end with timed start", {"end": "2025-03-04"}, "Period", True),
    ],
)
def test_bad_time_values_are_issues_and_the_service_stays(
    version: str, shape: str, kwargs: dict[str, Any], field: str, expect_start: bool
) -> None:
    record = map_bundle(bundle(procedure(version, **kwargs)))
    service = only_service(record)
    assert (service.start is not None) is expect_start, shape
    assert len(record.issues) == 1
    issue = record.issues[0]
    assert issue.resource == "Procedure/p1"
    assert issue.location == "entry[0]"
    assert issue.field is not None
    assert issue.field.endswith(field)
    assert "2025" not in issue.message  # no patient values echoed


def test_offsetless_time_keeps_written_date() -> None:
    """POLICY (times.py): read as UTC so the written wall-clock date is the date of service."""
    res = procedure(start="2025-03-04T23:30:00", end="2025-03-04T23:50:00")
    service = only_service(map_bundle(bundle(res)))
    assert service.service_date == date(2025, 3, 4)
    assert service.minutes == 20


@pytest.mark.parametrize("version", VERSIONS)
def test_procedure_details(version: str) -> None:
    res = procedure(
        version,
        modifiers=("GP", "59"),
        billed_units=2,
        body_site="91775009",
        performers=("Practitioner/T1", "Practitioner/T2"),
        based_on=("CarePlan/CP1", "ServiceRequest/order"),
    )
    service = only_service(map_bundle(bundle(res)))
    assert service.ref == "Procedure/p1"
    assert service.code == "97530"
    assert service.system == CPT
    assert service.status == "completed"
    assert service.patient == "Patient/P1"
    assert service.encounter == "Encounter/E1"
    assert service.performers == ("Practitioner/T1", "Practitioner/T2")
    assert service.body_sites == (f"{SNOMED}|91775009",)
    assert service.modifiers == ("GP", "59")
    assert service.billed_units == 2
    assert service.plan_refs == ("CarePlan/CP1", "ServiceRequest/order")
    assert service.has_reason is True
    assert service.delivery_mode is DeliveryMode.INDIVIDUAL


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("shape", "kwargs", "group", "subject_is_group", "patient"),
    [
        ("individual (default)", {}, False, False, "Patient/P1"),
        ("delivery-mode extension = group", {"delivery": "group"}, True, False, "Patient/P1"),
        ("Group subject", {"subject": "Group/G1"}, True, True, None),
        ("coded 97150", {"code": "97150"}, True, False, "Patient/P1"),
    ],
)
def test_group_delivery_r_h8(
    version: str,
    shape: str,
    kwargs: dict[str, Any],
    group: bool,
    subject_is_group: bool,
    patient: str | None,
) -> None:
    service = only_service(map_bundle(bundle(procedure(version, **kwargs))))
    assert (service.delivery_mode is DeliveryMode.GROUP) is group, shape
    assert service.subject_is_group is subject_is_group
    assert service.patient == patient


@pytest.mark.parametrize(
    ("shape", "codings", "expected", "issues"),
    [
        ("CPT 59 + HCPCS GP", [coding("59", CPT), coding("GP", HCPCS)], ("59", "GP"), 0),
        ("HCPCS XU", [coding("XU", HCPCS)], ("XU",), 0),
        ("no system is accepted", [{"code": "xs"}], ("XS",), 0),
        ("duplicates collapse", [coding("GP", HCPCS), coding("GP", HCPCS)], ("GP",), 0),
        ("other system ignored", [coding("59", "http://example.org/mods")], (), 1),
        ("coding without code", [{"system": HCPCS}], (), 1),
    ],
)
def test_billing_modifier_extension(
    shape: str, codings: list[dict[str, Any]], expected: tuple[str, ...], issues: int
) -> None:
    res = procedure()
    res["extension"] = [{"url": EXT + "billing-modifier", "valueCoding": c} for c in codings]
    record = map_bundle(bundle(res))
    assert only_service(record).modifiers == expected, shape
    assert len(record.issues) == issues


@pytest.mark.parametrize(
    ("shape", "value", "units", "issues"),
    [
        ("integer", 3, 3, 0),
        ("zero", 0, 0, 0),
        ("negative", -1, None, 1),
        ("boolean", True, None, 1),
        ("string", "2", None, 1),
    ],
)
def test_billed_units_extension(shape: str, value: object, units: int | None, issues: int) -> None:
    res = procedure()
    res["extension"] = [{"url": EXT + "billed-units", "valueInteger": value}]
    record = map_bundle(bundle(res))
    assert only_service(record).billed_units == units, shape
    assert len(record.issues) == issues


@pytest.mark.parametrize(
    ("shape", "reasons", "has_reason"),
    [
        ("R4 reasonCode", {"reasonCode": [{"text": "pain"}]}, True),
        ("R4 reasonReference", {"reasonReference": [{"reference": "Condition/c1"}]}, True),
        ("R5 reason", {"reason": [{"reference": {"reference": "Condition/c1"}}]}, True),
        ("none", {}, False),
        ("empty list", {"reasonCode": []}, False),
    ],
)
def test_reason_presence(shape: str, reasons: dict[str, Any], has_reason: bool) -> None:
    res = procedure(reason=False, extra=reasons)
    assert only_service(map_bundle(bundle(res))).has_reason is has_reason, shape


@pytest.mark.parametrize(
    ("shape", "code_coding", "in_scope"),
    [
        ("CPT", [coding("97530", CPT)], True),
        ("HCPCS G0283", [coding("G0283", HCPCS)], True),
        ("SNOMED only: out of scope", [coding("91251008", SNOMED)], False),
        ("SNOMED + CPT translation", [coding("91251008", SNOMED), coding("97110", CPT)], True),
        ("text only", [], False),
    ],
)
def test_code_systems_in_scope_i_2_2(
    shape: str, code_coding: list[dict[str, Any]], in_scope: bool
) -> None:
    res = procedure()
    res["code"] = {"coding": code_coding, "text": "therapy"}
    record = map_bundle(bundle(res))
    assert (len(record.services) == 1) is in_scope, shape
    assert record.resources_out_of_scope == (0 if in_scope else 1)


def test_two_different_cpt_codes_on_one_procedure_is_an_issue() -> None:
    res = procedure()
    res["code"] = {"coding": [coding("97530"), coding("97140")]}
    record = map_bundle(bundle(res))
    assert only_service(record).code == "97530"
    assert record.issues[0].field == "code"


@pytest.mark.parametrize(
    ("shape", "mutate", "field"),
    [
        ("no status", lambda r: r.pop("status"), "status"),
        ("code is a string", lambda r: r.update(code="97530"), "code"),
    ],
)
def test_structurally_broken_procedure_is_skipped_with_issue(
    shape: str, mutate: Any, field: str
) -> None:
    bad = procedure(id="bad")
    mutate(bad)
    record = map_bundle(bundle(bad, procedure(id="good")))
    assert [s.ref for s in record.services] == ["Procedure/good"], shape
    assert [(i.resource, i.field) for i in record.issues] == [("Procedure/bad", field)]


# --------------------------------------------------------------------- ServiceRequest -> Charge


@pytest.mark.parametrize("version", VERSIONS)
def test_service_request_charge(version: str) -> None:
    record = map_bundle(bundle(service_request(version, occurrence="2025-03-04")))
    (charge,) = record.charges
    assert charge.ref == "ServiceRequest/sr1"
    assert charge.source is ChargeSource.DRAFT_ORDER
    assert charge.code == "97530"
    assert charge.units == 2
    assert charge.modifiers == ("GP", "59")
    assert charge.patient == "Patient/P1"
    assert charge.service_date == date(2025, 3, 4)
    assert charge.status == "draft"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("shape", "units", "expected", "issues"),
    [
        ("integer", 2, 2, 0),
        ("integer-valued decimal", 2.0, 2, 0),
        ("fraction", 1.5, None, 1),
        ("negative", -1, None, 1),
        ("absent", None, None, 0),
    ],
)
def test_service_request_units(
    version: str, shape: str, units: float | None, expected: int | None, issues: int
) -> None:
    record = map_bundle(bundle(service_request(version, units=units)))
    assert record.charges[0].units == expected, shape
    assert len(record.issues) == issues
    if issues:
        assert record.issues[0].field == "quantityQuantity.value"


def test_service_request_modifier_extension_adds_to_order_detail() -> None:
    res = service_request(modifiers=("GP",))
    res["extension"] = [
        {"url": EXT + "billing-modifier", "valueCoding": coding("XU", HCPCS)},
        {"url": EXT + "billing-modifier", "valueCoding": coding("GP", HCPCS)},
    ]
    assert map_bundle(bundle(res)).charges[0].modifiers == ("GP", "XU")


def test_service_request_not_in_cpt_is_out_of_scope() -> None:
    res = service_request()
    res["code"] = {"coding": [coding("91251008", SNOMED)]}
    record = map_bundle(bundle(res))
    assert record.charges == ()
    assert record.resources_out_of_scope == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_service_request_as_plan_of_care(version: str) -> None:
    order = service_request(version, id="pt-order", units=None, modifiers=(), status="active")
    order["category"] = [{"text": "Physical therapy"}]
    proc = procedure(version, based_on=("ServiceRequest/pt-order",))
    record = map_bundle(bundle(order, proc))
    assert record.charges == ()
    plan = record.plans["ServiceRequest/pt-order"]
    assert plan.kind == "ServiceRequest"
    assert plan.status == "active"
    assert plan.discipline is Discipline.PT


# --------------------------------------------------------------------- Claim


def test_claim_items_become_charges_and_reflect_on_procedures() -> None:
    """R-H7: a linked Claim.item wins over the Procedure's own extensions."""
    proc = procedure(modifiers=("GO",), billed_units=4)
    record = map_bundle(bundle(proc, claim()))
    (charge,) = record.charges
    assert charge.ref == "Claim/C1#item-1"
    assert charge.source is ChargeSource.CLAIM
    assert charge.procedure_refs == ("Procedure/p1",)
    assert charge.units == 1
    service = only_service(record)
    assert service.modifiers == ("GP", "59")
    assert service.billed_units == 1


def test_claim_line_with_other_code_is_not_applied() -> None:
    lines = (("97140", ("GP",), 1, "Procedure/p1"),)
    record = map_bundle(bundle(procedure(modifiers=("GP", "59")), claim(lines=lines)))
    assert only_service(record).modifiers == ("GP", "59")
    assert "bills 97140" in record.issues[0].message


def test_claim_without_cpt_items_is_out_of_scope() -> None:
    res = claim()
    res["item"][0]["productOrService"] = {"coding": [coding("410620009", SNOMED)]}
    record = map_bundle(bundle(res))
    assert record.charges == ()
    assert record.resources_out_of_scope == 1


# --------------------------------------------------------------------- CarePlan, Encounter


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("shape", "category", "discipline"),
    [
        ("GP coding", [{"coding": [coding("GP", HCPCS)]}], Discipline.PT),
        ("GO coding", [{"coding": [coding("GO", HCPCS)]}], Discipline.OT),
        ("GN coding", [{"coding": [coding("GN", HCPCS)]}], Discipline.SLP),
        ("SNOMED OT", [{"coding": [coding("84478008", SNOMED)]}], Discipline.OT),
        ("text", [{"text": "Outpatient physical therapy"}], Discipline.PT),
        (
            "coding display",
            [{"coding": [{"system": "x", "code": "1", "display": "Speech therapy"}]}],
            Discipline.SLP,
        ),
        ("unrelated", [{"text": "Weight management"}], Discipline.UNKNOWN),
        ("none", None, Discipline.UNKNOWN),
    ],
)
def test_care_plan_discipline(
    version: str, shape: str, category: list[dict[str, Any]] | None, discipline: Discipline
) -> None:
    plan_json = care_plan(version, discipline_code=None)
    if category is not None:
        plan_json["category"] = category
    plan = map_bundle(bundle(plan_json)).plans["CarePlan/CP1"]
    assert plan.discipline is discipline, shape


@pytest.mark.parametrize("version", VERSIONS)
def test_care_plan_fields(version: str) -> None:
    plan_json = care_plan(
        version, start="2025-02-01T10:00:00-05:00", certifications=("2025-02-03", "2025-05-01")
    )
    plan = map_bundle(bundle(plan_json)).plans["CarePlan/CP1"]
    assert plan.kind == "CarePlan"
    assert plan.status == "active"
    assert plan.start == date(2025, 2, 1)
    assert plan.end == date(2025, 4, 30)
    assert plan.certifications == (date(2025, 2, 3), date(2025, 5, 1))
    assert plan.patient == "Patient/P1"


def test_partial_certification_date_is_an_issue() -> None:
    record = map_bundle(bundle(care_plan(certifications=("2025-02",))))
    assert record.plans["CarePlan/CP1"].certifications == ()
    assert record.issues[0].field == "extension(plan-certification)"


@pytest.mark.parametrize("version", VERSIONS)
def test_encounter(version: str) -> None:
    info = map_bundle(bundle(encounter(version))).encounters["Encounter/E1"]
    assert info.start == datetime(2025, 3, 4, 13, 55, tzinfo=UTC)
    assert info.end == datetime(2025, 3, 4, 15, 0, tzinfo=UTC)
    assert info.service_date == date(2025, 3, 4)
    assert info.patient == "Patient/P1"


# --------------------------------------------------------------------- references


def test_urn_uuid_full_urls_resolve_to_type_and_id() -> None:
    """Synthea style: references by urn:uuid fullUrl are normalised to "Type/id"."""
    patient = {"resourceType": "Patient", "id": "P1"}
    enc = encounter(patient="urn:uuid:patient-P1")
    proc = procedure(
        patient="urn:uuid:patient-P1",
        encounter="urn:uuid:encounter-E1",
        based_on=("urn:uuid:careplan-CP1",),
    )
    record = map_bundle(bundle(patient, enc, care_plan(), proc, full_urls=True))
    service = only_service(record)
    assert service.patient == "Patient/P1"
    assert service.encounter == "Encounter/E1"
    assert service.plan_refs == ("CarePlan/CP1",)
    assert record.encounters["Encounter/E1"].patient == "Patient/P1"


@pytest.mark.parametrize(
    ("shape", "full_url", "ref"),
    [
        ("urn:uuid fullUrl", "urn:uuid:0b0e", "urn:uuid:0b0e"),
        ("absolute RESTful fullUrl", "https://ehr.example/fhir/Procedure/p7", "Procedure/p7"),
        ("no fullUrl", None, "Procedure@entry[0]"),
    ],
)
def test_resource_without_id_is_keyed_by_full_url(
    shape: str, full_url: str | None, ref: str
) -> None:
    proc = procedure()
    del proc["id"]
    page = bundle(proc)
    if full_url:
        page["entry"][0]["fullUrl"] = full_url
    assert only_service(map_bundle(page)).ref == ref, shape


@pytest.mark.parametrize(
    ("shape", "reference", "expected"),
    [
        ("relative", "Patient/P1", "Patient/P1"),
        ("absolute URL", "https://ehr.example/fhir/Patient/P1", "Patient/P1"),
        ("versioned", "Patient/P1/_history/3", "Patient/P1"),
        ("absolute versioned", "https://ehr.example/fhir/Patient/P1/_history/3", "Patient/P1"),
        ("unresolved urn stays", "urn:uuid:abc", "urn:uuid:abc"),
    ],
)
def test_patient_reference_normalisation(shape: str, reference: str, expected: str) -> None:
    service = only_service(map_bundle(bundle(procedure(patient=reference))))
    assert service.patient == expected, shape


def test_contained_care_plan_is_resolved() -> None:
    proc = procedure(based_on=("#plan",))
    proc["contained"] = [care_plan(id="plan")]
    record = map_bundle(bundle(proc))
    assert only_service(record).plan_refs == ("Procedure/p1#plan",)
    assert record.plans["Procedure/p1#plan"].discipline is Discipline.PT


def test_display_only_based_on_is_no_plan_ref() -> None:
    proc = procedure(based_on=())
    proc["basedOn"] = [{"display": "LTSS care plan"}]
    assert only_service(map_bundle(bundle(proc))).plan_refs == ()


def test_duplicate_resource_is_reported_and_first_kept() -> None:
    record = map_bundle(bundle(procedure(code="97530"), procedure(code="97140")))
    assert only_service(record).code == "97530"
    assert "two different copies" in record.issues[0].message


def test_identical_duplicate_is_silent() -> None:
    record = map_bundle(bundle(procedure(), procedure()))
    assert len(record.services) == 1
    assert record.issues == ()


def test_subject_of_wrong_type_is_an_issue() -> None:
    record = map_bundle(bundle(procedure(patient="Practitioner/T1")))
    assert only_service(record).patient is None
    assert record.issues[0].field == "subject"


# --------------------------------------------------------------------- version decision


def test_mixed_versions_read_as_majority_with_issue() -> None:
    record = map_bundle(
        bundle(
            procedure("R4", id="a"),
            procedure("R4", id="b"),
            procedure("R5", id="c"),
        )
    )
    assert record.fhir_version is FhirVersion.R4
    assert len(record.services) == 3
    assert [i.resource for i in record.issues] == ["Procedure/c"]
    assert "one request carries one FHIR version" in record.issues[0].message


def test_version_undecided_without_release_specific_fields() -> None:
    record = map_bundle(bundle({"resourceType": "Patient", "id": "P1"}))
    assert record.fhir_version is None
    assert record.resources_read == 1
    assert record.resources_out_of_scope == 1


def eob_for(claim_json: dict[str, Any]) -> dict[str, Any]:
    eob = dict(claim_json, resourceType="ExplanationOfBenefit", id="EOB1", outcome="complete")
    eob["claim"] = {"reference": f"Claim/{claim_json['id']}"}
    return eob


def test_explanation_of_benefit_items_are_claim_charges() -> None:
    """I-1: Claim/EOB items carry modifiers and billed units (R-H7)."""
    record = map_bundle(bundle(procedure(), eob_for(claim())))
    (charge,) = record.charges
    assert charge.ref == "ExplanationOfBenefit/EOB1#item-1"
    assert charge.source is ChargeSource.CLAIM
    assert only_service(record).modifiers == ("GP", "59")


def test_eob_of_a_claim_in_the_input_is_not_counted_twice() -> None:
    the_claim = claim()
    record = map_bundle(bundle(procedure(), the_claim, eob_for(the_claim)))
    assert [c.ref for c in record.charges] == ["Claim/C1#item-1"]
    assert record.issues == ()
