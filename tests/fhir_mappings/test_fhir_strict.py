"""Strict mode (full fhir.resources models) and its agreement with the fast path."""

from __future__ import annotations

from typing import Any

import pytest
from fhir_builders import bundle, care_plan, claim, encounter, procedure, service_request

from fhir_mappings import FhirVersion, map_bundle


def visit(version: str) -> dict[str, Any]:
    return bundle(
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
            start="2025-03-04T09:10:00.250-05:00",
            end="2025-03-04T14:25:00Z",
        ),
        procedure(version, id="p3", code="97110", date_time="2025-03"),
        procedure(version, id="p4", code="97150", subject="Group/G1", status="in-progress"),
        service_request(version, id="sr1", units=1),
        claim(lines=(("97530", ("GP", "59"), 1, "Procedure/p2"),)),
    )


@pytest.mark.parametrize("version", ["R4", "R5"])
def test_strict_and_fast_give_the_same_record(version: str) -> None:
    fast = map_bundle(visit(version))
    strict = map_bundle(visit(version), strict=True)
    assert strict.issues == ()
    assert strict == fast
    assert len(strict.services) == 4


@pytest.mark.parametrize(
    ("shape", "mutate", "field"),
    [
        ("status not a code", lambda r: r.update(status=["completed"]), "status"),
        ("unknown element", lambda r: r.update(performedWhen="2025-03-04"), "performedWhen"),
        (
            "offset-less time",
            lambda r: r["performedPeriod"].update(start="2025-03-04T09:00:00"),
            "performedPeriod.start",
        ),
    ],
)
def test_strict_reports_validation_errors_and_skips_the_resource(
    shape: str, mutate: Any, field: str
) -> None:
    bad = procedure(id="bad")
    mutate(bad)
    record = map_bundle(bundle(bad, procedure(id="good")), strict=True)
    assert [s.ref for s in record.services] == ["Procedure/good"], shape
    issues = [i for i in record.issues if i.resource == "Procedure/bad"]
    assert issues, shape
    assert any(i.field is not None and i.field.startswith(field) for i in issues), issues
    for issue in issues:
        assert issue.location == "entry[0]"
        assert "2025-03-04" not in issue.message  # values never echoed
        assert "R4 validation" in issue.message


def test_strict_uses_r5_models_for_r5_input() -> None:
    r4_procedure_in_r5_input = procedure("R4", id="old")
    record = map_bundle(
        bundle(procedure("R5", id="a"), procedure("R5", id="b"), r4_procedure_in_r5_input),
        strict=True,
    )
    assert record.fhir_version is FhirVersion.R5
    assert [s.ref for s in record.services] == ["Procedure/a", "Procedure/b"]
    assert any("R5 validation" in i.message for i in record.issues if i.resource == "Procedure/old")


def test_strict_rejects_unknown_resource_type() -> None:
    record = map_bundle(bundle({"resourceType": "Therapy", "id": "x"}), strict=True)
    assert record.issues[0].field == "resourceType"
    assert record.resources_read == 0
