"""Performer roles for the CQ/CO modifiers (R-G3): which codes make an assistant."""

from __future__ import annotations

from fhir_mappings.model import PerformerRole
from fhir_mappings.performers import NUCC_TAXONOMY, party_roles, practitioner_role, service_role


def _qualified(code: str, system: str = NUCC_TAXONOMY) -> dict[str, object]:
    return {"qualification": [{"code": {"coding": [{"system": system, "code": code}]}}]}


def test_nucc_codes_name_the_assistants() -> None:
    assert practitioner_role(_qualified("225200000X")) is PerformerRole.PTA
    assert practitioner_role(_qualified("224ZR0403X")) is PerformerRole.OTA
    assert practitioner_role(_qualified("224Z00000X", "urn:oid:2.16.840.1.113883.6.101")) is (
        PerformerRole.OTA
    )
    # a therapist, another system, text only: not an assistant
    assert practitioner_role(_qualified("225100000X")) is PerformerRole.OTHER
    assert practitioner_role(_qualified("225200000X", "http://snomed.info/sct")) is (
        PerformerRole.OTHER
    )
    assert practitioner_role({"qualification": [{"code": {"text": "PTA"}}]}) is PerformerRole.OTHER


def test_role_code_or_its_practitioner() -> None:
    roles = party_roles(
        [("Practitioner/a", _qualified("225200000X")), ("Practitioner/t", {})],
        [
            ("PractitionerRole/r1", {}, "Practitioner/a"),
            (
                "PractitionerRole/r2",
                {"code": [{"coding": [{"system": NUCC_TAXONOMY, "code": "224Z00000X"}]}]},
                None,
            ),
            ("PractitionerRole/r3", {}, "Practitioner/t"),
        ],
    )
    assert roles == {
        "Practitioner/a": PerformerRole.PTA,
        "Practitioner/t": PerformerRole.OTHER,
        "PractitionerRole/r1": PerformerRole.PTA,
        "PractitionerRole/r2": PerformerRole.OTA,
        "PractitionerRole/r3": PerformerRole.OTHER,
    }


def test_service_role_from_its_performers() -> None:
    roles = {"P/a": PerformerRole.PTA, "P/o": PerformerRole.OTA, "P/t": PerformerRole.OTHER}
    assert service_role((), roles) is PerformerRole.UNKNOWN
    assert service_role(("P/a",), roles) is PerformerRole.PTA
    assert service_role(("P/a", "P/t"), roles) is PerformerRole.OTHER  # with the therapist
    assert service_role(("P/a", "P/missing"), roles) is PerformerRole.UNKNOWN
    assert service_role(("P/a", "P/o"), roles) is PerformerRole.UNKNOWN
