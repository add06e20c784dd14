"""FHIR R4 / R4B / R5 JSON -> :class:`~fhir_mappings.model.TherapyRecord` (the fast path).

Hand-written, typed extraction from the JSON objects: it checks what the rules depend on (types,
codes, times, references) and nothing else, so a whole visit maps in a fraction of a millisecond.
Strict mode (``strict=True``) first validates every resource with the full ``fhir.resources``
models (:mod:`fhir_mappings.strict`).

What becomes what:

* ``Procedure`` coded in CPT or HCPCS -> :class:`TimedService` (R-H1, R-H2, I-2.2, I-2.3, I-2.4).
* ``ServiceRequest`` coded in CPT or HCPCS -> :class:`Charge` (``DRAFT_ORDER``); a ServiceRequest
  that a Procedure is ``basedOn`` is the plan of care -> :class:`PlanOfCare` (R-H3). A draft order
  (``context.draftOrders``) is always a charge, and also a plan when a Procedure points at it.
* ``Claim.item`` coded in CPT or HCPCS -> :class:`Charge` (``CLAIM``), linked to Procedures
  through ``Claim.procedure[].procedureReference`` + ``item.procedureSequence`` (R-H7).
  ``ExplanationOfBenefit.item`` is read the same way (I-1 "Claim/EOB items"), unless the Claim
  it adjudicates (``ExplanationOfBenefit.claim``) is in the input too: then only the Claim counts.
* ``CarePlan`` -> :class:`PlanOfCare` (R-H9); ``Encounter`` -> :class:`EncounterInfo` (R-H5).
* ``Coverage`` -> :class:`CoverageInfo` (issue 15): status, beneficiary, period, order, type
  codings and payer parties (R4 ``payor``, R5 ``insurer`` / ``paymentBy.party``), from which the
  plugin chooses each visit's payer rule.
* Everything else (and Procedures / ServiceRequests / Claims coded only in other systems) is
  counted in ``resources_out_of_scope``.

Per-resource problems become :class:`MappingIssue` values (entry, field, why). A resource whose
structure makes it unusable (no code object, no status) is skipped; a bad *value* (an unreadable
time, a fractional unit count) is reported and that value alone is dropped, so the rules still
see the service and can flag it (W-MISSING-START, ...). Nothing here raises on bad input.

Version-free values: ``Encounter.status`` is given in R5 codes (R4 ``finished`` -> ``completed``);
R4 ``performed[x]`` and R5 ``occurrence[x]``, R4 ``reasonCode``/``reasonReference`` and R5
``reason``, R4 and R5 ``ServiceRequest.code``/``orderDetail`` shapes all land on the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from fhir_mappings import codes
from fhir_mappings.model import (
    BILLING_SYSTEMS,
    EXT_BILLED_UNITS,
    EXT_BILLING_MODIFIER,
    EXT_DELIVERY_MODE,
    EXT_PLAN_CERTIFICATION,
    Charge,
    ChargeSource,
    CoverageInfo,
    DeliveryMode,
    Discipline,
    EncounterInfo,
    FhirVersion,
    IssueCode,
    MappingIssue,
    PayerParty,
    PerformerRole,
    PlanOfCare,
    ProgressReport,
    TherapyRecord,
    TimedService,
    TimingKind,
)
from fhir_mappings.performers import party_roles, service_role
from fhir_mappings.references import (
    ReferenceIndex,
    find_contained,
    reference_type,
    resource_key,
)
from fhir_mappings.sources import (
    Collected,
    SourcedResource,
    collect_bundle,
    collect_cds_hooks,
    collect_cds_request,
    collect_resources,
)
from fhir_mappings.strict import validate_resource
from fhir_mappings.times import (
    MAX_SERVICE_SPAN,
    VISIT_YEARS,
    TimeFormatError,
    TimeRangeError,
    parse_fields,
    parse_time,
)
from fhir_mappings.version import decide, shape_version

JsonObject = Mapping[str, Any]
_MAPPED_TYPES = frozenset(
    {
        "Procedure",
        "ServiceRequest",
        "Claim",
        "ExplanationOfBenefit",
        "CarePlan",
        "Encounter",
        "DocumentReference",
        "Coverage",
    }
)
# The element naming the patient, per resource type the patient filter reads (issue 14).
_PATIENT_FIELD = {
    "Procedure": "subject",
    "ServiceRequest": "subject",
    "CarePlan": "subject",
    "Encounter": "subject",
    "Claim": "patient",
    "ExplanationOfBenefit": "patient",
    "DocumentReference": "subject",
    "Coverage": "beneficiary",
}
#: Caps on what one Coverage contributes (its text ends up in reasons): codings, payer parties
#: and identifiers/names per party; a name is cut to this many characters.
_COVERAGE_MAX_ITEMS = 8
_COVERAGE_MAX_NAME = 80
_PERIOD_FIELDS = (
    ("performedPeriod", True),
    ("performedDateTime", False),
    ("occurrencePeriod", True),
    ("occurrenceDateTime", False),
)
# performed/occurrence String, Age, Range and Timing carry no usable time: TimingKind.NONE.
_DATETIME_FIELDS = frozenset({"performedDateTime", "occurrenceDateTime"})


# Encounter.status is version-free in the domain model: R4 codes are read as their R5
# equivalents (R4 "finished" == R5 "completed", per the R4 -> R5 Encounter status map).
_R4_ENCOUNTER_STATUS = {
    "finished": "completed",
    "onleave": "on-hold",
    "arrived": "in-progress",
    "triaged": "in-progress",
}

# Enum members bound once: attribute access on an Enum class is slow on the hot path.
_PERIOD = TimingKind.PERIOD
_INSTANT = TimingKind.INSTANT
_DATE = TimingKind.DATE
_NO_TIME = TimingKind.NONE
_IMPLAUSIBLE = TimingKind.IMPLAUSIBLE
_INDIVIDUAL = DeliveryMode.INDIVIDUAL
_GROUP = DeliveryMode.GROUP
_DRAFT_ORDER = ChargeSource.DRAFT_ORDER
_CLAIM = ChargeSource.CLAIM
_UNKNOWN_DISCIPLINE = Discipline.UNKNOWN
_R4 = FhirVersion.R4
_GROUP_CODES = frozenset(c for c in codes.CODE_LIST.codes if codes.is_group_code(c))
_LISTED_CODES = frozenset(codes.CODE_LIST.codes)  # written as the list writes them: no cleaning
# GP/GO/GN and the NCCI modifiers, as written when nothing needs cleaning or reporting
_PLAIN_MODIFIERS = frozenset(codes.CODE_LIST.discipline_modifiers) | codes.CODE_LIST.ncci_modifiers


def _human_name(value: object) -> str:
    """The first readable HumanName: ``text``, else given names and family."""
    if type(value) is not list:
        return ""
    for item in value:
        if type(item) is not dict:
            continue
        if type(item.get("text")) is str and item["text"].strip():
            return str(item["text"]).strip()
        given = item.get("given")
        parts = [g for g in given if type(g) is str] if type(given) is list else []
        if type(item.get("family")) is str:
            parts.append(item["family"])
        if parts:
            return " ".join(p.strip() for p in parts if p.strip())
    return ""


PARTY_TYPES = frozenset({"Practitioner", "PractitionerRole", "Location", "Organization"})
"""Resource types read for their names only (:attr:`TherapyRecord.parties`, issue 18)."""


def party_name(
    res: JsonObject,
    known: Mapping[str, str] | None = None,
    index: ReferenceIndex | None = None,
    key: str = "",
) -> str:
    """The display name of a Practitioner (HumanName), PractitionerRole (its practitioner's
    name from ``known``, else the reference's display, else its code's text), Location or
    Organization (``name``); "" when none can be read. At most 120 characters."""
    return _party_name(res, known or {}, index, key)[:120]


def _party_name(
    res: JsonObject, known: Mapping[str, str], index: ReferenceIndex | None, key: str
) -> str:
    rtype = res.get("resourceType")
    if rtype == "Practitioner":
        return _human_name(res.get("name"))
    if rtype == "PractitionerRole":
        practitioner = res.get("practitioner")
        target = index.of(practitioner, key) if index and practitioner is not None else None
        if target is not None and known.get(target):
            return known[target]
        if type(practitioner) is dict and type(practitioner.get("display")) is str:
            return str(practitioner["display"]).strip()
        for concept in res.get("code") or ():
            if type(concept) is dict and type(concept.get("text")) is str:
                return str(concept["text"]).strip()
        return ""
    name = res.get("name")
    return name.strip() if type(name) is str else ""


# ------------------------------------------------------------------------- public entry points


def map_bundle(bundle: JsonObject, *, strict: bool = False) -> TherapyRecord:
    """Map a parsed Bundle (any type, or none) to a :class:`TherapyRecord`."""
    found = Collected()
    collect_bundle(bundle, found)
    return map_collected(found, strict=strict)


def map_resources(
    items: Iterable[tuple[str, JsonObject]], *, strict: bool = False
) -> TherapyRecord:
    """Map already-parsed resources, each given with its location (``"line 3"``, ``"entry[0]"``).

    A Bundle among them contributes its entries.
    """
    found = Collected()
    collect_resources(items, found)
    return map_collected(found, strict=strict)


def map_cds_hooks(
    draft_orders: object,
    prefetch: Mapping[str, object] | None,
    *,
    patient_id: str | None = None,
    strict: bool = False,
) -> TherapyRecord:
    """Map what a CDS Hooks call supplied: ``context.draftOrders`` and the resolved prefetch.

    ``draft_orders`` is the ``context.draftOrders`` value (a Bundle, normally without ``type``);
    its ServiceRequests are the charges being signed. ``prefetch`` maps each key to its resolved
    value (a Bundle, a single resource, an OperationOutcome, or ``None`` for "no data");
    ``patient_id`` is ``context.patientId`` and becomes ``TherapyRecord.context_patient``; the
    resources not shown to be about that patient are left out and only counted
    (``TherapyRecord.other_patient_resources``; see ``_Mapper._keep_expected_patient``).
    """
    found = Collected()
    collect_cds_hooks(draft_orders, prefetch, found, patient_id=patient_id)
    return map_collected(found, strict=strict)


def map_cds_request(body: JsonObject, *, strict: bool = False) -> TherapyRecord:
    """Map a whole CDS Hooks request body (``context.draftOrders`` + every ``prefetch`` value)."""
    found = Collected()
    collect_cds_request(body, found)
    return map_collected(found, strict=strict)


def map_collected(found: Collected, *, strict: bool = False) -> TherapyRecord:
    """Map resources gathered by :mod:`fhir_mappings.sources`."""
    return _Mapper(found, strict).run()


# ------------------------------------------------------------------------- the mapper


# The hot path passes plain tuples (a NamedTuple costs ~25 times a tuple to build):
# one input resource: (where it was found, its type, its key, the resource)
_Item = tuple[SourcedResource, str, str, JsonObject]
# one parsed date/dateTime: the time of day in its own offset, the local date, the UTC instant
# (the times are None without a time of day; the date is None for YYYY and YYYY-MM)
_Point = tuple[datetime | None, date | None, datetime | None]
# timing kind, UTC start, UTC end, date of service, ends on a later local date than it starts
_Span = tuple[TimingKind, datetime | None, datetime | None, date | None, bool]


def _name(value: object) -> str:
    """A display or name as text: stripped, cut to :data:`_COVERAGE_MAX_NAME` characters."""
    return value.strip()[:_COVERAGE_MAX_NAME] if type(value) is str else ""


def _timing_field(res: JsonObject) -> str:
    """The performed[x] / occurrence[x] member a Procedure records its time in."""
    return next((field for field, _ in _PERIOD_FIELDS if field in res), "performed[x]")


class _ClaimLine(NamedTuple):
    ref: str
    code: str
    modifiers: tuple[str, ...]
    units: int | None


class _Mapper:
    def __init__(self, found: Collected, strict: bool) -> None:
        self.found = found
        self.strict = strict
        self.index = ReferenceIndex()
        self.issues: list[MappingIssue] = list(found.issues)
        self.out_of_scope = 0
        self.encounters: dict[str, EncounterInfo] = {}
        self.plans: dict[str, PlanOfCare] = {}
        self.charges: list[Charge] = []
        self.claim_lines: dict[str, list[_ClaimLine]] = {}
        self.patients: list[str] = []
        self.other_patient = 0  # resources left out as not about the expected patient
        self.based_on: dict[str, tuple[str, ...]] = {}  # Procedure key -> basedOn keys
        self.by_type: dict[str, list[_Item]] = {}  # resource type -> items, in input order
        self.shapes: list[tuple[_Item, FhirVersion, str]] = []  # release-specific shapes seen
        # Per-call caches: a visit's resources repeat the same few references and times.
        # reference text -> (patient key, is a Group), for subjects that need no issue
        self.subjects: dict[str, tuple[str | None, bool]] = {}
        # date/dateTime text -> its parse, for texts that need no issue (and within VISIT_YEARS,
        # so a point found here is always a usable visit time)
        self.points: dict[str, _Point] = {}
        # recorded visit times refused as outside what a visit can be (see _point)
        self.refused_times = 0
        # assistant or not, per Practitioner / PractitionerRole present (R-G3); set by run()
        self.roles: dict[str, PerformerRole] = {}

    # ---- driver

    def run(self) -> TherapyRecord:
        items = self._index()
        if self.found.context_patient is not None:
            items = self._keep_expected_patient(items, self.found.context_patient)
        version = self._decide_version()
        by_type = self.by_type
        if self.strict:
            items = self._validate(items, version)
            by_type.clear()
            for item in items:
                by_type.setdefault(item[1], []).append(item)
        for _, _, key, _ in by_type.get("Patient", ()):
            self.patients.append(key)
        self.out_of_scope += sum(
            len(group) for rtype, group in by_type.items() if rtype not in _MAPPED_TYPES
        )
        # Order matters: Encounters give Procedures their fallback date, Claims their lines;
        # Procedures' basedOn decides which ServiceRequests are plans rather than charges.
        for item in by_type.get("Encounter", ()):
            self._encounter(item)
        for source, _, key, resource in by_type.get("CarePlan", ()):
            self._care_plan(resource, key, source.location)
        coverages = [self._coverage(item) for item in by_type.get("Coverage", ())]
        claims = by_type.get("Claim", [])
        for item in claims:
            self._claim(item)
        claim_keys = {key for _, _, key, _ in claims}
        for item in by_type.get("ExplanationOfBenefit", ()):
            # an EOB adjudicates a Claim: when that Claim is here too, its lines are already read
            if self.index.of(item[3].get("claim"), item[2]) in claim_keys:
                self.out_of_scope += 1
                continue
            self._claim(item)
        self.roles = self._party_roles()
        procedures = by_type.get("Procedure", [])
        services: list[TimedService] = []
        for item in procedures:
            service = self._procedure(item)
            if service is not None:
                services.append(service)
        plan_targets: set[str] = set()
        for refs in self.based_on.values():
            plan_targets.update(refs)
        for item in by_type.get("ServiceRequest", ()):
            self._service_request(item, plan_targets)
        self._contained_plans(procedures)
        reports = [
            report
            for item in by_type.get("DocumentReference", ())
            if (report := self._progress_report(item)) is not None
        ]
        return TherapyRecord(
            fhir_version=version,
            services=tuple(services),
            charges=tuple(self.charges),
            plans=self.plans,
            encounters=self.encounters,
            issues=tuple(self.issues),
            resources_read=len(items),
            resources_out_of_scope=self.out_of_scope,
            next_links=tuple(self.found.next_links),
            context_patient=self.found.context_patient,
            patients=tuple(self.patients),
            other_patient_resources=self.other_patient,
            parties=self._parties(),
            coverages=tuple(coverages),
            progress_reports=tuple(reports),
        )

    def _party_roles(self) -> dict[str, PerformerRole]:
        """Assistant or not, for each Practitioner and PractitionerRole present (R-G3)."""
        index = self.index
        return party_roles(
            ((key, res) for _, _, key, res in self.by_type.get("Practitioner", ())),
            (
                (key, res, index.of(res.get("practitioner"), key))
                for _, _, key, res in self.by_type.get("PractitionerRole", ())
            ),
        )

    def _parties(self) -> dict[str, str]:
        """Display names of the care providers and places present (issue 18): Practitioner
        and PractitionerRole (its practitioner's name, else its code), Location and
        Organization (``name``); "" when a resource names nothing readable."""
        names: dict[str, str] = {}
        for rtype in ("Practitioner", "Location", "Organization", "PractitionerRole"):  # roles last
            for _, _, key, res in self.by_type.get(rtype, ()):
                names[key] = party_name(res, names, self.index, key)
        return names

    def _index(self) -> list[_Item]:
        """Key every resource (the first copy of a key wins), group by type, note its shape."""
        items: list[_Item] = []
        seen: dict[str, JsonObject] = {}
        full_urls: list[tuple[str, str]] = []
        by_type = self.by_type
        shapes = self.shapes
        for source in self.found.resources:
            location, resource, full_url, _ = source
            rtype = resource["resourceType"]  # guaranteed by sources
            resource_id = resource.get("id")
            if type(resource_id) is str and resource_id:
                key = f"{rtype}/{resource_id}"
            else:
                key = resource_key(rtype, resource_id, full_url, location)
            first = seen.get(key)
            if first is not None:
                # the same resource fetched twice (prefetch + draftOrders, _include) is no news
                if first != resource:
                    self._issue(
                        location,
                        "two different copies of the same resource; the first copy is used",
                        key,
                        code=IssueCode.DIFFERENT_COPY,
                    )
                continue
            seen[key] = resource
            if full_url:
                full_urls.append((full_url, key))
            item = (source, rtype, key, resource)
            items.append(item)
            group = by_type.get(rtype)
            if group is None:
                by_type[rtype] = [item]
            else:
                group.append(item)
            if rtype in _MAPPED_TYPES:
                shown = shape_version(rtype, resource)
                if shown is not None:
                    shapes.append((item, shown[0], shown[1]))
        self.index.add_full_urls(full_urls)
        return items

    def _keep_expected_patient(self, items: list[_Item], expected: str) -> list[_Item]:
        """Leave out every resource not shown to be about ``expected`` (issue 14).

        A Patient other than ``expected``, and a Procedure, ServiceRequest, CarePlan, Encounter,
        Claim or ExplanationOfBenefit whose subject/patient names another patient -- or names
        one that cannot be resolved (identifier- or display-only, an unresolved ``urn:``, a
        conditional reference, a non-Patient type) -- is dropped before anything is read from
        it: only the count is kept (:attr:`TherapyRecord.other_patient_resources`), never its
        key or content, and no issue mentions it. A resource with no subject at all, or with a
        Group subject (group delivery, R-H8), stays: it came in the request of ``expected``.
        """
        dropped: set[str] = set()
        kept: list[_Item] = []
        for item in items:
            _, rtype, key, res = item
            if rtype == "Patient":
                about_other = key != expected
            else:
                field = _PATIENT_FIELD.get(rtype)
                about_other = field is not None and not self._names(res, field, key, expected)
            if about_other:
                dropped.add(key)
            else:
                kept.append(item)
        if dropped:
            self.other_patient = len(dropped)
            for rtype, group in list(self.by_type.items()):
                self.by_type[rtype] = [item for item in group if item[2] not in dropped]
            self.shapes = [shape for shape in self.shapes if shape[0][2] not in dropped]
            self.issues = [i for i in self.issues if i.resource not in dropped]
        return kept

    def _names(self, res: JsonObject, field: str, key: str, expected: str) -> bool:
        """Does ``res[field]`` name the patient ``expected`` (see _keep_expected_patient)?"""
        value = res.get(field)
        if value is None:
            return True
        ref = self.index.of(value, key)
        if ref is None:
            return False
        if ref.startswith(key + "#"):
            inner = find_contained(res, ref[len(key) + 1 :])
            return inner is not None and inner.get("resourceType") == "Group"
        return ref == expected or reference_type(ref) == "Group"

    def _decide_version(self) -> FhirVersion | None:
        """The majority release of the shapes :meth:`_index` noted; the minority is reported."""
        shapes = self.shapes
        r4 = sum(1 for _, shown_version, _ in shapes if shown_version is _R4)
        r5 = len(shapes) - r4
        version = decide(r4, r5)
        if r4 and r5:
            for (source, _, key, _), shown_version, marker in shapes:
                if shown_version is not version:
                    self._issue(
                        source.location,
                        f"{shown_version.value} shape in an input read as {version}: one request "
                        f"carries one FHIR version; read anyway",
                        key,
                        marker,
                    )
        return version

    def _validate(self, items: list[_Item], version: FhirVersion | None) -> list[_Item]:
        target = version or FhirVersion.R4
        valid: list[_Item] = []
        for source, rtype, key, resource in items:
            dumped, errors = validate_resource(resource, target, normalise=rtype in _MAPPED_TYPES)
            if dumped is None:
                for field, message in errors:
                    self._issue(source.location, message, key, field, IssueCode.UNUSABLE_RESOURCE)
                continue
            valid.append((source, rtype, key, dumped))
        return valid

    # ---- helpers

    def _issue(
        self,
        location: str,
        message: str,
        resource: str | None = None,
        field: str | None = None,
        code: IssueCode = IssueCode.VALUE_NOT_USED,
    ) -> None:
        self.issues.append(
            MappingIssue(
                location=location, message=message, resource=resource, field=field, code=code
            )
        )

    def _point(
        self,
        value: object,
        location: str,
        key: str,
        field: str,
        part: str = "",
        visit: bool = False,
    ) -> _Point | None:
        """Parse one date/dateTime; problems become issues on ``field`` + ``part``.

        ``visit``: the value records when a visit or service happened; a date outside
        :data:`VISIT_YEARS` (or no instant at all) is refused and counted in ``refused_times``.
        """
        try:
            if type(value) is str:
                point = self.points.get(value)
                if point is not None:
                    return point
                _, at, day, assumed_utc = parse_fields(value)
            else:
                moment = parse_time(value)
                if moment is None:
                    return None
                _, at, day, assumed_utc = moment
        except TimeFormatError as exc:
            if visit and type(exc) is TimeRangeError:  # valid FHIR, but no visit's time
                self._refuse_time(location, key, field + part)
            else:
                self._issue(location, f"{exc}; the value is not used", key, field + part)
            return None
        plausible = day is None or day.year in VISIT_YEARS
        if visit and not plausible:
            self._refuse_time(location, key, field + part)
            return None
        point = (at, day, None if at is None else at.astimezone(UTC))
        if assumed_utc:
            self._issue(
                location,
                "time of day without a time zone offset (invalid FHIR); read as UTC, so the "
                "written date stays the date of service; add the offset at the source",
                key,
                field + part,
            )
        elif type(value) is str and plausible:
            self.points[value] = point
        return point

    def _refuse_time(self, location: str, key: str, field: str) -> None:
        """A recorded visit time no visit can have (issue 17): a mapping issue, never used."""
        self.refused_times += 1
        self._issue(
            location,
            f"the date is outside what a visit can be (years {VISIT_YEARS.start}-"
            f"{VISIT_YEARS.stop - 1}); the value is not used: correct it at the source",
            key,
            field,
        )

    def _period(
        self, period: object, location: str, key: str, field: str, visit: bool = False
    ) -> tuple[_Point | None, _Point | None]:
        if type(period) is not dict:
            self._issue(location, "expected a Period object; not used", key, field)
            return None, None
        points = self.points
        text = period.get("start")
        start = points.get(text) if type(text) is str else None
        if start is None and text is not None:
            start = self._point(text, location, key, field, ".start", visit)
        text = period.get("end")
        end = points.get(text) if type(text) is str else None
        if end is None and text is not None:
            end = self._point(text, location, key, field, ".end", visit)
        return start, end

    def _span(
        self, start: _Point | None, end: _Point | None, location: str, key: str, field: str
    ) -> _Span:
        """Timing kind, UTC bounds, date of service and midnight crossing (R-H10, I-2.3, I-2.4)."""
        start_at = start_utc = end_at = end_utc = None
        day = end_day = None
        if start is not None:
            start_at, day, start_utc = start
        if end is not None:
            end_at, end_day, end_utc = end
            if day is None:
                day = end_day
        if start_at is None or end_at is None:
            if start_at is None and end_at is None:
                kind = _NO_TIME if start is None and end is None else _DATE
                return kind, None, None, day, False
            if (start_at is None and start is not None) or (end_at is None and end is not None):
                self._issue(
                    location,
                    "one end of the period has a time of day and the other only a date; the "
                    "date-only end is treated as missing",
                    key,
                    field,
                )
            return _PERIOD, start_utc, end_utc, day, False
        assert start_utc is not None
        assert end_utc is not None
        if end_utc < start_utc:
            self._issue(
                location,
                "period ends before it starts (FHIR invariant per-1); no minutes counted",
                key,
                field,
            )
            return _PERIOD, start_utc, end_utc, day, False
        # the end's local date, read in the start's own offset (I-2.4)
        start_zone = start_at.tzinfo
        if end_at.tzinfo != start_zone:
            end_day = end_at.astimezone(start_zone).date()
        assert day is not None
        assert end_day is not None
        return _PERIOD, start_utc, end_utc, day, end_day > day

    def _subject(
        self, res: JsonObject, field: str, location: str, key: str
    ) -> tuple[str | None, bool]:
        """(patient key, subject is a Group) of ``res[field]``."""
        value = res.get(field)
        reference = value.get("reference") if type(value) is dict else None
        if type(reference) is str:
            known = self.subjects.get(reference)
            if known is not None:
                return known
        ref = self.index.of(value, key)
        if ref is None:
            return None, False
        if ref.startswith(key + "#"):
            inner = find_contained(res, ref[len(key) + 1 :])
            inner_type = inner.get("resourceType") if inner is not None else None
            rtype = inner_type if isinstance(inner_type, str) else None
        else:
            rtype = reference_type(ref)
        if rtype == "Group":
            found: tuple[str | None, bool] = (None, True)
        elif rtype is None or rtype == "Patient":
            found = (ref, False)
        else:
            self._issue(location, f"{field} is a {rtype}, not a Patient or Group", key, field)
            return None, False
        if type(reference) is str and "#" not in reference and "#" not in ref:
            self.subjects[reference] = found  # read the same way from any resource
        return found

    def _refs(self, values: object, key: str) -> tuple[str, ...]:
        if not isinstance(values, list):
            return ()
        of = self.index.of
        if len(values) == 1:  # the usual basedOn
            ref = of(values[0], key)
            return () if ref is None else (ref,)
        out: list[str] = []
        for value in values:
            ref = of(value, key)
            if ref is not None and ref not in out:
                out.append(ref)
        return tuple(out)

    def _billing_coding(
        self, concept: object, location: str, key: str, field: str
    ) -> tuple[str, str, str | None] | None:
        """The CPT/HCPCS coding of a CodeableConcept: (system, code, display)."""
        if not isinstance(concept, dict):
            return None
        codings = concept.get("coding")
        if not isinstance(codings, list):
            return None
        if len(codings) == 1 and type(codings[0]) is dict:  # the usual shape, nothing to report
            system = codings[0].get("system")
            code = codings[0].get("code")
            if (
                type(system) is str
                and type(code) is str
                and system in BILLING_SYSTEMS
                and code in _LISTED_CODES
            ):
                display = codings[0].get("display")
                if not isinstance(display, str):
                    text = concept.get("text")
                    display = text if isinstance(text, str) else None
                return BILLING_SYSTEMS[system], code, display
        chosen: tuple[str, str, str | None] | None = None
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            system = coding.get("system")
            if not isinstance(system, str) or system not in BILLING_SYSTEMS:
                continue
            code = coding.get("code")
            if not isinstance(code, str) or not code.strip():
                self._issue(location, "CPT/HCPCS coding without a code", key, field)
                continue
            code = code.strip().upper()
            if chosen is None:
                display = coding.get("display")
                if not isinstance(display, str):
                    text = concept.get("text")
                    display = text if isinstance(text, str) else None
                chosen = (BILLING_SYSTEMS[system], code, display)
            elif chosen[1] != code:
                self._issue(
                    location,
                    f"more than one CPT/HCPCS code ({chosen[1]}, {code}); the first is used, "
                    "record one service per resource",
                    key,
                    field,
                )
        return chosen

    def _modifier_codes(
        self,
        codings: Iterable[object],
        location: str,
        key: str,
        field: str,
        *,
        allow_no_system: bool,
    ) -> list[str]:
        out: list[str] = []
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            system = coding.get("system")
            code = coding.get("code")
            if (
                type(code) is str
                and type(system) is str
                and code in _PLAIN_MODIFIERS
                and system in BILLING_SYSTEMS
            ):
                if code not in out:  # the usual GP / 59 / XU: nothing to clean or report
                    out.append(code)
                continue
            if system is None and not allow_no_system:
                continue
            if system is not None and (
                not isinstance(system, str) or system not in BILLING_SYSTEMS
            ):
                if allow_no_system:
                    self._issue(
                        location,
                        "modifier coding not in the CPT or HCPCS system; ignored",
                        key,
                        field,
                    )
                continue
            if not isinstance(code, str) or not code.strip():
                self._issue(location, "modifier coding without a code; ignored", key, field)
                continue
            for value in codes.split_modifiers(code):
                if value not in out:
                    out.append(value)
        return out

    def _extensions(self, resource: JsonObject) -> list[JsonObject]:
        extensions = resource.get("extension")
        if not isinstance(extensions, list):
            return []
        return [e for e in extensions if isinstance(e, dict)]

    def _extension_modifiers(
        self, extensions: list[JsonObject], location: str, key: str
    ) -> list[str]:
        codings = []
        for ext in extensions:
            if ext.get("url") == EXT_BILLING_MODIFIER:
                value = ext.get("valueCoding")
                if isinstance(value, dict):
                    codings.append(value)
                else:
                    self._issue(
                        location, "billing-modifier extension without valueCoding", key, "extension"
                    )
        return self._modifier_codes(
            codings, location, key, "extension(billing-modifier)", allow_no_system=True
        )

    def _units(self, value: object, location: str, key: str, field: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._issue(location, "units are not a number; not used", key, field)
            return None
        if value < 0 or (isinstance(value, float) and not value.is_integer()):
            self._issue(location, "units must be a whole number of 0 or more; not used", key, field)
            return None
        return int(value)

    def _discipline(self, concepts: Iterable[object]) -> Discipline:
        for concept in concepts:
            if not isinstance(concept, dict):
                continue
            codings = concept.get("coding")
            if isinstance(codings, list):
                for coding in codings:
                    if isinstance(coding, dict):
                        code = coding.get("code")
                        system = coding.get("system")
                        found = codes.discipline_of_concept(
                            system if isinstance(system, str) else None,
                            code if isinstance(code, str) else None,
                            None,
                        )
                        if found is not _UNKNOWN_DISCIPLINE:
                            return found
                        display = coding.get("display")
                        if isinstance(display, str):
                            found = codes.discipline_of_concept(None, None, display)
                            if found is not _UNKNOWN_DISCIPLINE:
                                return found
            text = concept.get("text")
            if isinstance(text, str):
                found = codes.discipline_of_concept(None, None, text)
                if found is not _UNKNOWN_DISCIPLINE:
                    return found
        return _UNKNOWN_DISCIPLINE

    # ---- Encounter (R-H5)

    def _encounter(self, item: _Item) -> None:
        source, _, key, res = item
        loc = source.location
        status = res.get("status")
        start = end = None
        for field in ("actualPeriod", "period"):
            if field in res:
                start, end = self._period(res[field], loc, key, field, visit=True)
                break
        _, start_utc, end_utc, day, _ = self._span(start, end, loc, key, "period")
        patient, _ = self._subject(res, "subject", loc, key)
        if type(status) is str:
            status = _R4_ENCOUNTER_STATUS.get(status, status)
        locations: list[str] = []
        raw_locations = res.get("location")
        if type(raw_locations) is list:
            for entry in raw_locations:
                if type(entry) is dict:
                    found = self.index.of(entry.get("location"), key)
                    if found is not None and found not in locations:
                        locations.append(found)
        provider = res.get("serviceProvider")
        self.encounters[key] = EncounterInfo(
            ref=key,
            status=status if isinstance(status, str) else None,
            start=start_utc,
            end=end_utc,
            service_date=day,
            patient=patient,
            locations=tuple(locations),
            service_provider=self.index.of(provider, key) if provider is not None else None,
            discipline=self._encounter_discipline(res),
        )

    def _encounter_discipline(self, res: JsonObject) -> Discipline:
        """The discipline Encounter.serviceType (R4 CodeableConcept, R5 CodeableReference list)
        or Encounter.type names (R-E6 treatment days); UNKNOWN when neither names one."""
        concepts: list[object] = []
        service_type = res.get("serviceType")
        for item in service_type if type(service_type) is list else [service_type]:
            if type(item) is dict:
                concept = item.get("concept")
                concepts.append(concept if type(concept) is dict else item)
        kinds = res.get("type")
        if type(kinds) is list:
            concepts.extend(kinds)
        return self._discipline(concepts) if concepts else _UNKNOWN_DISCIPLINE

    # ---- DocumentReference: progress reports (R-E6)

    def _progress_report(self, item: _Item) -> ProgressReport | None:
        """A DocumentReference typed with a progress-note LOINC code (``PROGRESS_NOTE_TYPES``)
        and not withdrawn, on the date it covers; ``None`` for any other document.

        Date: R4 ``context.period`` / R5 ``period`` (its end, else its start), else ``date``
        (when the document was made). POLICY: ``status`` entered-in-error and ``docStatus``
        preliminary or entered-in-error are not a written report.
        """
        source, _, key, res = item
        doc_type = res.get("type")
        codings = doc_type.get("coding") if type(doc_type) is dict else None
        found: str | None = None
        for coding in codings if type(codings) is list else ():
            if type(coding) is dict and coding.get("system") == codes.LOINC_SYSTEM:
                code = coding.get("code")
                if type(code) is str and code in codes.PROGRESS_NOTE_TYPES:
                    found = code
                    break
        if found is None:
            self.out_of_scope += 1
            return None
        if res.get("status") == "entered-in-error" or res.get("docStatus") in (
            "preliminary",
            "entered-in-error",
        ):
            return None
        loc = source.location
        context = res.get("context")
        period = res.get("period")
        if period is None and type(context) is dict:
            period = context.get("period")
        day: date | None = None
        if type(period) is dict:
            start, end = self._period(period, loc, key, "period")
            for point in (end, start):
                if point is not None and point[1] is not None:
                    day = point[1]
                    break
        if day is None and res.get("date") is not None:
            point = self._point(res.get("date"), loc, key, "date")
            day = point[1] if point is not None else None
        if day is None:
            self._issue(loc, "progress report without a usable date; not used", key, "date")
            return None
        patient, _ = self._subject(res, "subject", loc, key)
        return ProgressReport(
            ref=key,
            date=day,
            discipline=codes.PROGRESS_NOTE_TYPES[found],
            code=found,
            patient=patient,
        )

    # ---- Coverage (issue 15)

    def _coverage(self, item: _Item) -> CoverageInfo:
        source, _, key, res = item
        loc = source.location
        status = res.get("status")
        start = end = None
        if "period" in res:
            start, end = self._period(res["period"], loc, key, "period")
        patient, _ = self._subject(res, "beneficiary", loc, key)
        order = res.get("order")
        if order is not None and (type(order) is not int or order < 1):
            self._issue(loc, "order is not a positive integer; not used", key, "order")
            order = None
        references: list[object] = []
        for field in ("payor", "paymentBy"):  # R4 payor[], R5 paymentBy[].party
            values = res.get(field)
            if type(values) is list:
                for value in values[:_COVERAGE_MAX_ITEMS]:
                    references.append(
                        value.get("party")
                        if field == "paymentBy" and type(value) is dict
                        else value
                    )
        if "insurer" in res:  # R5
            references.append(res["insurer"])
        payers = tuple(
            p for p in (self._payer(r, key) for r in references[:_COVERAGE_MAX_ITEMS]) if p
        )
        types: list[tuple[str, str, str]] = []
        kind = res.get("type")
        codings = kind.get("coding") if type(kind) is dict else None
        if type(codings) is list:
            for coding in codings[:_COVERAGE_MAX_ITEMS]:
                if type(coding) is dict:
                    system, code, display = (
                        coding.get("system"),
                        coding.get("code"),
                        coding.get("display"),
                    )
                    if type(system) is str and type(code) is str:
                        types.append((system, code, _name(display)))
        return CoverageInfo(
            ref=key,
            status=status if type(status) is str else None,
            patient=patient,
            start=start[1] if start is not None else None,
            end=end[1] if end is not None else None,
            order=order,
            payers=payers,
            types=tuple(types),
        )

    def _payer(self, value: object, key: str) -> PayerParty | None:
        """The party a payer reference names, with what its Organization (when present) adds."""
        if type(value) is not dict:
            return None
        target = self.index.of(value, key) if "reference" in value else None
        identifiers: list[str] = []
        names: list[str] = []
        sources: list[JsonObject] = [value]
        if target is not None:
            for _, rtype, found_key, found in self.by_type.get("Organization", ()):
                if found_key == target and rtype == "Organization":
                    sources.append(found)
                    break
        for source in sources:
            raw_ids = source.get("identifier")
            ids = [raw_ids] if type(raw_ids) is dict else raw_ids if type(raw_ids) is list else []
            for ident in ids[:_COVERAGE_MAX_ITEMS]:
                if type(ident) is dict:
                    system, val = ident.get("system"), ident.get("value")
                    if type(val) is str and val:
                        identifiers.append(f"{system if type(system) is str else ''}|{val}")
            for field in ("display", "name"):
                name = _name(source.get(field))
                if name:
                    names.append(name)
        if target is None and not identifiers and not names:
            return None
        return PayerParty(reference=target, identifiers=tuple(identifiers), names=tuple(names))

    # ---- CarePlan (R-H9) and plans

    def _care_plan(self, res: JsonObject, key: str, loc: str) -> None:
        status = res.get("status")
        start = end = None
        if "period" in res:
            start, end = self._period(res["period"], loc, key, "period")
        certifications: list[date] = []
        for ext in self._extensions(res):
            if ext.get("url") == EXT_PLAN_CERTIFICATION:
                raw = ext.get("valueDateTime", ext.get("valueDate"))
                point = self._point(raw, loc, key, "extension(plan-certification)")
                if point is not None and point[1] is not None:
                    certifications.append(point[1])
                elif point is not None or raw is None:
                    self._issue(
                        loc,
                        "plan-certification extension without a full date; not used",
                        key,
                        "extension(plan-certification)",
                    )
        category = res.get("category")
        patient, _ = self._subject(res, "subject", loc, key)
        self.plans[key] = PlanOfCare(
            ref=key,
            kind="CarePlan",
            status=status if isinstance(status, str) else None,
            start=start[1] if start is not None else None,
            end=end[1] if end is not None else None,
            certifications=tuple(certifications),
            discipline=self._discipline(category if isinstance(category, list) else ()),
            patient=patient,
        )

    def _request_as_plan(self, res: JsonObject, key: str, loc: str) -> None:
        status = res.get("status")
        start = end = None
        if "occurrencePeriod" in res:
            start, end = self._period(res["occurrencePeriod"], loc, key, "occurrencePeriod")
        category = res.get("category")
        concepts: list[object] = list(category) if isinstance(category, list) else []
        code = res.get("code")
        if isinstance(code, dict):
            concepts.append(code.get("concept", code))
        patient, _ = self._subject(res, "subject", loc, key)
        self.plans[key] = PlanOfCare(
            ref=key,
            kind="ServiceRequest",
            status=status if isinstance(status, str) else None,
            start=start[1] if start is not None else None,
            end=end[1] if end is not None else None,
            discipline=self._discipline(concepts),
            patient=patient,
        )

    def _contained_plans(self, procedures: Sequence[_Item]) -> None:
        """Plans contained in a Procedure (``basedOn: #plan``) get ``<Procedure key>#plan``."""
        for source, _, key, resource in procedures:
            if "contained" not in resource:
                continue
            for target in self.based_on.get(key, ()):
                if not target.startswith(key + "#") or target in self.plans:
                    continue
                inner = find_contained(resource, target[len(key) + 1 :])
                if inner is None:
                    continue
                inner_type = inner.get("resourceType")
                if inner_type == "CarePlan":
                    self._care_plan(inner, target, source.location)
                elif inner_type == "ServiceRequest":
                    self._request_as_plan(inner, target, source.location)

    # ---- ServiceRequest -> Charge / PlanOfCare

    def _service_request(self, item: _Item, plan_targets: set[str]) -> None:
        source, _, key, res = item
        loc = source.location
        is_plan = key in plan_targets
        if is_plan:
            self._request_as_plan(res, key, loc)
            if not source.draft_order:
                return
        code = res.get("code")
        concept = code.get("concept", code) if isinstance(code, dict) else None
        coding = self._billing_coding(concept, loc, key, "code")
        if coding is None:
            if not is_plan:
                self.out_of_scope += 1
            return
        system, code_value, _ = coding
        quantity = res.get("quantityQuantity")
        units = None
        if isinstance(quantity, dict):
            value = quantity.get("value")
            if type(value) is int and value >= 0:  # the usual whole count: nothing to check
                units = value
            else:
                units = self._units(value, loc, key, "quantityQuantity.value")
        elif quantity is not None:
            self._issue(
                loc, "quantityQuantity is not a Quantity; not used", key, "quantityQuantity"
            )
        details = res.get("orderDetail")
        modifiers = [] if details is None else self._order_detail_modifiers(details, loc, key)
        if "extension" in res:
            for extra in self._extension_modifiers(self._extensions(res), loc, key):
                if extra not in modifiers:
                    modifiers.append(extra)
        service_date = None
        if "occurrenceDateTime" in res:
            point = self._point(res["occurrenceDateTime"], loc, key, "occurrenceDateTime")
            service_date = point[1] if point is not None else None
        elif "occurrencePeriod" in res:
            start, _ = self._period(res["occurrencePeriod"], loc, key, "occurrencePeriod")
            service_date = start[1] if start is not None else None
        status = res.get("status")
        patient, _ = self._subject(res, "subject", loc, key)
        based_on = res.get("basedOn")
        self.charges.append(
            Charge(
                ref=key,
                source=_DRAFT_ORDER,
                code=code_value,
                system=system,
                units=units,
                modifiers=tuple(modifiers),
                patient=patient,
                service_date=service_date,
                status=status if isinstance(status, str) else None,
                plan_refs=() if based_on is None else self._refs(based_on, key),
            )
        )

    def _order_detail_modifiers(self, details: object, loc: str, key: str) -> list[str]:
        """Modifier codings of ``orderDetail``.

        R4 has CodeableConcept[]; R5 has ``[{parameter: [{valueCodeableConcept}]}]``.
        """
        if not isinstance(details, list):
            return []
        codings: list[object] = []
        for detail in details:
            if not isinstance(detail, dict):
                continue
            parameters = detail.get("parameter")
            if isinstance(parameters, list):  # R5
                for parameter in parameters:
                    if isinstance(parameter, dict):
                        concept = parameter.get("valueCodeableConcept")
                        if isinstance(concept, dict):
                            inner = concept.get("coding")
                            if isinstance(inner, list):
                                codings.extend(inner)
            else:  # R4: the detail is the CodeableConcept
                inner = detail.get("coding")
                if isinstance(inner, list):
                    codings.extend(inner)
        return self._modifier_codes(codings, loc, key, "orderDetail", allow_no_system=False)

    # ---- Claim -> Charge (R-H7)

    def _claim(self, item: _Item) -> None:
        """Claim or ExplanationOfBenefit items -> charges; remember lines linked to Procedures."""
        source, _, key, res = item
        loc = source.location
        items = res.get("item")
        if not isinstance(items, list):
            self.out_of_scope += 1
            return
        procedure_by_sequence: dict[int, str] = {}
        procedures = res.get("procedure")
        if isinstance(procedures, list):
            for position, procedure in enumerate(procedures, start=1):
                if not isinstance(procedure, dict):
                    continue
                sequence = procedure.get("sequence", position)
                ref = self.index.of(procedure.get("procedureReference"), key)
                if isinstance(sequence, int) and ref is not None:
                    procedure_by_sequence[sequence] = ref
        patient, _ = self._subject(res, "patient", loc, key)
        status = res.get("status")
        found_any = False
        for position, line in enumerate(items, start=1):
            if not isinstance(line, dict):
                continue
            sequence = line.get("sequence")
            if type(sequence) is not int:
                sequence = position
            field = f"item[{position - 1}]"
            coding = self._billing_coding(
                line.get("productOrService"), loc, key, f"{field}.productOrService"
            )
            if coding is None:
                continue
            found_any = True
            system, code_value, _ = coding
            modifier_codings: list[object] = []
            modifiers = line.get("modifier")
            if isinstance(modifiers, list):
                for concept in modifiers:
                    if isinstance(concept, dict) and isinstance(concept.get("coding"), list):
                        modifier_codings.extend(concept["coding"])
            line_modifiers = tuple(
                self._modifier_codes(
                    modifier_codings, loc, key, f"{field}.modifier", allow_no_system=True
                )
            )
            quantity = line.get("quantity")
            units = (
                self._units(quantity.get("value"), loc, key, f"{field}.quantity.value")
                if isinstance(quantity, dict)
                else None
            )
            service_date = None
            if "servicedDate" in line:
                point = self._point(line["servicedDate"], loc, key, f"{field}.servicedDate")
                service_date = point[1] if point is not None else None
            elif "servicedPeriod" in line:
                start, _ = self._period(line["servicedPeriod"], loc, key, f"{field}.servicedPeriod")
                service_date = start[1] if start is not None else None
            linked: list[str] = []
            sequences = line.get("procedureSequence")
            if isinstance(sequences, list):
                for number in sequences:
                    target = procedure_by_sequence.get(number) if isinstance(number, int) else None
                    if target is None:
                        self._issue(
                            loc,
                            "procedureSequence names no Claim.procedure with a procedureReference",
                            key,
                            f"{field}.procedureSequence",
                        )
                    elif target not in linked:
                        linked.append(target)
            ref = f"{key}#item-{sequence}"
            charge = Charge(
                ref=ref,
                source=_CLAIM,
                code=code_value,
                system=system,
                units=units,
                modifiers=line_modifiers,
                patient=patient,
                service_date=service_date,
                status=status if isinstance(status, str) else None,
                procedure_refs=tuple(linked),
            )
            self.charges.append(charge)
            for target in linked:
                self.claim_lines.setdefault(target, []).append(
                    _ClaimLine(ref, code_value, line_modifiers, units)
                )
        if not found_any:
            self.out_of_scope += 1

    # ---- Procedure -> TimedService (R-H2, R-H6, R-H8, I-2.2 .. I-2.4)

    def _procedure(self, item: _Item) -> TimedService | None:
        """One Procedure -> one :class:`TimedService` (R-H2, R-H6, R-H8, I-2.2 .. I-2.4).

        Modifiers and billed units: a linked ``Claim.item`` wins over the project extensions on
        the Procedure (R-H7 POLICY: Claim first, extension only when no claim line is present).
        """
        source, _, key, res = item
        loc = source.location
        # Each reference below is first looked up in the index's memo (the same few references
        # recur on every Procedure of a visit), and read by the general helper otherwise.
        known = self.index.known
        # basedOn is read first, even for Procedures that map to nothing: a ServiceRequest a
        # Procedure is based on is a plan of care, not a charge (R-H3).
        plan_refs: tuple[str, ...] = ()
        based_on = res.get("basedOn")
        if based_on is not None:
            ref = None
            if type(based_on) is list and len(based_on) == 1 and type(based_on[0]) is dict:
                text = based_on[0].get("reference")
                ref = known.get(text) if type(text) is str else None
            plan_refs = (ref,) if ref is not None else self._refs(based_on, key)
        self.based_on[key] = plan_refs
        code = res.get("code")
        if type(code) is not dict:
            if code is not None:
                self._issue(
                    loc,
                    "code is not a CodeableConcept; skipped",
                    key,
                    "code",
                    IssueCode.UNUSABLE_RESOURCE,
                )
            self.out_of_scope += 1
            return None
        coding = self._billing_coding(code, loc, key, "code")
        if coding is None:
            self.out_of_scope += 1
            return None
        system, code_value, display = coding
        status = res.get("status")
        if type(status) is not str or not status:
            self._issue(
                loc,
                "Procedure has no status (required); skipped",
                key,
                "status",
                IssueCode.UNUSABLE_RESOURCE,
            )
            return None

        # R4 performed[x] / R5 occurrence[x]; String, Age, Range and Timing give no time.
        refused = self.refused_times
        period = res.get("performedPeriod")
        if type(period) is dict:  # the usual R4 shape, read as _timing reads it
            start, end = self._period(period, loc, key, "performedPeriod", visit=True)
            span = None
            if start is not None and end is not None:
                start_at, start_day, start_utc = start
                end_at, end_day, end_utc = end
                if (
                    start_at is not None
                    and end_at is not None
                    and end_at.tzinfo == start_at.tzinfo
                    and start_utc <= end_utc  # type: ignore[operator]
                ):
                    # both ends with a time of day, in order, in one offset: nothing to report
                    span = (_PERIOD, start_utc, end_utc, start_day, end_day > start_day)  # type: ignore[operator]
            if span is None:
                span = self._span(start, end, loc, key, "performedPeriod")
        else:
            span = self._timing(res, loc, key)
        kind, start_utc, end_utc, service_date, spans_midnight = span
        if start_utc is None or end_utc is None:
            if self.refused_times != refused:  # a recorded time no visit can have
                kind, start_utc, end_utc, spans_midnight = _IMPLAUSIBLE, None, None, False
        elif end_utc - start_utc > MAX_SERVICE_SPAN:
            self._issue(
                loc,
                f"the service lasts more than {MAX_SERVICE_SPAN.total_seconds() / 3600:g} hours,"
                " longer than one service can; its times are not used: correct them at the"
                " source",
                key,
                "performedPeriod" if type(period) is dict else _timing_field(res),
            )
            kind, start_utc, end_utc, spans_midnight = _IMPLAUSIBLE, None, None, False

        index = self.index
        encounter = None
        reference = res.get("encounter")
        if reference is not None:
            text = reference.get("reference") if type(reference) is dict else None
            encounter = known.get(text) if type(text) is str else None
            if encounter is None:
                encounter = index.of(reference, key)
        if service_date is None and encounter is not None:
            info = self.encounters.get(encounter)
            if info is not None:
                service_date = info.service_date

        subject = res.get("subject")
        text = subject.get("reference") if type(subject) is dict else None
        found = self.subjects.get(text) if type(text) is str else None
        if found is None:
            found = self._subject(res, "subject", loc, key)
        patient, subject_is_group = found
        delivery = _GROUP if subject_is_group or code_value in _GROUP_CODES else _INDIVIDUAL
        billed_units: int | None = None
        modifiers: tuple[str, ...] = ()
        extensions = res.get("extension")
        if type(extensions) is list:
            modifier_codings: list[object] = []
            for ext in extensions:
                if type(ext) is not dict:
                    continue
                url = ext.get("url")
                if url == EXT_BILLING_MODIFIER:
                    value = ext.get("valueCoding")
                    if type(value) is dict:
                        modifier_codings.append(value)
                    else:
                        self._issue(
                            loc, "billing-modifier extension without valueCoding", key, "extension"
                        )
                elif url == EXT_DELIVERY_MODE:
                    mode = ext.get("valueCode")
                    if mode == "group":
                        delivery = _GROUP
                    elif mode != "individual":
                        self._issue(
                            loc,
                            "therapy-delivery-mode must be 'individual' or 'group'; ignored",
                            key,
                            "extension(therapy-delivery-mode)",
                        )
                elif url == EXT_BILLED_UNITS:
                    billed_units = self._units(
                        ext.get("valueInteger"), loc, key, "extension(billed-units)"
                    )
            if modifier_codings:
                modifiers = tuple(
                    self._modifier_codes(
                        modifier_codings,
                        loc,
                        key,
                        "extension(billing-modifier)",
                        allow_no_system=True,
                    )
                )

        lines = self.claim_lines.get(key)
        if lines:
            modifiers, billed_units = self._apply_claim_lines(
                lines, code_value, modifiers, billed_units, loc, key
            )

        performers: tuple[str, ...] = ()
        raw_performers = res.get("performer")
        if type(raw_performers) is list:
            actors: list[str] = []
            for performer in raw_performers:
                if type(performer) is dict:
                    reference = performer.get("actor")
                    text = reference.get("reference") if type(reference) is dict else None
                    actor = known.get(text) if type(text) is str else None
                    if actor is None:
                        actor = index.of(reference, key)
                    if actor is not None and actor not in actors:
                        actors.append(actor)
            performers = tuple(actors)

        body_sites: tuple[str, ...] = ()
        raw_sites = res.get("bodySite")
        if type(raw_sites) is list:
            body_sites = self._body_sites(raw_sites)

        return TimedService(
            ref=key,
            code=code_value,
            system=system,
            status=status,
            timing=kind,
            start=start_utc,
            end=end_utc,
            service_date=service_date,
            spans_midnight=spans_midnight,
            patient=patient,
            encounter=encounter,
            performers=performers,
            body_sites=body_sites,
            delivery_mode=delivery,
            subject_is_group=subject_is_group,
            modifiers=modifiers,
            billed_units=billed_units,
            plan_refs=plan_refs,
            has_reason=bool(
                res.get("reasonCode") or res.get("reasonReference") or res.get("reason")
            ),
            display=display,
            location=index.of(res.get("location"), key) if "location" in res else None,
            performer_role=service_role(performers, self.roles),  # R-G3
        )

    def _timing(self, res: JsonObject, loc: str, key: str) -> _Span:
        """A Procedure's performed[x] (R4) / occurrence[x] (R5) as a span (R-H2, I-2.3)."""
        start = end = None
        timing_field = "performed"
        for field, is_period in _PERIOD_FIELDS:
            if field in res:
                timing_field = field
                if is_period:
                    start, end = self._period(res[field], loc, key, field, visit=True)
                else:
                    start = self._point(res[field], loc, key, field, visit=True)
                break
        span = self._span(start, end, loc, key, timing_field)
        if span[0] is _PERIOD and timing_field in _DATETIME_FIELDS:
            # a point in time, no duration (R-H2, W-NO-DURATION)
            return _INSTANT, span[1], span[2], span[3], span[4]
        return span

    def _apply_claim_lines(
        self,
        lines: list[_ClaimLine],
        code_value: str,
        modifiers: tuple[str, ...],
        billed_units: int | None,
        loc: str,
        key: str,
    ) -> tuple[tuple[str, ...], int | None]:
        """Claim lines billing this Procedure replace its extension modifiers/units (R-H7)."""
        matching = [line for line in lines if line.code == code_value]
        for line in lines:
            if line.code != code_value:
                self._issue(
                    loc,
                    f"{line.ref} bills {line.code} but this Procedure is coded {code_value}; "
                    "that claim line is not applied to it",
                    key,
                    "code",
                )
        if not matching:
            return modifiers, billed_units
        chosen = matching[0]
        if len(matching) > 1:
            self._issue(
                loc, f"{len(matching)} claim lines bill this Procedure; {chosen.ref} is used", key
            )
        return chosen.modifiers, chosen.units

    @staticmethod
    def _body_sites(raw_sites: list[object]) -> tuple[str, ...]:
        """``"system|code"`` of each bodySite's first coding, else ``"text:..."``."""
        out: list[str] = []
        for site in raw_sites:
            if type(site) is not dict:
                continue
            site_codings = site.get("coding")
            if type(site_codings) is list:
                named = next(
                    (
                        f"{c.get('system', '')}|{c['code']}"
                        for c in site_codings
                        if type(c) is dict and type(c.get("code")) is str
                    ),
                    None,
                )
                if named is not None:
                    out.append(named)
                    continue
            text = site.get("text")
            if type(text) is str and text:
                out.append(f"text:{text}")
        return tuple(out)
