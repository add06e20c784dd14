"""Recorded times no visit can have (issue 17, items 1 and 8): a mapping issue, never an exception.

Dates before 1900 or after 2200, and one service lasting more than 24 hours, are refused: the
value is not used (start and end None, timing IMPLAUSIBLE) and a MappingIssue says which field and
why; the rules turn the service into a W-NO-DURATION finding (detail ``implausible``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from fhir_builders import bundle, care_plan, encounter, procedure

from fhir_mappings import IssueCode, TimingKind, map_bundle, map_cds_hooks
from fhir_mappings.times import TimeRangeError, parse_text
from plugin.pipeline import check_record
from plugin.rules import RuleId

VERSIONS = ("R4", "R5")


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+14:00"]
)
def test_a_dateTime_with_no_utc_instant_is_a_range_error_not_an_overflow(value: str) -> None:
    # The reproduction: 0001-01-01T00:00:00+05:00 is valid FHIR, but 5 hours before year 1 in UTC.
    with pytest.raises(TimeRangeError) as caught:
        parse_text(value)
    assert value not in str(caught.value)  # the message never repeats the value


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("0001-01-01T00:00:00-05:00", datetime(1, 1, 1, 5, 0, tzinfo=UTC)),
        ("9999-12-31T23:59:59+00:00", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("9999-12-31T12:00:00+05:00", datetime(9999, 12, 31, 7, 0, tzinfo=UTC)),
    ],
)
def test_edge_years_that_do_convert_to_utc_are_still_read(value: str, utc: datetime) -> None:
    assert parse_text(value).utc() == utc


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("shape", "kwargs", "field", "day"),
    [
        (
            "start in year 1 at +05:00 (the reproduction)",
            {"start": "0001-01-01T00:00:00+05:00"},
            "Period.start",
            date(2025, 3, 4),  # from the end, which is a usable time
        ),
        (
            "end on 9999-12-31 (the reproduction)",
            {"end": "9999-12-31T23:59:59+00:00"},
            "Period.end",
            date(2025, 3, 4),
        ),
        ("start before 1900", {"start": "1899-12-31T09:00:00-05:00"}, "Period.start", None),
        ("end after 2200", {"end": "2201-01-01T00:00:00Z"}, "Period.end", date(2025, 3, 4)),
        ("dateTime in year 1", {"date_time": "0001-01-01T00:00:00+05:00"}, "DateTime", None),
        ("date-only dateTime after 2200", {"date_time": "2500-01-01"}, "DateTime", None),
        (
            "one service over 24 hours",
            {"start": "2025-03-04T09:00:00-05:00", "end": "2025-03-05T09:00:01-05:00"},
            "Period",
            date(2025, 3, 4),
        ),
    ],
)
def test_a_time_no_visit_can_have_is_a_mapping_issue_and_never_used(
    version: str, shape: str, kwargs: dict[str, Any], field: str, day: date | None
) -> None:
    record = map_bundle(bundle(encounter(version), procedure(version, **kwargs)))
    (service,) = record.services
    assert service.timing is TimingKind.IMPLAUSIBLE, shape
    assert (service.start, service.end, service.minutes, service.spans_midnight) == (
        None,
        None,
        None,
        False,
    )
    # the date of service comes from a usable end, else from the encounter (2025-03-04)
    assert service.service_date == (day or date(2025, 3, 4))
    (issue,) = record.issues
    prefix = "performed" if version == "R4" else "occurrence"
    assert issue.field == prefix + field
    assert issue.resource == "Procedure/p1"
    assert issue.code is IssueCode.VALUE_NOT_USED
    assert "the value is not used" in issue.message or "not used" in issue.message
    for value in kwargs.values():  # the message never repeats the value
        assert value not in issue.message


def test_plausible_edges_are_kept() -> None:
    record = map_bundle(
        bundle(
            encounter(),
            procedure(id="a", start="1900-01-01T09:00:00Z", end="1900-01-02T09:00:00Z"),
            procedure(id="b", start="2200-12-31T00:00:00Z", end="2200-12-31T00:20:00Z"),
        )
    )
    assert record.issues == ()
    assert [s.timing for s in record.services] == [TimingKind.PERIOD, TimingKind.PERIOD]
    assert [s.minutes for s in record.services] == [24 * 60, 20]


def test_encounter_and_care_plan_times_out_of_range_do_not_raise() -> None:
    record = map_bundle(
        bundle(
            encounter(start="0001-01-01T00:00:00+05:00", end="9999-12-31T23:59:59-01:00"),
            # a plan's open end written as 9999-12-31 (date only) is still read as its end
            care_plan(start="0001-01-01T00:00:00+05:00", end="9999-12-31"),
            procedure(),
        )
    )
    fields = sorted((issue.resource, issue.field) for issue in record.issues)
    assert fields == [
        ("CarePlan/CP1", "period.start"),
        ("Encounter/E1", "period.end"),
        ("Encounter/E1", "period.start"),
    ]
    assert record.plans["CarePlan/CP1"].end == date(9999, 12, 31)
    assert record.encounters["Encounter/E1"].service_date is None
    assert [s.timing for s in record.services] == [TimingKind.PERIOD]


def test_a_refused_value_is_not_served_from_the_cache_to_a_visit_time() -> None:
    # The same text read first as a plan date (kept) then as a service time (refused).
    text = "1850-01-01"
    record = map_bundle(
        bundle(care_plan(start=text, end="2025-12-31"), procedure(date_time=text, encounter=None))
    )
    assert record.plans["CarePlan/CP1"].start == date(1850, 1, 1)
    assert [issue.resource for issue in record.issues] == ["Procedure/p1"]


def test_the_rules_report_the_refused_service_as_a_finding() -> None:
    record = map_bundle(
        bundle(
            encounter(),
            care_plan(),
            procedure(id="p1", code="97110", end="9999-12-31T23:59:59+00:00"),
            procedure(
                id="p2",
                code="97530",
                start="2025-03-04T10:00:00-05:00",
                end="2025-03-04T10:20:00-05:00",
            ),
        )
    )
    result = check_record(record, payer_rule="cms", pair_rule="cms")
    (visit,) = result.analysis.visits
    refused = [f for f in visit.findings if f.resources == ("Procedure/p1",)]
    assert [(f.rule, f.facts.detail) for f in refused] == [(RuleId.W_NO_DURATION, "implausible")]
    assert "outside what a visit can be" in refused[0].message
    assert visit.minutes == {"97530": 20}


def test_through_a_cds_hooks_request() -> None:
    proc = procedure(start="0001-01-01T00:00:00+05:00")
    prefetch = {
        "encounter": encounter(),
        "procedures": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": proc}],
        },
    }
    record = map_cds_hooks(None, prefetch, patient_id="P1")
    assert [s.timing for s in record.services] == [TimingKind.IMPLAUSIBLE]
