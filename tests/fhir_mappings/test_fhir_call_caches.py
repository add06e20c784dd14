"""The mapper's per-call caches (times, subjects, references) never change what is reported.

A visit repeats the same few references and boundary times on every resource, so one mapping
call parses each text once. These tests pin the cases where a cached answer would be wrong: a
problem is reported once per occurrence, and answers that depend on the container are not
shared between resources.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_builders import bundle, procedure

from fhir_mappings import map_bundle
from fhir_mappings.references import ReferenceIndex


def issues_on(record: object, field: str) -> list[tuple[str | None, str]]:
    return [
        (issue.resource, issue.message)
        for issue in record.issues  # type: ignore[attr-defined]
        if issue.field == field
    ]


def test_a_shared_boundary_time_is_read_the_same_from_both_blocks() -> None:
    first = procedure(id="p1", start="2025-03-04T09:00:00-05:00", end="2025-03-04T09:20:00-05:00")
    second = procedure(id="p2", start="2025-03-04T09:20:00-05:00", end="2025-03-04T09:35:00-05:00")
    record = map_bundle(bundle(first, second))
    one, two = record.services
    assert one.end == two.start == datetime(2025, 3, 4, 14, 20, tzinfo=UTC)
    assert (one.minutes, two.minutes) == (20, 15)
    assert record.issues == ()


def test_a_repeated_time_without_offset_is_reported_on_every_resource() -> None:
    naive = "2025-03-04T09:00:00"
    record = map_bundle(
        bundle(
            procedure(id="p1", start=naive, end="2025-03-04T09:20:00-05:00"),
            procedure(id="p2", start=naive, end="2025-03-04T09:20:00-05:00"),
        )
    )
    reported = issues_on(record, "performedPeriod.start")
    assert [resource for resource, _ in reported] == ["Procedure/p1", "Procedure/p2"]
    assert all("without a time zone offset" in message for _, message in reported)


def test_a_repeated_unreadable_time_is_reported_on_every_resource() -> None:
    bad = "2025-02-30T09:00:00-05:00"
    record = map_bundle(
        bundle(
            procedure(id="p1", start=bad),
            procedure(id="p2", start=bad),
        )
    )
    reported = issues_on(record, "performedPeriod.start")
    assert [resource for resource, _ in reported] == ["Procedure/p1", "Procedure/p2"]
    assert all(service.start is None for service in record.services)


def test_a_subject_that_is_no_patient_is_reported_on_every_resource() -> None:
    record = map_bundle(
        bundle(
            procedure(id="p1", subject="Practitioner/T1"),
            procedure(id="p2", subject="Practitioner/T1"),
        )
    )
    reported = issues_on(record, "subject")
    assert [resource for resource, _ in reported] == ["Procedure/p1", "Procedure/p2"]
    assert all(service.patient is None for service in record.services)


def test_group_and_patient_subjects_stay_apart() -> None:
    record = map_bundle(
        bundle(
            procedure(id="p1", subject="Group/G1"),
            procedure(id="p2", subject="Patient/P1"),
            procedure(id="p3", subject="Group/G1"),
        )
    )
    by_ref = {service.ref: service for service in record.services}
    assert [
        (by_ref[f"Procedure/p{n}"].patient, by_ref[f"Procedure/p{n}"].subject_is_group)
        for n in (1, 2, 3)
    ] == [(None, True), ("Patient/P1", False), (None, True)]


def test_a_contained_subject_is_read_inside_each_container() -> None:
    patient = {"resourceType": "Patient", "id": "pat"}
    group = {"resourceType": "Group", "id": "pat"}
    first = procedure(id="p1", subject="#pat", extra={"contained": [patient]})
    second = procedure(id="p2", subject="#pat", extra={"contained": [group]})
    record = map_bundle(bundle(first, second))
    one, two = record.services
    assert (one.patient, one.subject_is_group) == ("Procedure/p1#pat", False)
    assert (two.patient, two.subject_is_group) == (None, True)


def test_a_self_reference_names_each_container() -> None:
    record = map_bundle(
        bundle(procedure(id="p1", encounter="#"), procedure(id="p2", encounter="#"))
    )
    assert [service.encounter for service in record.services] == [
        "Procedure/p1",
        "Procedure/p2",
    ]


def test_add_full_urls_keeps_the_first_key_of_a_full_url() -> None:
    index = ReferenceIndex()
    assert index.normalise("urn:uuid:1", "x") == "urn:uuid:1"
    index.add_full_urls(
        [("urn:uuid:1", "Procedure/a"), ("urn:uuid:1", "Procedure/b"), ("Patient/P1", "Patient/P1")]
    )
    assert index.normalise("urn:uuid:1", "x") == "Procedure/a"  # the earlier answer is forgotten
    assert index.of({"reference": "Patient/P1"}, "x") == "Patient/P1"
    assert index.of({"reference": "#c"}, "Procedure/a") == "Procedure/a#c"
    assert index.of({"reference": "#c"}, "Procedure/b") == "Procedure/b#c"
