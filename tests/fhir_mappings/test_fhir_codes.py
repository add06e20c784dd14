"""The therapy code list (R-A4, R-F2, R-F3, R-G1): data file facts and lookups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_mappings import codes
from fhir_mappings.codes import Attendance
from fhir_mappings.mapper import map_bundle
from fhir_mappings.model import CPT_SYSTEM, HCPCS_SYSTEM, Discipline


@pytest.mark.parametrize(
    ("source", "code", "timed", "one_on_one", "supervised", "group"),
    [
        ("R-A1 97530 timed one-on-one", "97530", True, True, False, False),
        ("R-A2 97140 timed", "97140", True, True, False, False),
        ("R-A4 97110", "97110", True, True, False, False),
        ("R-A4 97112", "97112", True, True, False, False),
        ("R-A4 97116", "97116", True, True, False, False),
        ("R-A4 97535", "97535", True, True, False, False),
        ("R-A4 constant attendance 97032", "97032", True, True, False, False),
        ("R-A4 constant attendance 97035", "97035", True, True, False, False),
        ("R-A4 constant attendance 97036", "97036", True, True, False, False),
        ("R-A4 97760 orthotic management", "97760", True, True, False, False),
        ("R-A4 untimed evaluation 97161", "97161", False, False, False, False),
        ("R-A4 untimed re-evaluation 97168", "97168", False, False, False, False),
        ("R-F2 group 97150", "97150", False, False, False, True),
        ("R-F3 supervised 97010", "97010", False, False, True, False),
        ("R-F3 supervised 97014", "97014", False, False, True, False),
        ("R-F3 supervised G0283 (HCPCS)", "G0283", False, False, True, False),
        ("not on the list: lumbar MRI", "72148", False, False, False, False),
    ],
)
def test_code_facts(
    source: str, code: str, timed: bool, one_on_one: bool, supervised: bool, group: bool
) -> None:
    assert codes.is_timed(code) is timed, source
    assert codes.is_one_on_one(code) is one_on_one, source
    assert codes.is_supervised_modality(code) is supervised, source
    assert codes.is_group_code(code) is group, source


def test_code_info_row() -> None:
    info = codes.code_info("97530")
    assert info is not None
    assert info.system == CPT_SYSTEM
    assert info.unit_minutes == 15
    assert info.attendance is Attendance.ONE_ON_ONE
    assert codes.code_info("G0283") is not None
    assert codes.code_info("G0283").system == HCPCS_SYSTEM  # type: ignore[union-attr]
    assert codes.code_info("00000") is None


def test_data_file_carries_provenance_and_unconfirmed_membership() -> None:
    code_list = codes.CODE_LIST
    assert code_list.effective_date.year >= 2025
    assert any("Applicable Outpatient Rehabilitation" in s for s in code_list.sources)
    assert "UNCONFIRMED" in code_list.verification
    assert all(not row.membership_verified for row in code_list.codes.values())


@pytest.mark.parametrize(
    ("source", "modifier", "discipline"),
    [
        ("R-G1 GP", "GP", Discipline.PT),
        ("R-G1 GO", "GO", Discipline.OT),
        ("R-G1 GN", "GN", Discipline.SLP),
        ("NCCI 59 is no discipline", "59", None),
    ],
)
def test_discipline_modifiers(source: str, modifier: str, discipline: Discipline | None) -> None:
    assert codes.discipline_of_modifier(modifier) is discipline, source


@pytest.mark.parametrize("modifier", ["59", "XE", "XS", "XP", "XU"])
def test_ncci_modifiers(modifier: str) -> None:
    assert codes.is_ncci_modifier(modifier)
    assert not codes.is_ncci_modifier("GP")


@pytest.mark.parametrize(
    ("shape", "system", "code", "text", "discipline"),
    [
        ("HCPCS GO category coding", HCPCS_SYSTEM, "GO", None, Discipline.OT),
        (
            "SNOMED physical therapy procedure",
            "http://snomed.info/sct",
            "91251008",
            None,
            Discipline.PT,
        ),
        ("text 'Physiotherapy'", None, None, "Physiotherapy plan", Discipline.PT),
        (
            "text 'Speech-language pathology'",
            None,
            None,
            "Speech-language pathology",
            Discipline.SLP,
        ),
        ("unrecognised text", None, None, "Weight management", Discipline.UNKNOWN),
        ("GO without a system", None, "GO", None, Discipline.OT),
        (
            "GP in a foreign system is not trusted",
            "http://example.org/x",
            "GP",
            None,
            Discipline.UNKNOWN,
        ),
        ("whole text 'OT'", None, None, " OT ", Discipline.OT),
        ("'ot' inside a word is not OT", None, None, "Foot care", Discipline.UNKNOWN),
    ],
)
def test_discipline_of_concept(
    shape: str, system: str | None, code: str | None, text: str | None, discipline: Discipline
) -> None:
    assert codes.discipline_of_concept(system, code, text) is discipline, shape


SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles"
OIDS = {
    CPT_SYSTEM: "urn:oid:2.16.840.1.113883.6.12",
    HCPCS_SYSTEM: "urn:oid:2.16.840.1.113883.6.285",
}


@pytest.mark.parametrize(
    "sample", sorted(p.name for p in SAMPLES.glob("*.json") if p.name != "scenarios.json")
)
def test_codes_under_the_systems_oids_read_as_under_their_uris(sample: str) -> None:
    """An EHR that codes CPT and HCPCS with the HL7 OIDs gets the same analysis as one that
    uses the URIs: every sample, with each system rewritten to its OID, maps to the same record."""
    text = (SAMPLES / sample).read_text(encoding="utf-8")
    as_oids = text
    for uri, oid in OIDS.items():
        as_oids = as_oids.replace(f'"{uri}"', f'"{oid}"')
    assert as_oids != text or CPT_SYSTEM not in text
    assert map_bundle(json.loads(as_oids)) == map_bundle(json.loads(text))


def test_an_unknown_system_is_still_not_read_as_cpt() -> None:
    concept = {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": "97530"}]}
    assert codes.code_info("97530") is not None
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Procedure",
                    "id": "p1",
                    "status": "completed",
                    "subject": {"reference": "Patient/P1"},
                    "code": concept,
                    "performedPeriod": {
                        "start": "2025-03-04T09:00:00Z",
                        "end": "2025-03-04T09:20:00Z",
                    },
                }
            }
        ],
    }
    assert not map_bundle(bundle).services
