"""FHIR ``date`` / ``dateTime`` / ``instant`` values -> moments the rules can compare.

FHIR writes a dateTime as ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or
``YYYY-MM-DDThh:mm:ss[.f][Z|±hh:mm]`` and requires a time zone whenever a time of day is
given (R-H10, S22i). This module reads all of those shapes, and also the three Python types
``fhir.resources`` hands back for the same fields (``datetime``, ``date`` and ``str`` for partial
dates), so the fast path and the full models agree.

Decisions (POLICY, R-H10 / I-2.4):

* A value with a time of day keeps its own offset in :attr:`Moment.at`; the local calendar date
  of that offset is :attr:`Moment.day` (the date of service of a start, I-2.4). Callers convert to
  UTC with :meth:`Moment.utc` before comparing instants.
* A time of day **without** an offset is invalid FHIR. It is read as if written in UTC (``+00:00``),
  which keeps the written wall-clock date as the date of service and keeps the minutes between two
  such values exact; only comparisons with values that do carry an offset can be off. The caller
  reports a :class:`~fhir_mappings.model.MappingIssue` (see :attr:`Moment.assumed_utc`).
* ``YYYY`` and ``YYYY-MM`` have no calendar day: :attr:`Moment.day` is ``None``.
* Every time of day this module returns converts to UTC: a value that is valid FHIR but falls
  outside Python's years 1..9999 once its offset is applied (``0001-01-01T00:00:00+05:00``) is a
  :class:`TimeRangeError`, never an ``OverflowError`` later in a caller.
* A visit happens within :data:`VISIT_YEARS` and one service lasts at most
  :data:`MAX_SERVICE_SPAN`: the mappers refuse recorded visit times outside them (issue 17), so
  no implausible date reaches the rules or a drawing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple


class Precision(StrEnum):
    """How much of a FHIR dateTime was written."""

    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    TIME = "time"  # a time of day (always with an offset in valid FHIR)


class TimeFormatError(ValueError):
    """A value that is not a FHIR date/dateTime. The message never repeats the value."""


class TimeRangeError(TimeFormatError):
    """A FHIR dateTime whose instant cannot be represented (outside the years 1..9999 in UTC)."""


#: The calendar years (local date) a visit or a service can fall in; earlier or later recorded
#: times are data errors (a placeholder such as 0001-01-01 or 9999-12-31), not visits.
VISIT_YEARS = range(1900, 2201)
#: The longest one documented service can be; a longer period is a data error, not a service.
MAX_SERVICE_SPAN = timedelta(hours=24)


class Moment(NamedTuple):
    """One parsed FHIR date/dateTime (a NamedTuple: built on the hot path)."""

    precision: Precision
    at: datetime | None  # aware, in the value's own offset; set only for Precision.TIME
    day: date | None  # local calendar date; None for YYYY and YYYY-MM
    assumed_utc: bool = False  # a time of day was written without an offset

    def utc(self) -> datetime | None:
        """The instant in UTC (R-H10), or ``None`` when no time of day was recorded."""
        return None if self.at is None else self.at.astimezone(UTC)


# Enum members bound once.
_YEAR = Precision.YEAR
_MONTH = Precision.MONTH
_DAY = Precision.DAY
_TIME = Precision.TIME


def parse_time(value: object) -> Moment | None:
    """Read a FHIR date/dateTime given as ``str``, ``datetime`` or ``date``.

    Returns ``None`` for ``None``; raises :class:`TimeFormatError` for anything else that is not
    a FHIR date or dateTime (wrong type, wrong layout, impossible calendar values).
    """
    if value is None:
        return None
    if isinstance(value, str):
        return parse_text(value)
    if isinstance(value, datetime):  # check before date: datetime is a date subclass
        if value.tzinfo is None or value.utcoffset() is None:
            aware = value.replace(tzinfo=UTC)
            return Moment(Precision.TIME, aware, aware.date(), assumed_utc=True)
        _check_range(value)
        return Moment(Precision.TIME, value, value.date())
    if isinstance(value, date):
        return Moment(Precision.DAY, None, value)
    raise TimeFormatError(f"expected a FHIR dateTime string, got {type(value).__name__}")


def parse_text(text: str) -> Moment:
    """Read a FHIR date/dateTime string (see :func:`parse_time`)."""
    precision, at, day, assumed_utc = parse_fields(text)
    return Moment(precision=precision, at=at, day=day, assumed_utc=assumed_utc)


def parse_fields(text: str) -> tuple[Precision, datetime | None, date | None, bool]:
    """:func:`parse_text` as a plain tuple, the fields of :class:`Moment` (for hot loops)."""
    n = len(text)
    try:
        if n >= 19 and text[10] == "T" and text[13] == ":" and text[16] == ":":
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                aware = parsed.replace(tzinfo=UTC)
                return _TIME, aware, aware.date(), True
            _check_range(parsed)
            return _TIME, parsed, parsed.date(), False
        if n == 10 and text[4] == "-" and text[7] == "-":
            return _DAY, None, date.fromisoformat(text), False
        if n == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit():
            if not 1 <= int(text[5:]) <= 12:
                raise TimeFormatError("month must be 01..12")
            return _MONTH, None, None, False
        if n == 4 and text.isdigit():
            return _YEAR, None, None, False
    except TimeFormatError:
        raise
    except ValueError as exc:  # impossible dates/times: keep the reason, never the value
        reason = str(exc)
        if text in reason or not reason:
            reason = "unreadable date or time"
        raise TimeFormatError(f"not a valid FHIR dateTime ({reason})") from None
    raise TimeFormatError(
        "not a FHIR dateTime (expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz)"
    )


_EDGE_YEARS = (1, 9999)


def _check_range(moment: datetime) -> None:
    """Raise :class:`TimeRangeError` when ``moment`` (aware) has no UTC instant in 1..9999.

    Only the first and last year can overflow (offsets are under a day), so the conversion is
    tried only there: one integer comparison on the hot path.
    """
    if moment.year in _EDGE_YEARS:
        try:
            moment.astimezone(UTC)
        except OverflowError:
            raise TimeRangeError(
                "not a usable dateTime (outside the years 0001-9999 once converted to UTC)"
            ) from None
