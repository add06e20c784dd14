"""Every shared reference fixture goes through load -> map -> group without surprises.

The fixtures are third-party files read in place from ``../shared/reference/fixtures`` (never
copied); every test here skips with a clear reason when that folder is absent.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir_builders import CPT, bundle, fixtures_dir

from fhir_mappings import (
    FhirVersion,
    InputError,
    TherapyRecord,
    group_visits,
    load_path,
    map_bundle,
    map_document,
    map_resources,
)

FHIR_EXAMPLES = "fhir-examples"
CDS_SPEC = "cds-hooks-spec"
SYNTHEA = (
    "fhir-examples/r4/synthea/Lawerence6_Baumbach677_ea8d2576-4a23-4906-c353-bfed5adb23bd.json"
)
OFFICIAL = {
    "R4": "fhir-examples/r4/hl7.fhir.r4.examples",
    "R5": "fhir-examples/r5/hl7.fhir.r5.examples",
}


def fixture_files() -> list[Path]:
    """Every file of both folders, whatever its suffix (manifests and JWTs included)."""
    root = fixtures_dir()
    files = [p for p in sorted((root / FHIR_EXAMPLES).rglob("*")) if p.is_file()]
    files += [p for p in sorted((root / CDS_SPEC).rglob("*")) if p.is_file()]
    assert files, "fixture folders are present but hold no files"
    return files


def read(relative: str) -> Any:
    return orjson.loads((fixtures_dir() / relative).read_bytes())


def test_every_fixture_loads_maps_and_groups() -> None:
    loaded = refused = 0
    for path in fixture_files():
        try:
            document = load_path(path)
        except InputError as error:
            message = str(error)
            assert "\n" not in message
            assert message.startswith(str(path)), message
            refused += 1
            continue
        record = map_document(document)
        group_visits(record)
        for issue in record.issues:
            assert issue.location, path
        loaded += 1
    # every FHIR example and every CDS Hooks request is readable; only non-request payloads
    # (cards, discovery, feedback, JWKs, JWT parts, manifests, provenance notes) are refused
    assert loaded >= 90
    assert refused >= 1


def test_refused_fixtures_are_not_fhir_or_requests() -> None:
    for path in fixture_files():
        if path.suffix != ".json":
            continue
        try:
            load_path(path)
        except InputError:
            body = orjson.loads(path.read_bytes())
            assert not (isinstance(body, dict) and "resourceType" in body), path
            assert not (isinstance(body, dict) and ("context" in body or "prefetch" in body)), path


@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_every_fhir_example_maps_in_both_modes(strict: bool) -> None:
    for path in fixture_files():
        if CDS_SPEC in path.parts:
            continue
        try:
            document = load_path(path)
        except InputError:
            continue
        group_visits(map_document(document, strict=strict))


def records_agree(fast: TherapyRecord, strict: TherapyRecord, where: str) -> None:
    """Every domain item the strict path produced equals the fast path's item for that ref."""
    fast_services = {s.ref: s for s in fast.services}
    for service in strict.services:
        assert fast_services[service.ref] == service, where
    fast_charges = {c.ref: c for c in fast.charges}
    for charge in strict.charges:
        assert fast_charges[charge.ref] == charge, where
    for ref, plan in strict.plans.items():
        assert fast.plans[ref] == plan, where
    for ref, info in strict.encounters.items():
        assert fast.encounters[ref] == info, where
    if not strict.issues:  # everything validated: the whole record must agree
        assert replace(strict, issues=fast.issues) == fast, where


def test_fast_path_and_full_models_agree_on_every_fixture() -> None:
    compared = 0
    for path in fixture_files():
        try:
            document = load_path(path)
        except InputError:
            continue
        records_agree(map_document(document), map_document(document, strict=True), str(path))
        compared += 1
    assert compared >= 80


def recoded(resource: dict[str, Any], code: str = "97530") -> dict[str, Any]:
    out = copy.deepcopy(resource)
    out["code"] = {"coding": [{"system": CPT, "code": code}]}
    return out


@pytest.mark.parametrize(
    "name",
    [
        "Procedure-f201",  # performedPeriod / occurrencePeriod, +01:00
        "Procedure-f001",  # date-only period
        # (Procedure-ambulation is left out: its R4 and R5 texts name different performers)
        "Procedure-HCBS",  # display-only basedOn; dateTime
        "Procedure-physical-therapy",  # basedOn ServiceRequest; date-only dateTime
        "Procedure-colon-biopsy",  # no time at all
        "Procedure-example-implant",
    ],
)
def test_official_r4_and_r5_procedures_recoded_in_cpt_agree(name: str) -> None:
    """HL7's own R4 and R5 examples, recoded to CPT in memory, give the same TimedService."""
    r4 = map_bundle(bundle(recoded(read(f"{OFFICIAL['R4']}/{name}.json"))))
    r5 = map_bundle(bundle(recoded(read(f"{OFFICIAL['R5']}/{name}.json"))))
    assert len(r4.services) == 1
    assert r4.services == r5.services
    assert r4.fhir_version in (FhirVersion.R4, None)
    assert r5.fhir_version in (FhirVersion.R5, None)


@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_recoded_official_procedure_agrees_with_strict(strict: bool) -> None:
    for version, folder in OFFICIAL.items():
        for name in ("Procedure-f201", "Procedure-f001", "Procedure-ambulation"):
            resource = recoded(read(f"{folder}/{name}.json"))
            fast = map_resources([("resource", resource)])
            other = map_resources([("resource", resource)], strict=strict)
            assert other.issues == (), (version, name)
            assert other == fast, (version, name)


@pytest.mark.parametrize(
    ("name", "encounters", "plans"),
    [
        ("Encounter-home", 1, 0),
        ("Encounter-emerg", 1, 0),
        ("Encounter-f203", 1, 0),
        ("CarePlan-example", 0, 1),
        ("CarePlan-gpvisit", 0, 1),
        ("CarePlan-preg", 0, 1),
        ("Bundle-father", 1, 0),
    ],
)
def test_official_r4_and_r5_pairs_map_to_the_same_domain(
    name: str, encounters: int, plans: int
) -> None:
    r4 = map_document(load_path(fixtures_dir() / OFFICIAL["R4"] / f"{name}.json"))
    r5 = map_document(load_path(fixtures_dir() / OFFICIAL["R5"] / f"{name}.json"))
    assert (len(r4.encounters), len(r4.plans)) == (encounters, plans)
    assert r4.encounters == r5.encounters
    assert r4.plans == r5.plans
    assert r4.fhir_version is FhirVersion.R4
    assert r5.fhir_version is FhirVersion.R5


def test_synthea_bundle() -> None:
    record = map_document(load_path(fixtures_dir() / SYNTHEA))
    assert record.fhir_version is FhirVersion.R4
    assert record.resources_read == 1379
    assert len(record.encounters) == 92
    assert record.services == ()  # SNOMED-coded procedures only
    assert record.patients == ("Patient/ea8d2576-4a23-4906-c353-bfed5adb23bd",)
    # urn:uuid subject references resolve to "Patient/<id>"
    assert {e.patient for e in record.encounters.values()} == set(record.patients)
    assert record.issues == ()


def test_r4b_history_bundle() -> None:
    path = "fhir-examples/r4/hl7.fhir.r4b.examples/Bundle-fdd78223-f79f-43b4-8979-ad49d4ac248c.json"
    record = map_document(load_path(fixtures_dir() / path))
    assert len(record.encounters) == 1


def test_paginated_prefetch_keeps_next_link() -> None:
    path = (
        "cds-hooks-spec/spec-3.0.0-ballot/spec3.0ballot-request-order-sign-paginated-prefetch.json"
    )
    record = map_document(load_path(fixtures_dir() / path))
    assert record.next_links == (
        "https://ehr.example.org/fhir/MedicationRequest?patient=1288992&_count=1&_page=2",
    )
    assert record.context_patient == "Patient/1288992"


def test_argonaut_draft_order_in_cpt_is_a_charge() -> None:
    path = "fhir-examples/cdshooks/argonaut-pama/scenario-01-outbound-request.json"
    record = map_document(load_path(fixtures_dir() / path))
    (charge,) = record.charges
    assert charge.code == "72133"
    assert charge.units is None


def test_hapi_request_with_null_prefetch_and_no_ids() -> None:
    record = map_document(
        load_path(fixtures_dir() / "fhir-examples/cdshooks/hapi-fhir/CdsServiceRequestJson.json")
    )
    assert record.issues == ()
    assert record.context_patient == "Patient/123"


def test_legacy_prefetch_wrapper_is_unwrapped() -> None:
    path = "fhir-examples/cdshooks/cqf-ruler/opioidcds-04-request-prefetch.json"
    record = map_document(load_path(fixtures_dir() / path))
    assert len(record.encounters) == 1  # the Encounter inside {"response", "resource"}
