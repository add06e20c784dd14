"""The therapy domain model: what the billing rules see.

Version-free, frozen and typed. Everything FHIR-specific (R4 ``performedPeriod`` vs R5
``occurrencePeriod``, ``reasonCode`` vs ``reason``, Claim items vs project extensions) is resolved
by the mappers before a value lands here, so the rules never look at FHIR JSON.

Times are timezone-aware UTC ``datetime`` values; dates of service are local calendar dates taken
from the start timestamp's own offset (rule I-2.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

CPT_SYSTEM = "http://www.ama-assn.org/go/cpt"
HCPCS_SYSTEM = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
#: Every spelling of the two billing code systems that is read, to its canonical URI: the URIs
#: above and the systems' HL7 OIDs (HL7 Terminology, NamingSystem cpt and hcpcs-Level-II, read
#: 2026-12-02): CPT-4 2.16.840.1.113883.6.12, HCPCS Level II 2.16.840.1.113883.6.285. Some EHRs
#: send the OID form; codes under it are the same codes.
BILLING_SYSTEMS: dict[str, str] = {
    CPT_SYSTEM: CPT_SYSTEM,
    "urn:oid:2.16.840.1.113883.6.12": CPT_SYSTEM,
    HCPCS_SYSTEM: HCPCS_SYSTEM,
    "urn:oid:2.16.840.1.113883.6.285": HCPCS_SYSTEM,
}
EXTENSION_BASE = "https://therapy-cds.github.io/fhir/StructureDefinition/"
EXT_BILLING_MODIFIER = EXTENSION_BASE + "billing-modifier"
EXT_BILLED_UNITS = EXTENSION_BASE + "billed-units"
EXT_DELIVERY_MODE = EXTENSION_BASE + "therapy-delivery-mode"
EXT_PLAN_CERTIFICATION = EXTENSION_BASE + "plan-certification"


class FhirVersion(StrEnum):
    """The FHIR release a request's resources are shaped as (one per request)."""

    R4 = "R4"  # R4 and R4B share every shape this product reads
    R5 = "R5"


class Discipline(StrEnum):
    """Therapy discipline / plan of care (R-G1: GP, GO, GN)."""

    PT = "PT"
    OT = "OT"
    SLP = "SLP"
    UNKNOWN = "UNKNOWN"


class DeliveryMode(StrEnum):
    """One-on-one or group delivery (R-H8)."""

    INDIVIDUAL = "individual"
    GROUP = "group"


class TimingKind(StrEnum):
    """How the time of a service was recorded (R-H2, I-2.3)."""

    PERIOD = "period"  # a Period: start and/or end with time of day
    INSTANT = "instant"  # a single dateTime with time of day: no duration
    DATE = "date"  # date-only or partial (YYYY, YYYY-MM) precision: no time of day
    NONE = "none"  # nothing usable (absent, string, Age, Range, Timing)
    # recorded times no visit can have (outside times.VISIT_YEARS, or one service longer than
    # times.MAX_SERVICE_SPAN): not used, start and end are None (issue 17)
    IMPLAUSIBLE = "implausible"


class PerformerRole(StrEnum):
    """Who furnished a service, as far as the billing-assistant modifiers care (R-G3).

    Read from the performers' Practitioner.qualification and PractitionerRole.code (the codes
    are listed in :mod:`fhir_mappings.performers`). ``OTHER``: a performer is a Practitioner or
    PractitionerRole present in the input without an assistant code (a therapist); ``UNKNOWN``:
    no performer, or one whose resource is not in the input -- nothing is guessed from it.
    """

    PTA = "pta"  # physical therapist assistant only
    OTA = "ota"  # occupational therapy assistant only
    OTHER = "other"
    UNKNOWN = "unknown"


class ChargeSource(StrEnum):
    """Where a billed line came from."""

    DRAFT_ORDER = "draft-order"  # ServiceRequest in context.draftOrders (or a bundle)
    CLAIM = "claim"  # Claim.item linked to a Procedure


@dataclass(frozen=True, slots=True)
class TimedService:
    """One documented therapy service: a Procedure coded in CPT or HCPCS.

    ``start``/``end`` are set only when the recorded value has a time of day (UTC).
    ``service_date`` is the local date of the start (own offset), else of the end, else the
    recorded date, else the encounter's start date; ``None`` when nothing gives a date.
    """

    ref: str  # "Procedure/p1", or the entry's fullUrl ("urn:uuid:...") when it has no id
    code: str
    system: str
    status: str
    timing: TimingKind
    start: datetime | None
    end: datetime | None
    service_date: date | None
    spans_midnight: bool  # end falls on a later local date than start (start's offset)
    patient: str | None  # "Patient/x"
    encounter: str | None  # "Encounter/x"
    performers: tuple[str, ...] = ()
    body_sites: tuple[str, ...] = ()  # "system|code" (or "text:..." when only text)
    delivery_mode: DeliveryMode = DeliveryMode.INDIVIDUAL
    subject_is_group: bool = False
    modifiers: tuple[str, ...] = ()  # billing modifiers on this line (extension or Claim.item)
    billed_units: int | None = None  # billed-units extension or linked Claim.item.quantity
    plan_refs: tuple[str, ...] = ()  # basedOn references, normalised ("CarePlan/cp1")
    has_reason: bool = False  # reasonCode / reasonReference (R4) or reason (R5) present
    display: str | None = None
    # Added for issue 18 (additive, defaulted): Procedure.location ("Location/x"), for the
    # audit's by-site table; the rules do not read it.
    location: str | None = None
    # Added for issue 15 (additive, defaulted): who furnished the service (R-G3, CQ/CO).
    performer_role: PerformerRole = PerformerRole.UNKNOWN

    @property
    def minutes(self) -> int | None:
        """Whole minutes between start and end (R-H10: seconds summed, then floored)."""
        if self.start is None or self.end is None or self.end < self.start:
            return None
        return int((self.end - self.start).total_seconds() // 60)

    @property
    def seconds(self) -> int | None:
        if self.start is None or self.end is None or self.end < self.start:
            return None
        return int((self.end - self.start).total_seconds())


@dataclass(frozen=True, slots=True)
class Charge:
    """A billed line: a draft ServiceRequest or a Claim item, with units and modifiers."""

    ref: str  # "ServiceRequest/sr1" or "Claim/c1#item-2"
    source: ChargeSource
    code: str
    system: str
    units: int | None
    modifiers: tuple[str, ...] = ()
    patient: str | None = None
    service_date: date | None = None  # occurrence / servicedDate when recorded
    status: str | None = None
    procedure_refs: tuple[str, ...] = ()  # Procedures this line bills (Claim linkage)
    plan_refs: tuple[str, ...] = ()  # basedOn references


@dataclass(frozen=True, slots=True)
class PlanOfCare:
    """A therapy plan of care: a CarePlan, or a ServiceRequest used as the treatment plan."""

    ref: str  # "CarePlan/cp1" / "ServiceRequest/sr1"
    kind: str  # "CarePlan" | "ServiceRequest"
    status: str | None
    start: date | None  # period start (local date)
    end: date | None
    certifications: tuple[date, ...] = ()  # plan-certification extension dates
    discipline: Discipline = Discipline.UNKNOWN
    patient: str | None = None


@dataclass(frozen=True, slots=True)
class EncounterInfo:
    """The parts of an Encounter the rules use (R-H5)."""

    ref: str
    status: str | None
    start: datetime | None
    end: datetime | None
    service_date: date | None
    patient: str | None = None
    # Added for issue 18 (additive, defaulted), for the audit's by-site table (not the rules):
    locations: tuple[str, ...] = ()  # Encounter.location[].location references, in order
    service_provider: str | None = None  # Encounter.serviceProvider ("Organization/x")
    # Added for issue 15 (additive, defaulted), for the progress-report interval (R-E6): the
    # discipline Encounter.serviceType / Encounter.type names (the discipline concepts of
    # ``therapy_codes.json``); UNKNOWN when they name none.
    discipline: Discipline = Discipline.UNKNOWN


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """A therapy progress report (R-E6): a DocumentReference typed with a LOINC progress-note
    code (:data:`fhir_mappings.codes.PROGRESS_NOTE_TYPES`), on the date it covers."""

    ref: str  # "DocumentReference/d1"
    date: date  # local date of context.period (R4) / period (R5) end or start, else ``date``
    discipline: Discipline  # from the LOINC code; UNKNOWN for the generic progress note
    code: str  # the LOINC code
    patient: str | None = None


@dataclass(frozen=True, slots=True)
class PayerParty:
    """One party a Coverage names as its payer (R4 ``payor``; R5 ``insurer`` and
    ``paymentBy.party``): the reference's target key, ``system|value`` identifiers and names,
    from the reference itself and from the Organization it points at when that is in the input."""

    reference: str | None = None
    identifiers: tuple[str, ...] = ()
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CoverageInfo:
    """The parts of a Coverage the payer rule is chosen from (issue 15; not a billing rule).

    ``types``: ``Coverage.type`` codings as ``(system, code, display)``; ``order``: R4/R5
    ``Coverage.order`` (1 = primary), ``None`` when absent; ``start``/``end``: the local dates
    of ``Coverage.period`` (``None`` = open)."""

    ref: str
    status: str | None
    patient: str | None
    start: date | None = None
    end: date | None = None
    order: int | None = None
    payers: tuple[PayerParty, ...] = ()
    types: tuple[tuple[str, str, str], ...] = ()


class IssueCode(StrEnum):
    """What an input problem did to the input, for programs (the message is for people).

    Codes are stable: callers that count or sort problems (the bulk audit's reconciliation)
    read the code, never the wording of the message.
    """

    # a value of a resource that was read was not used (the resource itself was)
    VALUE_NOT_USED = "value-not-used"
    # about a container, nothing dropped (an unknown Bundle.type, an entry member not a list)
    CONTAINER_NOTE = "container-note"
    # a whole line or entry was dropped before any resource was read from it:
    INVALID_JSON = "invalid-json"  # a line that is not JSON
    NOT_A_RESOURCE = "not-a-resource"  # JSON without a resourceType
    MALFORMED_ENTRY = "malformed-entry"  # an entry, resource, context or prefetch not an object
    NESTED_BUNDLE = "nested-bundle"  # Bundles nested beyond the limit
    EXPORT_ERROR = "export-error"  # an OperationOutcome where data was expected
    # a resource that was read but is unusable (no status, no code object, failed validation)
    UNUSABLE_RESOURCE = "unusable-resource"
    # a second, different copy of a resource already read (the first copy is used)
    DIFFERENT_COPY = "different-copy"

    @property
    def drops_entry(self) -> bool:
        """True when a line or entry was dropped before any resource was read from it."""
        return self in _ENTRY_DROPS


_ENTRY_DROPS = frozenset(
    {
        IssueCode.INVALID_JSON,
        IssueCode.NOT_A_RESOURCE,
        IssueCode.MALFORMED_ENTRY,
        IssueCode.NESTED_BUNDLE,
        IssueCode.EXPORT_ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class MappingIssue:
    """One input problem: which entry, which field, why. The entry is skipped, never fatal."""

    location: str  # e.g. "entry[3]", "prefetch.procedures.entry[0]", "line 12"
    message: str
    resource: str | None = None  # "Procedure/p1" when known
    field: str | None = None  # "performedPeriod.start"
    code: IssueCode = IssueCode.VALUE_NOT_USED  # what the problem did to the input


@dataclass(frozen=True, slots=True)
class TherapyRecord:
    """Everything one input (bundle, request, export chunk) says about therapy services."""

    fhir_version: FhirVersion | None
    services: tuple[TimedService, ...] = ()
    charges: tuple[Charge, ...] = ()
    plans: Mapping[str, PlanOfCare] = field(default_factory=dict)
    encounters: Mapping[str, EncounterInfo] = field(default_factory=dict)
    issues: tuple[MappingIssue, ...] = ()
    resources_read: int = 0
    resources_out_of_scope: int = 0
    # Added for issue 3 (additive, defaulted):
    next_links: tuple[str, ...] = ()  # searchset ``next`` links: more data the caller may fetch
    context_patient: str | None = None  # CDS Hooks ``context.patientId`` ("Patient/x")
    patients: tuple[str, ...] = ()  # Patient resources present in the input ("Patient/x")
    # Added for issue 14 (additive, defaulted): resources left out because they are not shown to
    # be about ``context_patient`` (a count only: their ids are never kept).
    other_patient_resources: int = 0
    # Added for issue 18 (additive, defaulted): display names of the Practitioner,
    # PractitionerRole, Location and Organization resources present in the input, by key
    # ("Practitioner/x" -> "Jordan Reyes, PT"), for the audit's by-practitioner and by-site
    # tables; names of people who provide care, never of patients.
    parties: Mapping[str, str] = field(default_factory=dict)
    # Added for issue 15 (additive, defaulted): the patient's therapy progress reports (R-E6).
    progress_reports: tuple[ProgressReport, ...] = ()
    # Added for issue 15 (additive, defaulted): the Coverage resources of the input, in input
    # order, from which each visit's payer rule is chosen (plugin/rules/payer.py).
    coverages: tuple[CoverageInfo, ...] = ()


class SetAsideReason(StrEnum):
    """Why a service is not part of any visit (reported as a top-level finding)."""

    IGNORED_STATUS = "ignored-status"  # not completed (R-H6, I-2.1)
    NO_DATE = "no-date"  # nothing gives a date of service
    NO_PATIENT = "no-patient"  # subject missing or unresolvable


@dataclass(frozen=True, slots=True)
class SetAside:
    service: TimedService
    reason: SetAsideReason


@dataclass(frozen=True, slots=True)
class TherapyVisit:
    """One patient, one date of service, one discipline (R-B2, R-B2a, I-2.4, I-2.5)."""

    patient: str
    service_date: date
    discipline: Discipline
    services: tuple[TimedService, ...]  # completed services only, in start order
    charges: tuple[Charge, ...] = ()
    plans: tuple[PlanOfCare, ...] = ()  # resolved plans referenced by services or charges
    unresolved_plan_refs: tuple[str, ...] = ()  # basedOn targets not present in the input
    encounters: tuple[EncounterInfo, ...] = ()
    # Added for issue 14 (additive, defaulted): False when the input holds no charge line for
    # this visit at all -- no charge (ServiceRequest, Claim/EOB item) joined it and none of its
    # services carries a billing modifier or billed units (R-H7) -- so nothing says what was
    # billed. :func:`~fhir_mappings.visits.group_visits` decides it; a visit built by hand keeps
    # the default and its services' (possibly empty) modifiers are read as the billed lines.
    charge_lines_read: bool = True


@dataclass(frozen=True, slots=True)
class VisitGrouping:
    visits: tuple[TherapyVisit, ...]
    set_aside: tuple[SetAside, ...] = ()
    # Added for issue 3 (additive, defaulted): charges no visit could take (I-2, R-B2).
    unattached_charges: tuple[Charge, ...] = ()
