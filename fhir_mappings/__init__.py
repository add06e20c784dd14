"""FHIR R4 / R4B / R5 resources -> the therapy domain model. No HTTP here.

Entry points:

* :func:`load_path` reads a file (Bundle, resource, CDS Hooks request, NDJSON) into an
  :class:`InputDocument` or raises :class:`InputError` (one line: file + problem + what to do);
  :func:`map_document` turns it into a :class:`TherapyRecord`; :func:`map_path` does both.
  Every input file is opened through :func:`open_input`: regular files only, a size cap,
  bounded gzip decompression.
* :func:`map_bundle`, :func:`map_resources`, :func:`map_cds_hooks`, :func:`map_cds_request` map
  already-parsed JSON.
* :func:`group_visits` groups a record's services into visits (patient, date, discipline).
* :mod:`fhir_mappings.codes` answers timed / one-on-one / group questions about codes.
* :mod:`fhir_mappings.orders` reads the draft ServiceRequests being signed (code, dates,
  modifiers); :mod:`fhir_mappings.writeback` writes a suggestion's changes to them as FHIR.

Decisions on points the rule book leaves open (each module says more):

* One FHIR version per input, decided from release-specific fields; the minority is read
  anyway and reported (:mod:`~fhir_mappings.version`).
* A time of day without an offset is invalid FHIR: it is reported and read as UTC, which keeps
  the written date as the date of service (:mod:`~fhir_mappings.times`).
* Keys: ``"Type/id"``; ``urn:uuid`` fullUrls resolve to it; contained resources are
  ``"<container>#id"`` (:mod:`~fhir_mappings.references`).
* A Claim line linked to a Procedure wins over the Procedure's modifier / units extensions; a
  ServiceRequest a Procedure is ``basedOn`` is a plan of care, not a charge, unless it is a draft
  order being signed (:mod:`~fhir_mappings.mapping.procedures`,
  :mod:`~fhir_mappings.mapping.charges`).
* With a ``context.patientId`` (a CDS Hooks call), a resource whose subject names another
  patient, or one that cannot be resolved (identifier-only, display-only, unresolved urn), is
  left out and only counted: an unresolvable subject is not assumed to be the patient
  (:mod:`~fhir_mappings.mapping.patients`).
* Data without a patient belongs to ``context.patientId``, else to the input's only patient;
  undated draft orders join the visits holding their code (:mod:`~fhir_mappings.visits`).
"""

from fhir_mappings.codes import (
    CODE_LIST,
    Attendance,
    CodeInfo,
    code_info,
    is_group_code,
    is_ncci_modifier,
    is_one_on_one,
    is_supervised_modality,
    is_timed,
)
from fhir_mappings.loader import (
    DEFAULT_MAX_FILE_BYTES,
    InputDocument,
    InputError,
    InputKind,
    InputProblem,
    NotFhirError,
    load_bytes,
    load_json,
    load_path,
    map_document,
    map_path,
    open_input,
    open_regular,
    read_input,
    read_line,
)
from fhir_mappings.mapper import map_bundle, map_cds_hooks, map_cds_request, map_resources
from fhir_mappings.model import (
    Charge,
    ChargeSource,
    CoverageInfo,
    DeliveryMode,
    Discipline,
    EncounterInfo,
    FhirVersion,
    IssueCode,
    MappingIssue,
    PlanOfCare,
    ProgressReport,
    SetAside,
    SetAsideReason,
    TherapyRecord,
    TherapyVisit,
    TimedService,
    TimingKind,
    VisitGrouping,
)
from fhir_mappings.visits import group_visits

__all__ = [
    "CODE_LIST",
    "DEFAULT_MAX_FILE_BYTES",
    "Attendance",
    "Charge",
    "ChargeSource",
    "CodeInfo",
    "CoverageInfo",
    "DeliveryMode",
    "Discipline",
    "EncounterInfo",
    "FhirVersion",
    "InputDocument",
    "InputError",
    "InputKind",
    "InputProblem",
    "IssueCode",
    "MappingIssue",
    "NotFhirError",
    "PlanOfCare",
    "ProgressReport",
    "SetAside",
    "SetAsideReason",
    "TherapyRecord",
    "TherapyVisit",
    "TimedService",
    "TimingKind",
    "VisitGrouping",
    "code_info",
    "group_visits",
    "is_group_code",
    "is_ncci_modifier",
    "is_one_on_one",
    "is_supervised_modality",
    "is_timed",
    "load_bytes",
    "load_json",
    "load_path",
    "map_bundle",
    "map_cds_hooks",
    "map_cds_request",
    "map_document",
    "map_path",
    "map_resources",
    "open_input",
    "open_regular",
    "read_input",
    "read_line",
]
