"""The state one mapping call shares between the readers of each resource type.

A :class:`MappingContext` holds what the readers need from one another (the reference index,
the Encounters read before the Procedures, the Claim lines waiting for their Procedures, the
plans a Procedure is based on ...) and what they all report into (issues, out-of-scope counts).
It also reads the value types every resource type uses -- times, periods, subjects, reference
lists, unit counts -- so each of those is read, cached and reported in one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from fhir_mappings.model import (
    Charge,
    EncounterInfo,
    FhirVersion,
    IssueCode,
    MappingIssue,
    PerformerRole,
    PlanOfCare,
    TimingKind,
)
from fhir_mappings.references import ReferenceIndex, find_contained, reference_type
from fhir_mappings.sources import Collected, SourcedResource
from fhir_mappings.times import (
    VISIT_YEARS,
    TimeFormatError,
    TimeRangeError,
    parse_fields,
    parse_time,
)

JsonObject = Mapping[str, Any]
# One input resource: where it was found, its type, its key, the resource.
Item = tuple[SourcedResource, str, str, JsonObject]
# One parsed date/dateTime: the time of day in its own offset, the local date, the UTC instant
# (the times are None without a time of day; the date is None for YYYY and YYYY-MM).
Point = tuple[datetime | None, date | None, datetime | None]
# Timing kind, UTC start, UTC end, date of service, ends on a later local date than it starts.
Span = tuple[TimingKind, datetime | None, datetime | None, date | None, bool]

# Enum members bound once: attribute access on an Enum class is slow on the hot path.
PERIOD = TimingKind.PERIOD
_DATE = TimingKind.DATE
_NO_TIME = TimingKind.NONE


class ClaimLine(NamedTuple):
    """A Claim or ExplanationOfBenefit line that bills a Procedure (R-H7)."""

    ref: str
    code: str
    modifiers: tuple[str, ...]
    units: int | None


class MappingContext:
    """Everything one call of :func:`~fhir_mappings.mapping.record.map_collected` shares."""

    def __init__(self, found: Collected) -> None:
        self.found = found
        self.index = ReferenceIndex()
        self.version: FhirVersion | None = None
        self.issues: list[MappingIssue] = list(found.issues)
        self.out_of_scope = 0
        self.encounters: dict[str, EncounterInfo] = {}
        self.plans: dict[str, PlanOfCare] = {}
        self.charges: list[Charge] = []
        self.claim_lines: dict[str, list[ClaimLine]] = {}
        self.other_patient = 0  # resources left out as not about the expected patient
        self.based_on: dict[str, tuple[str, ...]] = {}  # Procedure key -> basedOn keys
        self.by_type: dict[str, list[Item]] = {}  # resource type -> items, in input order
        self.shapes: list[tuple[Item, FhirVersion, str]] = []  # release-specific shapes seen
        # Per-call caches: a visit's resources repeat the same few references and times.
        # reference text -> (patient key, is a Group), for subjects that need no issue
        self.subjects: dict[str, tuple[str | None, bool]] = {}
        # date/dateTime text -> its parse, for texts that need no issue (and within VISIT_YEARS,
        # so a point found here is always a usable visit time)
        self.points: dict[str, Point] = {}
        # recorded visit times refused as outside what a visit can be (see point)
        self.refused_times = 0
        # assistant or not, per Practitioner / PractitionerRole present (R-G3)
        self.roles: dict[str, PerformerRole] = {}

    def issue(
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

    def point(
        self,
        value: object,
        location: str,
        key: str,
        field: str,
        part: str = "",
        visit: bool = False,
    ) -> Point | None:
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
                self.refuse_time(location, key, field + part)
            else:
                self.issue(location, f"{exc}; the value is not used", key, field + part)
            return None
        plausible = day is None or day.year in VISIT_YEARS
        if visit and not plausible:
            self.refuse_time(location, key, field + part)
            return None
        point = (at, day, None if at is None else at.astimezone(UTC))
        if assumed_utc:
            self.issue(
                location,
                "time of day without a time zone offset (invalid FHIR); read as UTC, so the "
                "written date stays the date of service; add the offset at the source",
                key,
                field + part,
            )
        elif type(value) is str and plausible:
            self.points[value] = point
        return point

    def refuse_time(self, location: str, key: str, field: str) -> None:
        """A recorded visit time no visit can have (issue 17): a mapping issue, never used."""
        self.refused_times += 1
        self.issue(
            location,
            f"the date is outside what a visit can be (years {VISIT_YEARS.start}-"
            f"{VISIT_YEARS.stop - 1}); the value is not used: correct it at the source",
            key,
            field,
        )

    def period(
        self, period: object, location: str, key: str, field: str, visit: bool = False
    ) -> tuple[Point | None, Point | None]:
        """The start and end of a Period (each ``None`` when absent or unreadable)."""
        if type(period) is not dict:
            self.issue(location, "expected a Period object; not used", key, field)
            return None, None
        start = end = None
        text = period.get("start")
        if text is not None:
            start = self.point(text, location, key, field, ".start", visit)
        text = period.get("end")
        if text is not None:
            end = self.point(text, location, key, field, ".end", visit)
        return start, end

    def span(
        self, start: Point | None, end: Point | None, location: str, key: str, field: str
    ) -> Span:
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
                self.issue(
                    location,
                    "one end of the period has a time of day and the other only a date; the "
                    "date-only end is treated as missing",
                    key,
                    field,
                )
            return PERIOD, start_utc, end_utc, day, False
        assert start_utc is not None
        assert end_utc is not None
        if end_utc < start_utc:
            self.issue(
                location,
                "period ends before it starts (FHIR invariant per-1); no minutes counted",
                key,
                field,
            )
            return PERIOD, start_utc, end_utc, day, False
        # the end's local date, read in the start's own offset (I-2.4)
        start_zone = start_at.tzinfo
        if end_at.tzinfo != start_zone:
            end_day = end_at.astimezone(start_zone).date()
        assert day is not None
        assert end_day is not None
        return PERIOD, start_utc, end_utc, day, end_day > day

    def subject(
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
            self.issue(location, f"{field} is a {rtype}, not a Patient or Group", key, field)
            return None, False
        if type(reference) is str and "#" not in reference and "#" not in ref:
            self.subjects[reference] = found  # read the same way from any resource
        return found

    def refs(self, values: object, key: str) -> tuple[str, ...]:
        """The distinct keys a list of references names, in order (unresolvable ones left out)."""
        if not isinstance(values, list):
            return ()
        of = self.index.of
        out: list[str] = []
        for value in values:
            ref = of(value, key)
            if ref is not None and ref not in out:
                out.append(ref)
        return tuple(out)

    def units(self, value: object, location: str, key: str, field: str) -> int | None:
        """A count of units: a whole number of 0 or more, else reported and ``None``."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.issue(location, "units are not a number; not used", key, field)
            return None
        if value < 0 or (isinstance(value, float) and not value.is_integer()):
            self.issue(location, "units must be a whole number of 0 or more; not used", key, field)
            return None
        return int(value)
