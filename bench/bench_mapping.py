"""Benchmark: FHIR JSON -> TherapyRecord, fast path vs strict (full fhir.resources models).

Fixed inputs:
  * a generated order-sign sized visit: 1 Patient, 1 Encounter, 1 CarePlan, 10 Procedures,
    4 draft ServiceRequests (17 resources, R4 shapes);
  * the Synthea R4 transaction Bundle from the shared reference fixtures (2.9 MB, 1379 entries),
    skipped when the fixtures folder is absent.

json.loads is excluded: every timing maps an already-parsed dict.
Budgets (issue 3): visit < 0.3 ms, Synthea < 100 ms on the fast path.

Run: .venv/bin/python bench/bench_mapping.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir_mappings import group_visits, map_bundle  # noqa: E402

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
EXT = "https://therapy-cds.github.io/fhir/StructureDefinition/"
SYNTHEA = (
    ROOT.parent
    / "shared"
    / "reference"
    / "fixtures"
    / "fhir-examples"
    / "r4"
    / "synthea"
    / "Lawerence6_Baumbach677_ea8d2576-4a23-4906-c353-bfed5adb23bd.json"
)
CODES = ("97110", "97112", "97140", "97530", "97116", "97535", "97035", "97010", "97140", "97530")


def generated_visit() -> dict[str, Any]:
    """A 17-resource R4 visit: 10 timed Procedures, plan, encounter, 4 draft charges."""
    entries: list[dict[str, Any]] = [
        {"resource": {"resourceType": "Patient", "id": "P1"}},
        {
            "resource": {
                "resourceType": "Encounter",
                "id": "E1",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": "Patient/P1"},
                "period": {
                    "start": "2025-03-04T09:00:00-05:00",
                    "end": "2025-03-04T11:40:00-05:00",
                },
            }
        },
        {
            "resource": {
                "resourceType": "CarePlan",
                "id": "CP1",
                "status": "active",
                "intent": "plan",
                "subject": {"reference": "Patient/P1"},
                "category": [{"coding": [{"system": HCPCS, "code": "GP"}]}],
                "period": {"start": "2025-02-01", "end": "2025-04-30"},
                "extension": [{"url": EXT + "plan-certification", "valueDateTime": "2025-02-03"}],
            }
        },
    ]
    for index, code in enumerate(CODES):
        minute = index * 15
        entries.append(
            {
                "fullUrl": f"urn:uuid:00000000-0000-0000-0000-{index:012d}",
                "resource": {
                    "resourceType": "Procedure",
                    "id": f"p{index}",
                    "status": "completed",
                    "code": {"coding": [{"system": CPT, "code": code}]},
                    "subject": {"reference": "Patient/P1"},
                    "encounter": {"reference": "Encounter/E1"},
                    "basedOn": [{"reference": "CarePlan/CP1"}],
                    "performedPeriod": {
                        "start": f"2025-03-04T{9 + minute // 60:02d}:{minute % 60:02d}:00-05:00",
                        "end": f"2025-03-04T{9 + minute // 60:02d}:{minute % 60 + 12:02d}:00-05:00",
                    },
                    "performer": [{"actor": {"reference": "Practitioner/T1"}}],
                    "reasonCode": [{"text": "low back pain"}],
                    "extension": [
                        {
                            "url": EXT + "billing-modifier",
                            "valueCoding": {"system": HCPCS, "code": "GP"},
                        }
                    ],
                },
            }
        )
    for index, code in enumerate(("97110", "97112", "97140", "97530")):
        entries.append(
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": f"sr{index}",
                    "status": "draft",
                    "intent": "order",
                    "code": {"coding": [{"system": CPT, "code": code}]},
                    "subject": {"reference": "Patient/P1"},
                    "quantityQuantity": {"value": 1},
                    "orderDetail": [{"coding": [{"system": HCPCS, "code": "GP"}]}],
                }
            }
        )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def measure(func: Callable[[], object], repeat: int) -> tuple[float, float]:
    func()  # warm-up (lazy model builds, caches)
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), min(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="timed runs per case (visit)")
    args = parser.parse_args()
    visit = generated_visit()
    cases: list[tuple[str, Callable[[], object], int]] = [
        ("visit (17 resources) fast", lambda: map_bundle(visit), args.repeat * 10),
        (
            "visit (17 resources) fast + group_visits",
            lambda: group_visits(map_bundle(visit)),
            args.repeat * 10,
        ),
        ("visit (17 resources) strict", lambda: map_bundle(visit, strict=True), args.repeat),
    ]
    if SYNTHEA.is_file():
        synthea = orjson.loads(SYNTHEA.read_bytes())
        cases += [
            ("synthea (1379 entries) fast", lambda: map_bundle(synthea), max(args.repeat // 4, 5)),
            ("synthea (1379 entries) strict", lambda: map_bundle(synthea, strict=True), 5),
        ]
    else:
        print(f"skipped Synthea bundle: {SYNTHEA.name} not found (shared fixtures absent)")
    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, 1-min load average {load:.2f}")
    if load > 0.5:
        print("note: other processes are running; medians will be inflated, min is the best guide")
    print(f"{'case':<45} {'median ms':>10} {'min ms':>10} {'runs':>6}")
    for name, func, runs in cases:
        median, minimum = measure(func, runs)
        print(f"{name:<45} {median:>10.3f} {minimum:>10.3f} {runs:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
