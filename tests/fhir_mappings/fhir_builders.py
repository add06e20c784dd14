"""Small FHIR JSON builders for the fhir_mappings tests, in R4 and R5 shapes.

Every builder takes ``version`` ("R4" or "R5") and writes the same facts in that release's
shape, so a test can map both and expect the same domain model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
SNOMED = "http://snomed.info/sct"
EXT = "https://therapy-cds.github.io/fhir/StructureDefinition/"

Json = dict[str, Any]

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "fixtures"


def fixtures_dir() -> Path:
    """The shared reference fixtures, read in place; skip when the folder is absent."""
    folder = FIXTURES.resolve()
    if not folder.is_dir():
        pytest.skip(
            "shared reference fixtures not found next to the project "
            "(../shared/reference/fixtures); these tests read them in place"
        )
    return folder


def coding(code: str, system: str = CPT, display: str | None = None) -> Json:
    out: Json = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def modifier_ext(code: str, system: str = HCPCS) -> Json:
    return {"url": EXT + "billing-modifier", "valueCoding": {"system": system, "code": code}}


def procedure(
    version: str = "R4",
    *,
    id: str = "p1",
    code: str = "97530",
    system: str = CPT,
    status: str = "completed",
    start: str | None = "2025-03-04T09:00:00-05:00",
    end: str | None = "2025-03-04T09:20:00-05:00",
    date_time: str | None = None,
    patient: str | None = "Patient/P1",
    subject: str | None = None,
    encounter: str | None = "Encounter/E1",
    based_on: tuple[str, ...] = ("CarePlan/CP1",),
    performers: tuple[str, ...] = ("Practitioner/T1",),
    modifiers: tuple[str, ...] = (),
    billed_units: int | None = None,
    delivery: str | None = None,
    reason: bool = True,
    body_site: str | None = None,
    extra: Json | None = None,
) -> Json:
    """A Procedure; R4 uses performed[x]/reasonCode, R5 occurrence[x]/reason."""
    res: Json = {
        "resourceType": "Procedure",
        "id": id,
        "status": status,
        "code": {"coding": [coding(code, system)]},
    }
    if subject is not None:
        res["subject"] = {"reference": subject}
    elif patient is not None:
        res["subject"] = {"reference": patient}
    if encounter:
        res["encounter"] = {"reference": encounter}
    if based_on:
        res["basedOn"] = [{"reference": ref} for ref in based_on]
    if performers:
        res["performer"] = [{"actor": {"reference": ref}} for ref in performers]
    prefix = "performed" if version == "R4" else "occurrence"
    if date_time is not None:
        res[f"{prefix}DateTime"] = date_time
    elif start is not None or end is not None:
        period: Json = {}
        if start is not None:
            period["start"] = start
        if end is not None:
            period["end"] = end
        res[f"{prefix}Period"] = period
    if reason:
        if version == "R4":
            res["reasonCode"] = [{"text": "low back pain"}]
        else:
            res["reason"] = [{"concept": {"text": "low back pain"}}]
    if body_site:
        res["bodySite"] = [{"coding": [coding(body_site, SNOMED)]}]
    extensions = [modifier_ext(m, CPT if m == "59" else HCPCS) for m in modifiers]
    if billed_units is not None:
        extensions.append({"url": EXT + "billed-units", "valueInteger": billed_units})
    if delivery is not None:
        extensions.append({"url": EXT + "therapy-delivery-mode", "valueCode": delivery})
    if extensions:
        res["extension"] = extensions
    if extra:
        res.update(extra)
    return res


def encounter(
    version: str = "R4",
    *,
    id: str = "E1",
    start: str | None = "2025-03-04T08:55:00-05:00",
    end: str | None = "2025-03-04T10:00:00-05:00",
    patient: str = "Patient/P1",
) -> Json:
    """An Encounter; R4 uses period and a class object, R5 actualPeriod and a class list."""
    amb = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
    res: Json = {"resourceType": "Encounter", "id": id, "subject": {"reference": patient}}
    period: Json = {}
    if start:
        period["start"] = start
    if end:
        period["end"] = end
    if version == "R4":
        res.update(status="finished", **{"class": amb})
        if period:
            res["period"] = period
    else:
        res.update(status="completed", **{"class": [{"coding": [amb]}]})
        if period:
            res["actualPeriod"] = period
    return res


def care_plan(
    version: str = "R4",
    *,
    id: str = "CP1",
    status: str = "active",
    discipline_code: str | None = "GP",
    start: str | None = "2025-02-01",
    end: str | None = "2025-04-30",
    certifications: tuple[str, ...] = ("2025-02-03",),
    patient: str = "Patient/P1",
) -> Json:
    """A CarePlan; the shape is the same in R4 and R5 for every field read here."""
    res: Json = {
        "resourceType": "CarePlan",
        "id": id,
        "status": status,
        "intent": "plan",
        "subject": {"reference": patient},
    }
    if discipline_code:
        res["category"] = [{"coding": [coding(discipline_code, HCPCS)]}]
    if start or end:
        res["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    if certifications:
        res["extension"] = [
            {"url": EXT + "plan-certification", "valueDateTime": when} for when in certifications
        ]
    if version == "R5":
        res["activity"] = [{"plannedActivityReference": {"reference": "ServiceRequest/x"}}]
    else:
        res["activity"] = [{"detail": {"status": "in-progress"}}]
    return res


def service_request(
    version: str = "R4",
    *,
    id: str = "sr1",
    code: str = "97530",
    units: float | int | None = 2,
    modifiers: tuple[str, ...] = ("GP", "59"),
    patient: str = "Patient/P1",
    occurrence: str | None = None,
    based_on: tuple[str, ...] = (),
    status: str = "draft",
) -> Json:
    """A draft charge: R4 ``code.coding`` + CodeableConcept orderDetail; R5 ``code.concept`` +
    ``orderDetail[].parameter[].valueCodeableConcept``."""
    mods = [coding(m, CPT if m == "59" else HCPCS) for m in modifiers]
    res: Json = {
        "resourceType": "ServiceRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "subject": {"reference": patient},
    }
    if version == "R4":
        res["code"] = {"coding": [coding(code)]}
        if mods:
            res["orderDetail"] = [{"coding": [m]} for m in mods]
    else:
        res["code"] = {"concept": {"coding": [coding(code)]}}
        if mods:
            res["orderDetail"] = [
                {
                    "parameter": [
                        {"code": {"text": "modifier"}, "valueCodeableConcept": {"coding": [m]}}
                        for m in mods
                    ]
                }
            ]
    if units is not None:
        res["quantityQuantity"] = {"value": units}
    if occurrence:
        res["occurrenceDateTime"] = occurrence
    if based_on:
        res["basedOn"] = [{"reference": ref} for ref in based_on]
    return res


def claim(
    *,
    id: str = "C1",
    lines: tuple[tuple[str, tuple[str, ...], int, str | None], ...] = (
        ("97530", ("GP", "59"), 1, "Procedure/p1"),
    ),
    patient: str = "Patient/P1",
) -> Json:
    """A Claim whose items bill (code, modifiers, units) for a linked Procedure reference."""
    procedures: list[Json] = []
    items: list[Json] = []
    for number, (code, modifiers, units, procedure_ref) in enumerate(lines, start=1):
        item: Json = {
            "sequence": number,
            "productOrService": {"coding": [coding(code)]},
            "quantity": {"value": units},
        }
        if modifiers:
            item["modifier"] = [
                {"coding": [coding(m, CPT if m == "59" else HCPCS)]} for m in modifiers
            ]
        if procedure_ref:
            procedures.append(
                {
                    "sequence": len(procedures) + 1,
                    "procedureReference": {"reference": procedure_ref},
                }
            )
            item["procedureSequence"] = [len(procedures)]
        items.append(item)
    return {
        "resourceType": "Claim",
        "id": id,
        "status": "active",
        "use": "claim",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "professional",
                }
            ]
        },
        "priority": {"coding": [{"code": "normal"}]},
        "created": "2025-03-04",
        "provider": {"reference": "Organization/clinic"},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cov"}}],
        "patient": {"reference": patient},
        "procedure": procedures,
        "item": items,
    }


def bundle(*resources: Json, type: str | None = "collection", full_urls: bool = False) -> Json:
    out: Json = {"resourceType": "Bundle"}
    if type is not None:
        out["type"] = type
    entries = []
    for res in resources:
        entry: Json = {"resource": res}
        if full_urls:
            entry["fullUrl"] = f"urn:uuid:{res['resourceType'].lower()}-{res.get('id', 'x')}"
        entries.append(entry)
    out["entry"] = entries
    return out
