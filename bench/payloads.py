"""Fixed, synthetic order-sign payloads for the service benchmarks, soak and fault scripts.

``visit_bundle(n)`` is one outpatient PT visit with ``n`` timed Procedures (R4 shapes: codes
with displays, performer, reason, plan-of-care link, billing modifier), its Encounter, Patient,
an active CarePlan, and one draft charge per code. Five codes share the Procedures (7 and 8
minute blocks, 15 minutes per pair, so each charge bills the units the minutes support), and
97140 + 97530 are billed without modifier 59 -- the commonest error -- so every call takes the
full path: mapping, rules, one error card with an update suggestion, and the summary card.
``order_sign_body(n)`` is the CDS Hooks request built from it with
:func:`plugin.hook_request.build_hook_request`, as an EHR would send it.

Two switches give the other bodies the benchmarks compare:

* ``clean=True`` bills the same visit correctly (modifier 59 on the 97530 charge), so under the
  default card policy the answer is no card at all: the clean path a therapist sees most;
* ``realistic=True`` dresses every resource as production EHRs send them: ``meta`` (version,
  last update, profiles, source), business ``identifier`` lists, EHR extensions, categories,
  and locations. The facts the rules read are the same,
  only the bytes around them grow: about 23 KiB for 10 Procedures and 140 KiB for 100, against
  14 and 86 KiB for the compact bodies.

Nothing here is patient data: names and ids are invented.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from plugin.hook_request import build_hook_request  # noqa: E402

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
EXT = "https://therapy-cds.github.io/fhir/StructureDefinition/"
CODES: dict[str, str] = {
    "97110": "Therapeutic exercises, each 15 minutes",
    "97112": "Neuromuscular reeducation, each 15 minutes",
    "97140": "Manual therapy techniques, 1 or more regions, each 15 minutes",
    "97530": "Therapeutic activities, direct (one-on-one) patient contact, each 15 minutes",
    "97116": "Gait training (includes stair climbing), each 15 minutes",
}
FIXED_HOOK_INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"


def _ref(kind: str, ident: str) -> dict[str, str]:
    return {"reference": f"{kind}/{ident}"}


def _time(minute: int) -> str:
    return f"2025-03-04T{7 + minute // 60:02d}:{minute % 60:02d}:00-05:00"


ORG = "urn:oid:1.2.840.114350.1.13.861.1.7"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-"


def _dress(resource: dict[str, Any], serial: int) -> dict[str, Any]:
    """``resource`` as a production EHR sends it: meta, identifiers, extensions (see above)."""
    kind, ident = resource["resourceType"], resource["id"]
    profile = {
        "Patient": "patient",
        "Encounter": "encounter",
        "CarePlan": "careplan",
        "Procedure": "procedure",
        "ServiceRequest": "servicerequest",
    }[kind]
    dressed: dict[str, Any] = {
        "resourceType": kind,
        "id": ident,
        "meta": {
            "versionId": str(3 + serial % 7),
            "lastUpdated": f"2025-03-04T{12 + serial % 6:02d}:{serial % 60:02d}:17.412-05:00",
            "source": "#therapy-bench-ehr",
            "profile": [US_CORE + profile],
        },
        "identifier": [{"system": f"{ORG}.{serial % 9 + 100}", "value": f"{914000 + serial}"}],
    }
    dressed.update(resource)
    extensions = list(resource.get("extension", []))
    extensions.append(
        {
            "url": f"{ORG}.2.698084.{kind.lower()}-recorded-department",
            "valueReference": {
                "reference": "Location/loc-bench-rehab",
                "display": "Outpatient Rehab",
            },
        }
    )
    dressed["extension"] = extensions
    place = {"reference": "Location/loc-bench-rehab"}
    if kind == "Encounter":
        dressed["location"] = [{"location": place, "status": "completed"}]
        dressed["serviceProvider"] = {"reference": "Organization/org-bench", "display": "Bench"}
    elif kind == "Procedure":
        dressed["location"] = place
    elif kind == "ServiceRequest":
        dressed["locationReference"] = [place]
    return dressed


def visit_bundle(
    procedures: int, *, clean: bool = False, realistic: bool = False
) -> dict[str, Any]:
    """One visit with ``procedures`` timed Procedures (see module doc)."""
    if procedures < 1:
        raise ValueError("a visit needs at least one Procedure")
    if procedures > 120:
        raise ValueError("at most 120 Procedures fit in one day's visit here")
    codes = list(CODES)
    starts = [0]
    for index in range(procedures):
        starts.append(starts[-1] + (7 if index % 2 == 0 else 8))
    patient, encounter, plan, therapist = "pat-bench", "enc-bench", "cp-bench", "prac-bench"
    entries: list[dict[str, Any]] = [
        {
            "resource": {
                "resourceType": "Patient",
                "id": patient,
                "name": [{"family": "Bench", "given": ["Synthetic"]}],
                "gender": "female",
                "birthDate": "1961-07-14",
            }
        },
        {
            "resource": {
                "resourceType": "Encounter",
                "id": encounter,
                "status": "finished",
                "class": {"code": "AMB", "display": "ambulatory"},
                "subject": _ref("Patient", patient),
                "participant": [{"individual": _ref("Practitioner", therapist)}],
                "period": {"start": _time(0), "end": _time(starts[-1])},
            }
        },
        {
            "resource": {
                "resourceType": "CarePlan",
                "id": plan,
                "extension": [{"url": EXT + "plan-certification", "valueDateTime": "2025-02-21"}],
                "status": "active",
                "intent": "plan",
                "category": [{"text": "Physical therapy"}],
                "title": "Outpatient therapy plan of care",
                "subject": _ref("Patient", patient),
                "period": {"start": "2025-02-20", "end": "2025-05-20"},
            }
        },
    ]
    minutes_by_code: dict[str, int] = {}
    for index in range(procedures):
        code = codes[index % len(codes)]
        start, end = starts[index], starts[index + 1]
        minutes_by_code[code] = minutes_by_code.get(code, 0) + end - start
        entries.append(
            {
                "fullUrl": f"http://example.org/fhir/Procedure/proc-bench-{index}",
                "resource": {
                    "resourceType": "Procedure",
                    "id": f"proc-bench-{index}",
                    "basedOn": [_ref("CarePlan", plan)],
                    "status": "completed",
                    "code": {
                        "coding": [{"system": CPT, "code": code, "display": CODES[code]}],
                        "text": CODES[code],
                    },
                    "subject": _ref("Patient", patient),
                    "encounter": _ref("Encounter", encounter),
                    "performedPeriod": {"start": _time(start), "end": _time(end)},
                    "performer": [{"actor": _ref("Practitioner", therapist)}],
                    "reasonCode": [
                        {
                            "coding": [
                                {
                                    "system": ICD10,
                                    "code": "M17.11",
                                    "display": "Unilateral primary osteoarthritis, right knee",
                                }
                            ]
                        }
                    ],
                },
            }
        )
    for index, (code, minutes) in enumerate(sorted(minutes_by_code.items())):
        units = max(1, round(minutes / 15))
        entries.append(
            {
                "fullUrl": f"http://example.org/fhir/ServiceRequest/chg-bench-{index}",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": f"chg-bench-{index}",
                    "status": "draft",
                    "intent": "order",
                    "code": {
                        "coding": [{"system": CPT, "code": code, "display": CODES[code]}],
                        "text": CODES[code],
                    },
                    "orderDetail": [
                        {"coding": [{"system": HCPCS, "code": modifier}], "text": modifier}
                        for modifier in (("GP", "59") if clean and code == "97530" else ("GP",))
                    ],
                    "quantityQuantity": {"value": units, "unit": "unit"},
                    "subject": _ref("Patient", patient),
                    "encounter": _ref("Encounter", encounter),
                    "occurrenceDateTime": "2025-03-04",
                    "authoredOn": _time(starts[-1]),
                    "requester": _ref("Practitioner", therapist),
                },
            }
        )
    if realistic:
        for serial, entry in enumerate(entries):
            entry["resource"] = _dress(entry["resource"], serial)
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def order_sign_request(
    procedures: int, *, clean: bool = False, realistic: bool = False
) -> dict[str, Any]:
    """The order-sign request for :func:`visit_bundle` (fixed ``hookInstance``)."""
    bundle = visit_bundle(procedures, clean=clean, realistic=realistic)
    return build_hook_request(bundle, hook_instance=FIXED_HOOK_INSTANCE)


def order_sign_body(procedures: int, *, clean: bool = False, realistic: bool = False) -> bytes:
    """:func:`order_sign_request` as the JSON bytes sent on the wire."""
    return orjson.dumps(order_sign_request(procedures, clean=clean, realistic=realistic))


if __name__ == "__main__":  # print a payload, e.g. `python bench/payloads.py 10 > visit.json`
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    sys.stdout.buffer.write(orjson.dumps(order_sign_request(count), option=orjson.OPT_INDENT_2))
