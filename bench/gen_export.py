"""Write a synthetic FHIR Bulk Data export of N outpatient therapy visits (deterministic).

The export is what a ``$export`` of a therapy clinic's patients would give: one NDJSON file per
resource type (Patient, Encounter, Procedure, ServiceRequest, Claim, CarePlan, Condition,
Practitioner), plus an ``OperationOutcome.ndjson`` error file and a Bulk Data ``manifest.json``.
Every resource is invented; patients carry the ``HTEST`` security tag and no names.

The mix is meant to look like a real clinic's history, not a best case:

* PT (70%) and OT visits of 1 to 5 services: 97110, 97530, 97140, 97112, 97116, 97535, 97035,
  untimed 97010 hot packs, an evaluation on a patient's first visit; some same-day PT + OT;
* back-to-back blocks with small gaps, and some overlaps (97140 inside a 97530 block ...);
* missing end times, dateTime-only services, services past midnight, statuses other than
  ``completed``, group delivery of a one-on-one code, Procedures with no reason;
* plans of care: active, expired, revoked, recertification due, or no plan at all;
* charges as draft ServiceRequests (order-sign) or draft Claims linked to the Procedures, with
  GP/GO, 59/XU modifiers (sometimes on the wrong line, sometimes missing) and some over-billing;
* a few malformed lines (truncated JSON, not JSON, not a resource, bad UTF-8, a Procedure with
  no status) that an audit must list as rejected -- they never belong to a counted visit.

``N`` is the exact number of visits (patient, date of service, discipline) the rules will see.
``--bundles`` also writes the same data as one collection Bundle per patient (no malformed
lines), so ``check`` on the bundles and ``audit`` on the export can be compared.

Run: .venv/bin/python bench/gen_export.py 10000 bench/out/export-10k [--seed 7] [--bundles]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import orjson

CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
EXT = "https://therapy-cds.github.io/fhir/StructureDefinition/"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
TYPES = (
    "Patient",
    "Practitioner",
    "Condition",
    "CarePlan",
    "Encounter",
    "Procedure",
    "ServiceRequest",
    "Claim",
)

DESCRIPTORS = {
    "97110": "Therapeutic exercises, each 15 minutes",
    "97112": "Neuromuscular reeducation, each 15 minutes",
    "97116": "Gait training, each 15 minutes",
    "97140": "Manual therapy techniques, 1 or more regions, each 15 minutes",
    "97530": "Therapeutic activities, direct (one-on-one) patient contact, each 15 minutes",
    "97535": "Self-care/home management training, each 15 minutes",
    "97035": "Ultrasound, each 15 minutes",
    "97010": "Hot or cold packs",
    "97161": "Physical therapy evaluation, low complexity",
    "97165": "Occupational therapy evaluation, low complexity",
}
PT_CODES = (("97110", 30), ("97530", 22), ("97140", 22), ("97112", 12), ("97116", 6), ("97035", 3))
OT_CODES = (("97530", 35), ("97535", 25), ("97110", 20), ("97140", 10), ("97112", 10))
UNTIMED = frozenset({"97010", "97161", "97165"})
DIAGNOSES = (
    ("M17.11", "Unilateral primary osteoarthritis, right knee"),
    ("M54.50", "Low back pain, unspecified"),
    ("M75.101", "Rotator cuff tear, right shoulder"),
    ("S83.511A", "Sprain of anterior cruciate ligament of right knee"),
    ("I69.351", "Hemiplegia following cerebral infarction, right dominant side"),
    ("M25.561", "Pain in right knee"),
)
OFFSETS = ("-05:00", "-06:00", "-07:00", "-08:00", "-04:00")
FIRST_DAY = date(2024, 1, 2)
SPAN_DAYS = 700


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([c for c, _ in weighted], weights=[w for _, w in weighted])[0]


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


class Export:
    """Streams resources to one NDJSON file per type (and optionally per-patient bundles)."""

    def __init__(self, out: Path, bundles: bool) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.files: dict[str, IO[bytes]] = {t: (out / f"{t}.ndjson").open("wb") for t in TYPES}
        self.counts = dict.fromkeys(TYPES, 0)
        self.bundle_dir = out / "bundles" if bundles else None
        if self.bundle_dir is not None:
            self.bundle_dir.mkdir(exist_ok=True)
        self.pending: list[dict[str, Any]] = []

    def write(self, resource: dict[str, Any]) -> None:
        rtype = resource["resourceType"]
        self.files[rtype].write(orjson.dumps(resource) + b"\n")
        self.counts[rtype] += 1
        if self.bundle_dir is not None and rtype != "Practitioner":
            self.pending.append(resource)

    def raw_line(self, rtype: str, line: bytes) -> None:
        """A malformed line (export only; never in a bundle)."""
        self.files[rtype].write(line + b"\n")

    def end_patient(self, patient_id: str) -> None:
        if self.bundle_dir is None:
            return
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in self.pending],
        }
        (self.bundle_dir / f"{patient_id}.json").write_bytes(orjson.dumps(bundle))
        self.pending = []

    def close(self, errors: list[dict[str, Any]]) -> None:
        for handle in self.files.values():
            handle.close()
        with (self.out / "OperationOutcome.ndjson").open("wb") as handle:
            for outcome in errors:
                handle.write(orjson.dumps(outcome) + b"\n")
        base = "https://ehr.example.org/fhir/bulkfiles/therapy-export"
        manifest = {
            "transactionTime": "2025-12-31T23:00:00Z",
            "request": "https://ehr.example.org/fhir/Group/therapy/$export",
            "requiresAccessToken": True,
            "output": [
                {"type": t, "url": f"{base}/{t}.ndjson", "count": self.counts[t]} for t in TYPES
            ],
            "error": [{"type": "OperationOutcome", "url": f"{base}/OperationOutcome.ndjson"}],
        }
        (self.out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


class Generator:
    def __init__(self, seed: int, export: Export, malformed_rate: float) -> None:
        self.rng = random.Random(seed)
        self.export = export
        self.malformed_rate = malformed_rate
        self.serial = 0
        self.malformed = 0

    def _id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial:08d}"

    # ---- one patient

    def patient(self, visits_wanted: int) -> int:
        rng = self.rng
        pid = self._id("pt")
        patient_ref = {"reference": f"Patient/{pid}"}
        offset = rng.choice(OFFSETS)
        tz = timezone(timedelta(hours=int(offset[:3]), minutes=int(offset[0] + offset[4:])))
        self.export.write(
            {
                "resourceType": "Patient",
                "id": pid,
                "meta": {
                    "tag": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                            "code": "HTEST",
                        }
                    ]
                },
                "gender": rng.choice(("female", "male")),
                "birthDate": f"{rng.randint(1935, 2005)}-{rng.randint(1, 12):02d}-15",
            }
        )
        dx_code, dx_text = rng.choice(DIAGNOSES)
        condition_id = self._id("cond")
        self.export.write(
            {
                "resourceType": "Condition",
                "id": condition_id,
                "clinicalStatus": {
                    "coding": [
                        _coding(
                            "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
                        )
                    ]
                },
                "code": {"coding": [_coding(ICD10, dx_code, dx_text)]},
                "subject": patient_ref,
            }
        )
        start = FIRST_DAY + timedelta(days=rng.randrange(SPAN_DAYS))
        disciplines = ["PT"] if rng.random() < 0.7 else ["OT"]
        if rng.random() < 0.08:
            disciplines = ["PT", "OT"]
        plans = {d: self._plan(d, pid, patient_ref, start) for d in disciplines}
        day = start
        done = 0
        first = True
        while done < visits_wanted:
            todays = [rng.choice(disciplines)]
            if len(disciplines) == 2 and visits_wanted - done >= 2 and rng.random() < 0.3:
                todays = ["PT", "OT"]
            clock = datetime(
                day.year,
                day.month,
                day.day,
                rng.randint(7, 17),
                rng.choice((0, 15, 30, 45)),
                tzinfo=tz,
            )
            late = len(todays) == 1 and rng.random() < 0.004
            if late:
                clock = clock.replace(hour=23, minute=rng.randint(30, 50))  # past midnight
            for discipline in todays:
                clock = self._visit(
                    discipline, patient_ref, pid, plans[discipline], clock, first, dx_code, dx_text
                )
                clock += timedelta(minutes=rng.randint(5, 40))
                done += 1
            first = False
            day += timedelta(days=rng.choice((2, 3, 4, 7) if late else (1, 2, 2, 3, 3, 4, 7)))
        self.export.end_patient(pid)
        return done

    def _plan(
        self, discipline: str, pid: str, patient_ref: dict[str, str], start: date
    ) -> str | None:
        rng = self.rng
        if rng.random() < 0.04:
            return None  # no plan of care on file
        plan_id = self._id("cp")
        plan_start = start - timedelta(days=rng.randint(0, 10))
        length = rng.choice((60, 90, 90, 90, 120))
        status = "active"
        roll = rng.random()
        if roll < 0.03:
            status = "revoked"
        elif roll < 0.07:
            status = "completed"
        snomed = (
            ("91251008", "Physical therapy procedure")
            if discipline == "PT"
            else ("84478008", "Occupational therapy")
        )
        plan: dict[str, Any] = {
            "resourceType": "CarePlan",
            "id": plan_id,
            "status": status,
            "intent": "plan",
            "category": [{"coding": [_coding(SNOMED, *snomed)]}],
            "title": "Outpatient therapy plan of care",
            "subject": patient_ref,
            "period": {
                "start": plan_start.isoformat(),
                "end": (plan_start + timedelta(days=length)).isoformat(),
            },
        }
        if rng.random() < 0.8:
            plan["extension"] = [
                {
                    "url": EXT + "plan-certification",
                    "valueDateTime": (plan_start + timedelta(days=1)).isoformat(),
                }
            ]
        self.export.write(plan)
        return plan_id

    def _services(self, discipline: str, first: bool) -> list[str]:
        rng = self.rng
        weighted = PT_CODES if discipline == "PT" else OT_CODES
        count = rng.choices((1, 2, 3, 4), weights=(10, 35, 40, 15))[0]
        codes: list[str] = []
        if first:
            codes.append("97161" if discipline == "PT" else "97165")
        if rng.random() < 0.25 and discipline == "PT":
            codes.append("97530")
            codes.append("97140")
        while len(codes) < count + (1 if first else 0):
            code = _pick(rng, weighted)
            if code not in codes or rng.random() < 0.15:  # the same code twice now and then
                codes.append(code)
        if discipline == "PT" and rng.random() < 0.06:
            codes.append("97010")
        rng.shuffle(codes)
        return codes

    def _visit(
        self,
        discipline: str,
        patient_ref: dict[str, str],
        pid: str,
        plan_id: str | None,
        clock: datetime,
        first: bool,
        dx_code: str,
        dx_text: str,
    ) -> datetime:
        rng = self.rng
        encounter_id = self._id("enc")
        encounter_ref = {"reference": f"Encounter/{encounter_id}"}
        visit_start = clock
        procedures: list[tuple[str, str, int | None]] = []  # (id, code, minutes or None)
        for code in self._services(discipline, first):
            proc_id = self._id("proc")
            minutes = rng.randint(8, 32) if code not in UNTIMED else rng.randint(10, 20)
            if rng.random() < 0.08 and procedures:
                clock -= timedelta(minutes=rng.randint(3, 12))  # overlaps the previous block
            begin, end = clock, clock + timedelta(minutes=minutes)
            proc: dict[str, Any] = {
                "resourceType": "Procedure",
                "id": proc_id,
                "status": "completed",
                "code": {"coding": [_coding(CPT, code, DESCRIPTORS[code])]},
                "subject": patient_ref,
                "encounter": encounter_ref,
                "performer": [{"actor": {"reference": f"Practitioner/ther-{discipline.lower()}"}}],
            }
            roll = rng.random()
            documented: int | None = minutes
            if roll < 0.03:
                proc["performedPeriod"] = {"start": _stamp(begin)}  # missing end
                documented = None
            elif roll < 0.05:
                proc["performedDateTime"] = _stamp(begin)  # no duration
                documented = None
            else:
                proc["performedPeriod"] = {"start": _stamp(begin), "end": _stamp(end)}
            if procedures and rng.random() < 0.015:  # never the visit's only service
                proc["status"] = rng.choice(("entered-in-error", "not-done"))
            if code in ("97530", "97110") and rng.random() < 0.01:
                proc["extension"] = [{"url": EXT + "therapy-delivery-mode", "valueCode": "group"}]
            if plan_id is not None and rng.random() < 0.97:
                proc["basedOn"] = [{"reference": f"CarePlan/{plan_id}"}]
            if rng.random() < 0.95:
                proc["reasonCode"] = [{"coding": [_coding(ICD10, dx_code, dx_text)]}]
            self.export.write(proc)
            procedures.append((proc_id, code, documented))
            clock = end + timedelta(minutes=rng.choice((0, 0, 0, 1, 2, 3)))
        self.export.write(
            {
                "resourceType": "Encounter",
                "id": encounter_id,
                "status": "finished",
                "class": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB"),
                "subject": patient_ref,
                "period": {"start": _stamp(visit_start), "end": _stamp(clock)},
            }
        )
        self._charges(discipline, patient_ref, procedures, plan_id, visit_start.date())
        self._maybe_malformed(pid)
        return clock

    def _charges(
        self,
        discipline: str,
        patient_ref: dict[str, str],
        procedures: list[tuple[str, str, int | None]],
        plan_id: str | None,
        day: date,
    ) -> None:
        rng = self.rng
        minutes: dict[str, int] = {}
        for _, code, documented in procedures:
            if code not in UNTIMED:
                minutes[code] = minutes.get(code, 0) + (documented or 0)
        total = sum(minutes.values())
        allowed = 0 if total < 8 else (total + 7) // 15
        # CMS allocation, largest remainders; good enough for a billing clerk's charges
        units = {c: m // 15 for c, m in minutes.items()}
        rest = allowed - sum(units.values())
        for code in sorted(minutes, key=lambda c: (-(minutes[c] % 15), c))[: max(0, rest)]:
            units[code] += 1
        for code in {c for _, c, _ in procedures if c in UNTIMED}:
            units[code] = 1
        if units and rng.random() < 0.06:
            units[rng.choice(sorted(units))] += 1  # over-billed
        pair = "97140" in units and "97530" in units
        discipline_modifier = "GP" if discipline == "PT" else "GO"
        modifiers: dict[str, list[tuple[str, str]]] = {}
        for code in units:
            modifiers[code] = [(HCPCS, discipline_modifier)] if rng.random() < 0.98 else []
        if pair:
            roll = rng.random()
            if roll < 0.68:
                modifiers["97530"].append((CPT, "59"))
            elif roll < 0.78:
                modifiers["97530"].append((HCPCS, "XU"))
            elif roll < 0.86:
                modifiers["97140"].append((CPT, "59"))
        style = rng.random()
        if style < 0.6:
            for code in sorted(units):
                if units[code] == 0:
                    continue
                request: dict[str, Any] = {
                    "resourceType": "ServiceRequest",
                    "id": self._id("chg"),
                    "status": "draft",
                    "intent": "order",
                    "code": {"coding": [_coding(CPT, code, DESCRIPTORS[code])]},
                    "subject": patient_ref,
                    "occurrenceDateTime": day.isoformat(),
                    "quantityQuantity": {"value": units[code]},
                }
                if modifiers[code]:
                    request["orderDetail"] = [
                        {"coding": [_coding(system, m)]} for system, m in modifiers[code]
                    ]
                if plan_id is not None:
                    request["basedOn"] = [{"reference": f"CarePlan/{plan_id}"}]
                self.export.write(request)
        elif style < 0.95:
            items = []
            claim_procedures = []
            for sequence, (proc_id, _code, _) in enumerate(procedures, start=1):
                claim_procedures.append(
                    {
                        "sequence": sequence,
                        "procedureReference": {"reference": f"Procedure/{proc_id}"},
                    }
                )
            for code in sorted(units):
                sequences = [i for i, (_, c, _) in enumerate(procedures, start=1) if c == code]
                item: dict[str, Any] = {
                    "sequence": len(items) + 1,
                    "productOrService": {"coding": [_coding(CPT, code)]},
                    "quantity": {"value": units[code]},
                    "procedureSequence": sequences,
                    "servicedDate": day.isoformat(),
                }
                if modifiers[code]:
                    item["modifier"] = [{"coding": [_coding(s, m)]} for s, m in modifiers[code]]
                items.append(item)
            self.export.write(
                {
                    "resourceType": "Claim",
                    "id": self._id("claim"),
                    "status": "draft",
                    "type": {
                        "coding": [
                            _coding(
                                "http://terminology.hl7.org/CodeSystem/claim-type", "professional"
                            )
                        ]
                    },
                    "use": "claim",
                    "patient": patient_ref,
                    "created": day.isoformat(),
                    "provider": {"reference": "Organization/clinic"},
                    "priority": {
                        "coding": [
                            _coding(
                                "http://terminology.hl7.org/CodeSystem/processpriority", "normal"
                            )
                        ]
                    },
                    "insurance": [
                        {
                            "sequence": 1,
                            "focal": True,
                            "coverage": {"reference": "Coverage/medicare"},
                        }
                    ],
                    "procedure": claim_procedures,
                    "item": items,
                }
            )
        # else: nothing billed yet (5%)

    def _maybe_malformed(self, pid: str) -> None:
        rng = self.rng
        if rng.random() >= self.malformed_rate * 8:
            return
        self.malformed += 1
        kind = rng.randrange(6)
        if kind == 0:
            line = orjson.dumps(
                {
                    "resourceType": "Procedure",
                    "id": self._id("bad"),
                    "status": "completed",
                    "subject": {"reference": f"Patient/{pid}"},
                }
            )
            self.export.raw_line("Procedure", line[: len(line) // 2])  # truncated
        elif kind == 1:
            self.export.raw_line("Encounter", b"<html>502 Bad Gateway</html>")
        elif kind == 2:
            self.export.raw_line("Procedure", orjson.dumps({"id": self._id("bad"), "status": "x"}))
        elif kind == 3:
            self.export.raw_line(
                "ServiceRequest", b'{"resourceType": "ServiceRequest", "id": "\xff\xfe"}'
            )
        elif kind == 4:
            self.export.raw_line(
                "Procedure",
                orjson.dumps(
                    {
                        "resourceType": "Procedure",
                        "id": self._id("bad"),
                        "code": {"coding": [_coding(CPT, "97110")]},
                        "subject": {"reference": f"Patient/{pid}"},
                    }
                ),  # no status
            )
        else:
            self.export.raw_line("Claim", b"[1, 2, 3]")


def visit_counts(rng: random.Random, n: int) -> Iterator[int]:
    """How many visits each patient gets (1 to 24, most 6 to 12), summing to exactly ``n``."""
    left = n
    while left > 0:
        wanted = min(left, max(1, int(rng.gauss(9, 4))))
        left -= wanted
        yield wanted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("visits", type=int, help="number of visits to generate")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bundles", action="store_true", help="also one Bundle per patient")
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUTDIR")
    parser.add_argument(
        "--malformed-rate",
        type=float,
        default=0.002,
        help="malformed lines per resource line (default 0.002)",
    )
    args = parser.parse_args(argv)
    if args.visits < 1:
        parser.error("visits must be at least 1")
    if args.outdir.exists() and any(args.outdir.iterdir()):
        if not args.force:
            parser.error(f"{args.outdir} is not empty (use --force to replace its contents)")
        shutil.rmtree(args.outdir)
    export = Export(args.outdir, args.bundles)
    gen = Generator(args.seed, export, args.malformed_rate)
    for therapist in ("pt", "ot"):
        export.write(
            {
                "resourceType": "Practitioner",
                "id": f"ther-{therapist}",
                "qualification": [{"code": {"text": therapist.upper()}}],
            }
        )
    total = 0
    for wanted in visit_counts(random.Random(args.seed + 1), args.visits):
        total += gen.patient(wanted)
    errors = (
        [
            {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "error",
                        "code": "processing",
                        "diagnostics": "Resource type Coverage could not be exported",
                    }
                ],
            }
        ]
        if args.malformed_rate > 0
        else []
    )
    export.close(errors)
    lines = sum(export.counts.values())
    sys.stdout.write(
        f"{total} visits, {lines} resources, {gen.malformed} malformed lines, "
        f"{len(errors)} export errors -> {args.outdir}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
