"""The therapy code list: timed vs untimed, one-on-one vs supervised, group (R-A4, R-F2, R-F3).

The facts live in ``data/therapy_codes.json`` with their sources and effective date, loaded once
at import. Membership is **UNCONFIRMED** against the current CMS "Applicable Outpatient
Rehabilitation HCPCS Codes" list (billing-rules.md R-A4): every row says so
(``membership_verified``), and :data:`CODE_LIST` exposes the file's own verification note.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from importlib import resources
from types import MappingProxyType
from typing import Any

from fhir_mappings.model import CPT_SYSTEM, HCPCS_SYSTEM, Discipline


class Attendance(StrEnum):
    """How the therapist attends the patient during a service (R-F1..R-F3)."""

    ONE_ON_ONE = "one-on-one"  # direct one-on-one contact; overlap checks apply (R-F4)
    CONSTANT_ATTENDANCE = "constant-attendance"  # modalities 97032-97036; overlap checks apply
    SUPERVISED = "supervised"  # supervised modalities; may overlap anything (R-F3)
    GROUP = "group"  # 97150 (R-F2)
    SERVICE = "service"  # evaluations / re-evaluations, 1 unit per day (R-A4)


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """One row of the therapy code list."""

    code: str
    system: str  # CPT_SYSTEM or HCPCS_SYSTEM
    descriptor: str  # paraphrased, not the AMA text
    timed: bool  # 15-minute timed code (R-A4)
    unit_minutes: int | None
    attendance: Attendance
    membership_verified: bool  # False until checked against the current CMS list


@dataclass(frozen=True, slots=True)
class CodeList:
    """The loaded data file: provenance plus the rows."""

    version: str
    effective_date: date
    sources: tuple[str, ...]
    verification: str
    codes: Mapping[str, CodeInfo]
    discipline_modifiers: Mapping[str, Discipline]
    ncci_modifiers: frozenset[str]
    discipline_codings: Mapping[tuple[str, str], Discipline]
    discipline_phrases: tuple[tuple[str, Discipline], ...]
    discipline_texts: Mapping[str, Discipline]  # whole texts, lower case ("pt", "ot", "slp")


_SYSTEMS = {"cpt": CPT_SYSTEM, "hcpcs": HCPCS_SYSTEM}


def _load() -> CodeList:
    raw: dict[str, Any] = json.loads(
        resources.files("fhir_mappings").joinpath("data/therapy_codes.json").read_text("utf-8")
    )
    codes = {
        row["code"]: CodeInfo(
            code=row["code"],
            system=_SYSTEMS[row["system"]],
            descriptor=row["descriptor"],
            timed=bool(row["timed"]),
            unit_minutes=row["unit_minutes"],
            attendance=Attendance(row["attendance"]),
            membership_verified=bool(row["membership_verified"]),
        )
        for row in raw["codes"]
    }
    concepts = raw["discipline_concepts"]
    return CodeList(
        version=raw["version"],
        effective_date=date.fromisoformat(raw["effective_date"]),
        sources=tuple(raw["sources"]),
        verification=raw["verification"],
        codes=codes,
        discipline_modifiers={k: Discipline(v) for k, v in raw["discipline_modifiers"].items()},
        ncci_modifiers=frozenset(raw["ncci_modifiers"]),
        discipline_codings={
            (c["system"], c["code"]): Discipline(c["discipline"]) for c in concepts["codings"]
        },
        discipline_phrases=tuple(
            (p["phrase"].lower(), Discipline(p["discipline"])) for p in concepts["text_phrases"]
        ),
        discipline_texts={
            t["text"].lower(): Discipline(t["discipline"]) for t in concepts["text_exact"]
        },
    )


CODE_LIST: CodeList = _load()
_CODES = CODE_LIST.codes
_OVERLAP_CHECKED = frozenset({Attendance.ONE_ON_ONE, Attendance.CONSTANT_ATTENDANCE})


def code_info(code: str) -> CodeInfo | None:
    """The list row for a CPT/HCPCS code, or ``None`` when the code is not on the list."""
    return _CODES.get(code)


def is_timed(code: str) -> bool:
    """True for 15-minute timed codes whose minutes enter the unit math (R-A4, R-B2)."""
    info = _CODES.get(code)
    return info is not None and info.timed


def is_one_on_one(code: str) -> bool:
    """True for one-on-one and constant-attendance codes: overlap checks apply (R-F3, R-F4),
    and group delivery of them is not billable as that code (R-F2, R-H8)."""
    info = _CODES.get(code)
    return info is not None and info.attendance in _OVERLAP_CHECKED


def is_supervised_modality(code: str) -> bool:
    """True for supervised modalities, which may overlap other services (R-F3)."""
    info = _CODES.get(code)
    return info is not None and info.attendance is Attendance.SUPERVISED


def is_group_code(code: str) -> bool:
    """True for the group therapy code 97150 (R-F2, R-H8)."""
    info = _CODES.get(code)
    return info is not None and info.attendance is Attendance.GROUP


def discipline_of_modifier(modifier: str) -> Discipline | None:
    """GP -> PT, GO -> OT, GN -> SLP (R-G1); ``None`` for any other modifier."""
    return CODE_LIST.discipline_modifiers.get(modifier)


def is_ncci_modifier(modifier: str) -> bool:
    """59, XE, XS, XP, XU: the NCCI-associated modifiers that may bypass a PTP edit (R-D3, R-D4)."""
    return modifier in CODE_LIST.ncci_modifiers


def split_modifiers(code: str) -> list[str]:
    """The modifiers one modifier code names, as the mapper reads them: several may share a
    code separated by commas or blanks, in any case (``"59, xu"`` -> ``["59", "XU"]``)."""
    return [part.upper() for part in code.replace(",", " ").split()]


def discipline_of_concept(system: str | None, code: str | None, text: str | None) -> Discipline:
    """Discipline named by a category coding or text (I-2.5); UNKNOWN unless recognised."""
    if code is not None:
        found = CODE_LIST.discipline_codings.get((system or "", code))
        if found is None and not system:
            found = CODE_LIST.discipline_modifiers.get(code.upper())
        if found is not None:
            return found
    if text:
        lowered = text.strip().lower()
        exact = CODE_LIST.discipline_texts.get(lowered)
        if exact is not None:
            return exact
        for phrase, discipline in CODE_LIST.discipline_phrases:
            if phrase in lowered:
                return discipline
    return Discipline.UNKNOWN


LOINC_SYSTEM = "http://loinc.org"

#: The LOINC document types read as a therapy progress report (R-E6), with the discipline each
#: names. Source: HL7 C-CDA on FHIR v1.2.0, ValueSet ProgressNoteDocumentTypeCode
#: (2.16.840.1.113883.11.20.8.1, active as of 2018-05-18),
#: https://hl7.org/fhir/us/ccda/ValueSet-2.16.840.1.113883.11.20.8.1.html (read 2026-12-02):
#: 11506-3 "Progress note", 11507-1 "Occupational therapy Progress note", 11508-9 "Physical
#: therapy Progress note", 11512-1 "Speech-language pathology Progress note". POLICY: only
#: these four codes, in the LOINC system, on a DocumentReference's ``type``; the generic
#: 11506-3 names no discipline (UNKNOWN) and counts for every discipline of the patient.
PROGRESS_NOTE_TYPES: Mapping[str, Discipline] = MappingProxyType(
    {
        "11506-3": Discipline.UNKNOWN,
        "11507-1": Discipline.OT,
        "11508-9": Discipline.PT,
        "11512-1": Discipline.SLP,
    }
)
