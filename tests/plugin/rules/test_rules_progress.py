"""W-PROGRESS-REPORT-DUE (R-E6): a progress report at least once every 10 treatment days,
counted from the plan of care's start or the last progress report.

The visit is sample_bundles/progress-report-due.json's (PT, 2025-03-04, plan from 2025-02-20);
each case replaces its visit history (Encounters) and documents and runs the whole pipeline
(FHIR mapping, visits, rules), as ``check`` does."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_mappings import map_bundle
from plugin.pipeline import check_record
from plugin.rules import analysis_to_json
from plugin.rules.catalogue import RuleId

SAMPLE = Path(__file__).resolve().parents[3] / "sample_bundles" / "progress-report-due.json"
PATIENT = "Patient/pat-noor-progress"
RULE = RuleId.W_PROGRESS_REPORT_DUE.value
PT = {"coding": [{"system": "http://snomed.info/sct", "code": "91251008"}]}
OT = {"text": "Occupational therapy"}
Json = dict[str, Any]


def _base() -> Json:
    data: Json = json.loads(SAMPLE.read_text(encoding="utf-8"))
    visit_encounter = "enc-noor-progress"
    data["entry"] = [
        e
        for e in data["entry"]
        if e["resource"]["resourceType"] not in ("Encounter", "DocumentReference")
        or e["resource"]["id"] == visit_encounter
    ]
    return data


def _encounter(n: int, day: str, kind: Json | None = PT, status: str = "finished") -> Json:
    resource: Json = {
        "resourceType": "Encounter",
        "id": f"h{n}",
        "status": status,
        "class": {"code": "AMB"},
        "subject": {"reference": PATIENT},
        "period": {"start": f"{day}T10:00:00-05:00", "end": f"{day}T10:40:00-05:00"},
    }
    if kind is not None:
        resource["serviceType"] = kind
    return {"resource": resource}


def _report(day: str, code: str = "11508-9", **more: Any) -> Json:
    return {
        "resource": {
            "resourceType": "DocumentReference",
            "id": f"doc-{code}-{day}",
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": PATIENT},
            "date": f"{day}T17:00:00-05:00",
            **more,
        }
    }


# nine PT treatment days before the visit of 2025-03-04, from the plan's start (2025-02-20)
NINE = [
    "2025-02-20",
    "2025-02-21",
    "2025-02-24",
    "2025-02-25",
    "2025-02-26",
    "2025-02-27",
    "2025-02-28",
    "2025-03-02",
    "2025-03-03",
]


def _findings(extra: list[Json], *, history: bool = True) -> list[Json]:
    data = _base()
    data["entry"] = data["entry"] + copy.deepcopy(extra)
    result = check_record(
        map_bundle(data), payer_rule="cms", pair_rule="cms", visit_history=history
    )
    (visit,) = analysis_to_json(result.analysis)["visits"]
    return [f for f in visit["findings"] if f["rule"] == RULE]


def _days(days: list[str], kind: Json | None = PT, start: int = 0) -> list[Json]:
    return [_encounter(start + i, d, kind) for i, d in enumerate(days)]


@pytest.mark.parametrize(
    ("extra", "due"),
    [
        # R-E6: the 10th treatment day (nine before + this visit) with no report
        (_days(NINE), True),
        # eight before: the visit is the 9th day
        (_days(NINE[1:]), False),
        # two encounters on one date are one treatment day (POLICY)
        ([*_days(NINE[1:]), _encounter(50, NINE[3])], False),
        # another discipline's days do not count for PT
        ([*_days(NINE[1:]), _encounter(50, "2025-03-01", OT)], False),
        # days before the plan of care's start (the episode's first day) do not count
        ([*_days(NINE[1:]), _encounter(50, "2025-02-19")], False),
        # a cancelled encounter is no treatment day
        ([*_days(NINE[1:]), _encounter(50, "2025-03-01", status="cancelled")], False),
        # an encounter whose discipline nothing names does not count
        ([*_days(NINE[1:]), _encounter(50, "2025-03-01", None)], False),
        # an encounter after the visit is not before it
        ([*_days(NINE[1:]), _encounter(50, "2025-03-05")], False),
        # the 12th day: still due
        (_days(NINE) + _days(["2025-03-01", "2025-02-23"], start=20), True),
    ],
    ids=[
        "tenth-day",
        "ninth-day",
        "same-day-once",
        "other-discipline",
        "before-plan",
        "cancelled",
        "unknown-discipline",
        "after-visit",
        "twelfth-day",
    ],
)
def test_treatment_days_are_counted_per_discipline_from_the_plan_start(
    extra: list[Json], due: bool
) -> None:
    assert bool(_findings(extra)) is due


@pytest.mark.parametrize(
    ("report", "due"),
    [
        # a PT progress note on the 5th day restarts the count: the visit is day 5 after it
        (_report("2025-02-26"), False),
        # the generic progress note (no discipline) counts for PT
        (_report("2025-02-26", "11506-3"), False),
        # an OT progress note does not end a PT reporting period
        (_report("2025-02-26", "11507-1"), True),
        # a consult note is not a progress report
        (_report("2025-02-26", "11488-4"), True),
        # a report before the plan of care belongs to an earlier episode
        (_report("2025-02-10"), True),
        # a report written after the visit does not cover it
        (_report("2025-03-05"), True),
        # withdrawn or unsigned: not a written report (POLICY)
        (_report("2025-02-26", status="entered-in-error"), True),
        (_report("2025-02-26", docStatus="preliminary"), True),
        # the date it covers (R4 context.period) wins over when it was filed
        (
            _report("2025-03-04", context={"period": {"start": "2025-02-20", "end": "2025-02-26"}}),
            False,
        ),
    ],
    ids=[
        "pt-report",
        "generic-report",
        "ot-report",
        "consult-note",
        "before-plan",
        "after-visit",
        "entered-in-error",
        "preliminary",
        "context-period",
    ],
)
def test_a_progress_report_restarts_the_count(report: Json, due: bool) -> None:
    assert bool(_findings([*_days(NINE), report])) is due


def test_a_report_on_the_tenth_day_itself_means_nothing_is_due() -> None:
    assert _findings([*_days(NINE), _report("2025-03-04")]) == []


def test_ten_days_after_the_last_report_are_due_again() -> None:
    after = ["2025-02-22", "2025-02-23", "2025-03-01"]
    (finding,) = _findings([*_days(NINE), *_days(after, start=30), _report("2025-02-20")])
    # the 12 days after 2025-02-20: 02-21 .. 03-04 less none = 12th treatment day
    assert "treatment day 12 since the last progress report (2025-02-20)" in finding["message"]
    assert "(it was due on 2025-03-02)" in finding["message"]
    assert "DocumentReference/doc-11508-9-2025-02-20" in finding["resources"]


def test_the_finding_names_the_day_the_plan_and_the_codes() -> None:
    (finding,) = _findings(_days(NINE))
    assert finding["severity"] == "warning"
    assert finding["codes"] == ["97140", "97530"]
    assert "CarePlan/cp-noor-progress" in finding["resources"]
    assert finding["message"].startswith(
        "2025-03-04 is PT treatment day 10 since the start of the plan of care (2025-02-20)"
    )


def test_without_the_visit_history_nothing_is_claimed_and_the_analysis_says_so() -> None:
    assert _findings(_days(NINE), history=False) == []
    data = _base()
    data["entry"] += _days(NINE)
    result = check_record(map_bundle(data), payer_rule="cms", pair_rule="cms", visit_history=False)
    assert result.analysis.visit_history is False
    assert check_record(map_bundle(data), payer_rule="cms", pair_rule="cms").analysis.visit_history


def test_history_days_are_read_from_the_procedures_of_other_visits_too() -> None:
    """In a bundle of several visits, each visit's date is a treatment day of its discipline;
    its encounter needs no serviceType then (the therapy services on it name the discipline)."""
    data = _base()
    # the visit's own Encounter without serviceType still counts once, through its services
    for entry in data["entry"]:
        if entry["resource"]["resourceType"] == "Encounter":
            entry["resource"].pop("serviceType", None)
    data["entry"] += _days(NINE)
    result = check_record(map_bundle(data), payer_rule="cms", pair_rule="cms")
    (visit,) = result.analysis.visits
    assert RULE in {f.rule.value for f in visit.findings}
