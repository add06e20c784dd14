"""``patient_reference``: the patient a resource names, read from the element the mapper reads
for that type (what the audit's pass 1 shards an export by)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mappings.mapper import MAPPED_TYPES, PATIENT_FIELDS, map_bundle, patient_reference
from fhir_mappings.references import ReferenceIndex


def test_every_mapped_type_names_its_patient_in_one_element() -> None:
    assert set(PATIENT_FIELDS) == MAPPED_TYPES
    assert PATIENT_FIELDS["Claim"] == PATIENT_FIELDS["ExplanationOfBenefit"] == "patient"
    assert PATIENT_FIELDS["Coverage"] == "beneficiary"


@pytest.mark.parametrize("rtype", sorted(MAPPED_TYPES))
def test_the_patient_of_each_mapped_type(rtype: str) -> None:
    resource = {"resourceType": rtype, PATIENT_FIELDS[rtype]: {"reference": " Patient/p1 "}}
    assert patient_reference(resource, ReferenceIndex()) == "Patient/p1"


@pytest.mark.parametrize(
    ("resource", "why"),
    [
        ({"resourceType": "Procedure"}, "no subject"),
        ({"resourceType": "Procedure", "subject": {"display": "J. Doe"}}, "display only"),
        ({"resourceType": "Procedure", "subject": {"reference": "  "}}, "blank reference"),
        ({"resourceType": "Procedure", "subject": {"reference": "#pat"}}, "contained"),
        ({"resourceType": "Procedure", "subject": ["Patient/p1"]}, "not a Reference"),
        ({"resourceType": "Claim", "subject": {"reference": "Patient/p1"}}, "not Claim's element"),
        ({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}, "not mapped"),
        ({"subject": {"reference": "Patient/p1"}}, "no resourceType"),
    ],
)
def test_no_patient(resource: dict[str, Any], why: str) -> None:
    assert patient_reference(resource, ReferenceIndex()) is None, why


def test_the_reference_is_normalised_as_the_mapper_normalises_it() -> None:
    index = ReferenceIndex()
    index.add_full_url("urn:uuid:0b1c", "Patient/p9")
    claim = {"resourceType": "Claim", "patient": {"reference": "urn:uuid:0b1c"}}
    assert patient_reference(claim, index) == "Patient/p9"
    procedure = {
        "resourceType": "Procedure",
        "subject": {"reference": "https://ehr.example/fhir/Patient/p2/_history/3"},
    }
    assert patient_reference(procedure, index) == "Patient/p2"
    coded = {
        "resourceType": "Procedure",
        "id": "x",
        "status": "completed",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97110"}]},
        **procedure,
    }
    mapped = map_bundle({"resourceType": "Bundle", "entry": [{"resource": coded}]})
    assert mapped.services[0].patient == patient_reference(procedure, index)
