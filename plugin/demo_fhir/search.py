"""Search parameters of ``demo-fhir`` and their FHIR R4 matching rules.

Supported per type: see :data:`PARAMETERS` (also what ``GET /metadata`` lists). Every type
served also has ``_id``. Values: a comma is OR, a repeated parameter is AND; an empty value is
ignored (FHIR R4 §3.1.1.4). Modifiers: ``:missing`` on every parameter, ``:exact`` and
``:contains`` on strings, a resource type on references (``subject:Patient=x``); any other
modifier is refused (400). Prefixes on dates: ``eq`` (default), ``ne``, ``gt``, ``lt``, ``ge``,
``le``, ``sa``, ``eb``; ``ap`` is refused.

**Dates** follow FHIR's range semantics: the search value is the range its precision implies
(``2025-03`` is the whole month), the target is the range of the element (a Period's start to
end, an open end reaching forever; a dateTime the range of its own precision), and ``eq`` means
the target lies inside the search range, ``gt`` that the target reaches past its end, ``lt``
that it starts before its start, ``ge`` that it reaches past the search range's start, ``le``
that it starts before its end, ``sa`` / ``eb`` that it starts after / ends before it.

A search value **without a time zone** (``date=2025-03-04``) is read in each resource's own
offset, the clinic's local time, which is how a date of service is counted (R-H10, I-2.4); FHIR
leaves the zone of such values to the server. A value with a zone compares instants; a resource
time without a zone is then read as UTC.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Literal

JsonObject = Mapping[str, Any]
Kind = Literal["token", "reference", "date", "string"]

MIN = datetime.min
MAX = datetime.max


class SearchError(Exception):
    """A search the server refuses (400 unless ``status`` says otherwise) with this message,
    which names the parameter and never repeats its value."""

    def __init__(self, message: str, *, code: str = "invalid", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


# ---------------------------------------------------------------- dates as ranges


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open range ``[low, high)`` of wall-clock times in ``zone`` (None: no zone
    written); ``None`` bounds are open."""

    low: datetime | None
    high: datetime | None
    zone: tzinfo | None
    high_zone: tzinfo | None  # a Period's end may carry another offset than its start


_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def _zone(text: str | None) -> tzinfo | None:
    if text is None:
        return None
    if text == "Z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError("offset out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def _next_month(value: datetime) -> datetime:
    return (
        value.replace(year=value.year + 1, month=1)
        if value.month == 12
        else value.replace(month=value.month + 1)
    )


def parse_span(text: str) -> Span | None:
    """A FHIR date/dateTime/instant (or a search value of one) as its range; None if it is
    not one. A ``+`` of the offset that arrived as a space (unencoded in a URL) is read back."""
    text = text.replace(" ", "+")
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone_text = match.groups()
    try:
        zone = _zone(zone_text)
        if month is None:
            low = datetime(int(year), 1, 1)
            high: datetime | None = low.replace(year=low.year + 1) if low.year < 9999 else None
        elif day is None:
            low = datetime(int(year), int(month), 1)
            high = _next_month(low) if low.year < 9999 or low.month < 12 else None
        elif hour is None:
            low = datetime(int(year), int(month), int(day))
            high = low + timedelta(days=1) if low < datetime(9999, 12, 31) else None
        else:
            low = datetime(int(year), int(month), int(day), int(hour), int(minute))
            step = timedelta(minutes=1)
            if second is not None:
                low = low.replace(second=int(second))
                step = timedelta(seconds=1)
                if fraction is not None:
                    digits = fraction[:6]
                    low = low.replace(microsecond=int(digits.ljust(6, "0")))
                    step = timedelta(microseconds=10 ** (6 - len(digits)))
            high = low + step if low < datetime(9999, 12, 31) else None
    except ValueError:  # month 13, 24:00, offset 15:00 ...
        return None
    return Span(low, high, zone, zone)


def _in_mode(
    value: datetime | None, zone: tzinfo | None, aware: bool, open_end: datetime
) -> datetime:
    """One bound as a naive datetime comparable with the other side: wall-clock time when the
    search value has no zone, UTC when it has one (a value without a zone read as UTC)."""
    if value is None:
        return open_end
    if not aware:
        return value
    try:
        return value.replace(tzinfo=zone or UTC).astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return MIN if value.year < 5000 else MAX


def date_matches(prefix: str, search: Span, target: Span) -> bool:
    """FHIR R4 date comparison of the target range against the search range."""
    aware = search.zone is not None
    s_low = _in_mode(search.low, search.zone, aware, MIN)
    s_high = _in_mode(search.high, search.high_zone, aware, MAX)
    t_low = _in_mode(target.low, target.zone, aware, MIN)
    t_high = _in_mode(target.high, target.high_zone, aware, MAX)
    inside = s_low <= t_low and t_high <= s_high
    if prefix == "eq":
        return inside
    if prefix == "ne":
        return not inside
    if prefix == "gt":
        return t_high > s_high
    if prefix == "lt":
        return t_low < s_low
    if prefix == "ge":  # the range from the search value's start on meets the target
        return t_high > s_low
    if prefix == "le":  # the range up to the search value's end meets the target
        return t_low < s_high
    if prefix == "sa":
        return t_low >= s_high
    if prefix == "eb":
        return t_high <= s_low
    raise AssertionError(prefix)


def sort_instant(target: Span) -> datetime:
    """Where a range starts, in UTC (for ``_sort``); open starts first."""
    return _in_mode(target.low, target.zone, True, MIN)


# ---------------------------------------------------------------- reading elements


def _as_list(value: object) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _instant(value: object) -> list[Span]:
    found = parse_span(value) if isinstance(value, str) else None
    return [found] if found is not None else []


def _period(value: object) -> list[Span]:
    if not isinstance(value, Mapping):
        return []
    start = parse_span(value["start"]) if isinstance(value.get("start"), str) else None
    end = parse_span(value["end"]) if isinstance(value.get("end"), str) else None
    if start is None and end is None:
        return []
    low_zone = start.zone if start is not None else end.zone if end is not None else None
    high_zone = end.zone if end is not None else low_zone
    return [Span(start.low if start else None, end.high if end else None, low_zone, high_zone)]


def dates_of(*elements: str) -> Callable[[JsonObject], list[Span]]:
    """Ranges of the named elements: ``xDateTime`` / ``xPeriod`` / ``xTiming`` for a choice
    ``x[x]`` given as ``x[x]``, else a date/dateTime or Period element by name."""

    def extract(resource: JsonObject) -> list[Span]:
        found: list[Span] = []
        for name in elements:
            if name.endswith("[x]"):
                stem = name[:-3]
                found += _instant(resource.get(f"{stem}DateTime"))
                found += _period(resource.get(f"{stem}Period"))
                timing = resource.get(f"{stem}Timing")
                if isinstance(timing, Mapping):
                    for event in _as_list(timing.get("event")):
                        found += _instant(event)
            elif name.endswith("period") or name.endswith("Period"):
                found += _period(resource.get(name))
            else:
                found += _instant(resource.get(name))
        return found

    return extract


def references_of(path: str) -> Callable[[JsonObject], list[str]]:
    """``Reference.reference`` strings at ``path`` (dot-separated, lists flattened)."""
    steps = path.split(".")

    def extract(resource: JsonObject) -> list[str]:
        nodes: list[Any] = [resource]
        for step in steps:
            nodes = [
                item
                for node in nodes
                if isinstance(node, Mapping)
                for item in _as_list(node.get(step))
            ]
        return [
            node["reference"]
            for node in nodes
            if isinstance(node, Mapping) and isinstance(node.get("reference"), str)
        ]

    return extract


Token = tuple[str | None, str]


def code_of(name: str) -> Callable[[JsonObject], list[Token]]:
    """A ``code`` element (no system of its own)."""

    def extract(resource: JsonObject) -> list[Token]:
        value = resource.get(name)
        return [(None, value)] if isinstance(value, str) else []

    return extract


def concepts_of(name: str) -> Callable[[JsonObject], list[Token]]:
    """The codings of a CodeableConcept (or a list of them, or a Coding)."""

    def extract(resource: JsonObject) -> list[Token]:
        found: list[Token] = []
        for concept in _as_list(resource.get(name)):
            if not isinstance(concept, Mapping):
                continue
            codings = _as_list(concept.get("coding")) if "coding" in concept else [concept]
            for coding in codings:
                if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                    system = coding.get("system")
                    found.append((system if isinstance(system, str) else None, coding["code"]))
        return found

    return extract


def _fold(text: str) -> str:
    """Case- and accent-insensitive form of a string (FHIR's default string matching)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def names_of(resource: JsonObject) -> list[str]:
    """The parts of every HumanName."""
    found: list[str] = []
    for name in _as_list(resource.get("name")):
        if not isinstance(name, Mapping):
            continue
        for part in ("text", "family"):
            if isinstance(name.get(part), str):
                found.append(name[part])
        for part in ("given", "prefix", "suffix"):
            found += [v for v in _as_list(name.get(part)) if isinstance(v, str)]
    return found


def _ids(resource: JsonObject) -> list[Token]:
    ident = resource.get("id")
    return [(None, ident)] if isinstance(ident, str) else []


# ---------------------------------------------------------------- the parameter table


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: Kind
    documentation: str
    extract: Callable[[JsonObject], Sequence[Any]]
    targets: tuple[str, ...] = ()  # reference: the resource types it may name (empty: any)


ID = Param("_id", "token", "Logical id of the resource", _ids)


def _patient(path: str = "subject") -> Param:
    return Param(
        "patient",
        "reference",
        f"The patient ({path}, a Patient)",
        references_of(path),
        ("Patient",),
    )


def _subject() -> Param:
    return Param("subject", "reference", "Who the resource is about", references_of("subject"))


def _encounter(path: str = "encounter") -> Param:
    return Param(
        "encounter", "reference", f"The encounter ({path})", references_of(path), ("Encounter",)
    )


def _status() -> Param:
    return Param("status", "token", "The status code", code_of("status"))


def _code() -> Param:
    return Param("code", "token", "A code of the resource (system|code)", concepts_of("code"))


PARAMETERS: Mapping[str, Mapping[str, Param]] = {
    "Patient": {
        "name": Param("name", "string", "A part of a name (starts with)", names_of),
        "gender": Param("gender", "token", "Administrative gender", code_of("gender")),
        "birthdate": Param("birthdate", "date", "Date of birth", dates_of("birthDate")),
    },
    "Practitioner": {
        "name": Param("name", "string", "A part of a name (starts with)", names_of),
    },
    "Encounter": {
        "patient": _patient(),
        "subject": _subject(),
        "date": Param("date", "date", "Encounter.period", dates_of("period")),
        "status": _status(),
    },
    "Procedure": {
        "patient": _patient(),
        "subject": _subject(),
        "encounter": _encounter(),
        "date": Param("date", "date", "Procedure.performed[x]", dates_of("performed[x]")),
        "status": _status(),
        "code": _code(),
    },
    "ServiceRequest": {
        "patient": _patient(),
        "subject": _subject(),
        "encounter": _encounter(),
        "authored": Param("authored", "date", "ServiceRequest.authoredOn", dates_of("authoredOn")),
        "occurrence": Param(
            "occurrence", "date", "ServiceRequest.occurrence[x]", dates_of("occurrence[x]")
        ),
        "status": _status(),
        "intent": Param("intent", "token", "The intent code", code_of("intent")),
        "code": _code(),
    },
    "CarePlan": {
        "patient": _patient(),
        "subject": _subject(),
        "encounter": _encounter(),
        "date": Param("date", "date", "CarePlan.period", dates_of("period")),
        "status": _status(),
        "category": Param("category", "token", "The plan's category", concepts_of("category")),
    },
    "DocumentReference": {
        "patient": _patient(),
        "subject": _subject(),
        "date": Param("date", "date", "DocumentReference.date", dates_of("date")),
        "status": _status(),
        "type": Param("type", "token", "The document type (system|code)", concepts_of("type")),
    },
    "Claim": {
        "patient": _patient("patient"),
        "encounter": _encounter("item.encounter"),
        "created": Param("created", "date", "Claim.created", dates_of("created")),
        "status": _status(),
        "use": Param("use", "token", "claim | preauthorization | predetermination", code_of("use")),
    },
    "Coverage": {  # the services' `coverage` prefetch key (issue 15)
        "patient": _patient("beneficiary"),
        "beneficiary": Param(
            "beneficiary",
            "reference",
            "The covered party (beneficiary, a Patient)",
            references_of("beneficiary"),
            ("Patient",),
        ),
        "status": _status(),
    },
}

#: Parameters that shape the result rather than select it.
CONTROL = frozenset({"_count", "_offset", "_sort", "_format", "_pretty", "_summary", "_total"})
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
DEFAULT_COUNT = 50
MAX_COUNT = 200
#: More parameters than this in one search are refused (the work stays bounded).
MAX_PARAMETERS = 64
#: More comma-separated values than this in one parameter are refused.
MAX_VALUES = 100


def parameters_for(resource_type: str) -> dict[str, Param]:
    """``_id`` and the type's own parameters."""
    return {"_id": ID, **PARAMETERS.get(resource_type, {})}


# ---------------------------------------------------------------- a parsed search


@dataclass(frozen=True, slots=True)
class Criterion:
    param: Param
    modifier: str
    values: tuple[Any, ...]  # parsed per kind; ORed

    def matches(self, resource: JsonObject) -> bool:
        found = self.param.extract(resource)
        if self.modifier == "missing":
            return any(bool(found) != want for want in self.values)
        return any(_matches_one(self.param, self.modifier, value, found) for value in self.values)


def _matches_one(param: Param, modifier: str, value: Any, found: Sequence[Any]) -> bool:
    kind = param.kind
    if kind == "date":
        prefix, span = value
        return any(date_matches(prefix, span, target) for target in found)
    if kind == "token":
        system, code = value
        return any(
            code == c and (system is None or (system == "" and s is None) or system == s)
            for s, c in found
        )
    if kind == "string":
        if modifier == "exact":
            return any(value == text for text in found)
        folded = _fold(value)
        if modifier == "contains":
            return any(folded in _fold(text) for text in found)
        return any(_fold(text).startswith(folded) for text in found)
    wanted_type, wanted_id, absolute = value
    for reference in found:
        kind_of, ident, url = split_reference(reference, "")
        if absolute is not None:
            if absolute in (url, reference):
                return True
            continue
        if url is not None:
            continue
        if ident != wanted_id:
            continue
        if wanted_type is not None and kind_of == wanted_type:
            return True
        if wanted_type is None and (not param.targets or kind_of in param.targets):
            return True
    return False


def split_reference(text: str, base: str) -> tuple[str | None, str | None, str | None]:
    """``(type, id, None)`` for ``id``, ``Type/id``, ``Type/id/_history/v`` or such a URL under
    ``base``; ``(None, None, url)`` for an absolute URL elsewhere; ``(None, None, None)`` for
    anything else."""
    if base and text.startswith(base + "/"):
        text = text[len(base) + 1 :]
    if "://" in text or text.startswith("urn:"):
        return None, None, text
    parts = text.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 1 and parts[0]:
        return None, parts[0], None
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1], None
    return None, None, None


def parse_values(param: Param, modifier: str, raw: str, base: str) -> tuple[Any, ...]:
    """The OR-ed values of one parameter, parsed; :class:`SearchError` names the parameter."""
    where = f"{param.name}:{modifier}" if modifier else param.name
    values = raw.split(",")
    if len(values) > MAX_VALUES:
        raise SearchError(f"parameter '{where}' has more than {MAX_VALUES} values")
    if modifier == "missing":
        if any(v not in ("true", "false") for v in values):
            raise SearchError(f"parameter '{where}' takes true or false")
        return tuple(v == "true" for v in values)
    parsed: list[Any] = []
    for value in values:
        if param.kind == "date":
            prefix = value[:2] if value[:2].isalpha() else "eq"
            text = value[2:] if value[:2].isalpha() else value
            if prefix == "ap":
                raise SearchError(f"parameter '{where}': the prefix ap is not supported")
            if prefix not in DATE_PREFIXES:
                raise SearchError(
                    f"parameter '{where}': unknown prefix; use one of {', '.join(DATE_PREFIXES)}"
                )
            span = parse_span(text)
            if span is None:
                raise SearchError(
                    f"parameter '{where}' is not a FHIR date or dateTime "
                    "(YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|+hh:mm])"
                )
            parsed.append((prefix, span))
        elif param.kind == "token":
            system, bar, code = value.partition("|")
            if not bar:
                system, code = None, value  # type: ignore[assignment]
            if not code:
                raise SearchError(f"parameter '{where}' needs a code (system|code or code)")
            parsed.append((system, code))
        elif param.kind == "string":
            parsed.append(value)
        else:
            kind_of, ident, url = split_reference(value, base)
            if url is not None:
                parsed.append((None, None, url))
                continue
            if ident is None:
                raise SearchError(
                    f"parameter '{where}' is not a reference (id, Type/id or an absolute URL)"
                )
            if modifier:
                if kind_of is not None and kind_of != modifier:
                    raise SearchError(f"parameter '{where}': the type modifier and value disagree")
                kind_of = modifier
            parsed.append((kind_of, ident, None))
    return tuple(parsed)


def check_modifier(param: Param, modifier: str) -> None:
    if not modifier or modifier == "missing":
        return
    if param.kind == "string" and modifier in ("exact", "contains"):
        return
    if param.kind == "reference" and re.fullmatch(r"[A-Z][A-Za-z]+", modifier):
        if param.targets and modifier not in param.targets:
            raise SearchError(f"parameter '{param.name}' refers to {', '.join(param.targets)} only")
        return
    raise SearchError(
        f"modifier ':{modifier}' is not supported on parameter '{param.name}'",
        code="not-supported",
    )
