"""FHIR date/dateTime parsing (R-H10, I-2.4): every shape, and the three fhir.resources types."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from fhir_mappings.times import Precision, TimeFormatError, parse_time


@pytest.mark.parametrize(
    ("shape", "value", "precision", "utc", "day", "assumed_utc"),
    [
        (
            "Z offset",
            "2025-03-04T14:00:00Z",
            Precision.TIME,
            datetime(2025, 3, 4, 14, 0, tzinfo=UTC),
            date(2025, 3, 4),
            False,
        ),
        (
            "+01:00 offset (HL7 f201)",
            "2013-01-28T13:31:00+01:00",
            Precision.TIME,
            datetime(2013, 1, 28, 12, 31, tzinfo=UTC),
            date(2013, 1, 28),
            False,
        ),
        (
            "-05:00 late evening keeps local date",
            "2025-03-04T23:30:00-05:00",
            Precision.TIME,
            datetime(2025, 3, 5, 4, 30, tzinfo=UTC),
            date(2025, 3, 4),
            False,
        ),
        (
            "+14:00 early morning keeps local date",
            "2025-03-04T00:30:00+14:00",
            Precision.TIME,
            datetime(2025, 3, 3, 10, 30, tzinfo=UTC),
            date(2025, 3, 4),
            False,
        ),
        (
            "milliseconds (HAPI .000Z)",
            "2025-03-04T09:00:00.000Z",
            Precision.TIME,
            datetime(2025, 3, 4, 9, 0, tzinfo=UTC),
            date(2025, 3, 4),
            False,
        ),
        (
            "nanoseconds truncated",
            "2025-03-04T09:00:00.123456789+00:00",
            Precision.TIME,
            datetime(2025, 3, 4, 9, 0, 0, 123456, tzinfo=UTC),
            date(2025, 3, 4),
            False,
        ),
        (
            "no offset: invalid FHIR, read as UTC",
            "2025-03-04T09:00:00",
            Precision.TIME,
            datetime(2025, 3, 4, 9, 0, tzinfo=UTC),
            date(2025, 3, 4),
            True,
        ),
        ("date only", "2025-03-04", Precision.DAY, None, date(2025, 3, 4), False),
        ("year-month", "2025-03", Precision.MONTH, None, None, False),
        ("year", "2025", Precision.YEAR, None, None, False),
    ],
)
def test_fhir_datetime_shapes(
    shape: str,
    value: str,
    precision: Precision,
    utc: datetime | None,
    day: date | None,
    assumed_utc: bool,
) -> None:
    moment = parse_time(value)
    assert moment is not None, shape
    assert moment.precision is precision
    assert moment.utc() == utc
    assert moment.day == day
    assert moment.assumed_utc is assumed_utc


@pytest.mark.parametrize(
    ("shape", "value"),
    [
        ("free text", "yesterday"),
        ("impossible day", "2025-02-30"),
        ("hour 24", "2025-03-04T24:00:00Z"),
        ("month 13", "2025-13"),
        ("time without seconds", "2025-03-04T09:00Z"),
        ("a number", 20250304),
        ("a list", ["2025-03-04"]),
    ],
)
def test_not_a_fhir_datetime(shape: str, value: object) -> None:
    with pytest.raises(TimeFormatError) as info:
        parse_time(value)
    assert str(value) not in str(info.value), f"{shape}: the message must not echo the value"


@pytest.mark.parametrize(
    ("source", "value", "precision", "day"),
    [
        (
            "fhir.resources aware datetime",
            datetime(2025, 3, 4, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
            Precision.TIME,
            date(2025, 3, 4),
        ),
        ("fhir.resources date", date(2025, 3, 4), Precision.DAY, date(2025, 3, 4)),
        ("fhir.resources partial date str", "2025-03", Precision.MONTH, None),
        ("naive datetime", datetime(2025, 3, 4, 9, 0), Precision.TIME, date(2025, 3, 4)),
    ],
)
def test_fhir_resources_value_types(
    source: str, value: object, precision: Precision, day: date | None
) -> None:
    moment = parse_time(value)
    assert moment is not None, source
    assert moment.precision is precision
    assert moment.day == day


def test_none_is_absent() -> None:
    assert parse_time(None) is None
