"""What the pages show of a visit: the recorded offset for clock labels, the same findings."""

from __future__ import annotations

import json
from datetime import timedelta, timezone

import pytest
from web_support import ROOT

from fhir_mappings import map_bundle
from plugin.pipeline import check_record
from plugin.rules import analysis_to_json
from plugin.web.timeline import build_timeline, render_svg
from plugin.web.visits import analyse_bundle, describe_zone, recorded_offset

BUNDLES = ROOT / "sample_bundles"


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (
            [
                {
                    "resourceType": "Procedure",
                    "performedPeriod": {"start": "2025-03-04T09:00:00-05:00"},
                }
            ],
            -300,
        ),
        (
            [
                {
                    "resourceType": "Procedure",
                    "occurrencePeriod": {"start": "2025-03-04T09:00:00+05:30"},
                }
            ],
            330,
        ),
        ([{"resourceType": "Procedure", "performedDateTime": "2025-03-04T09:00:00Z"}], 0),
        (
            [
                {"resourceType": "Encounter", "period": {"start": "2025-03-04T09:00:00-08:00"}},
                {
                    "resourceType": "Procedure",
                    "performedPeriod": {"start": "2025-03-04T09:00:00-05:00"},
                },
            ],
            -300,  # a Procedure's own offset wins over the Encounter's
        ),
        ([{"resourceType": "Procedure", "performedDateTime": "2025-03-04"}], None),
        ([{"resourceType": "Procedure", "performedPeriod": {"start": "not a date"}}], None),
    ],
)
def test_the_recorded_offset(resources: list[dict[str, object]], expected: int | None) -> None:
    tz = recorded_offset(resources)
    if expected is None:
        assert tz is None
    else:
        assert tz is not None
        assert tz.utcoffset(None) == timedelta(minutes=expected)


def test_zone_names() -> None:
    assert describe_zone(None) == "UTC"
    assert describe_zone(timezone(timedelta(hours=-5))) == "UTC\u221205:00"
    assert describe_zone(timezone(timedelta(hours=5, minutes=30))) == "UTC+05:30"


def test_labels_follow_the_offset_and_the_bars_do_not_move() -> None:
    bundle = json.loads((BUNDLES / "pair-no-modifier.json").read_text(encoding="utf-8"))
    result = check_record(map_bundle(bundle), payer_rule="cms", pair_rule="cms")
    [visit] = result.grouping.visits
    timeline = build_timeline(visit)
    utc, local = render_svg(timeline), render_svg(timeline, tz=timezone(timedelta(hours=-5)))
    assert "15:00Z" in utc
    assert "10:00" in local
    assert "Z<" not in local
    bars = [part.split('y="')[0] for part in utc.split('class="bar')[1:]]
    assert bars == [part.split('y="')[0] for part in local.split('class="bar')[1:]]


@pytest.mark.parametrize("name", ["overlapping-time-blocks.json", "short-services-6-plus-4.json"])
@pytest.mark.parametrize("payer", ["cms", "ama"])
def test_the_pages_show_the_findings_check_finds(name: str, payer: str) -> None:
    bundle = json.loads((BUNDLES / name).read_text(encoding="utf-8"))
    view = analyse_bundle(bundle, payer_rule=payer, pair_rule="cms")  # type: ignore[arg-type]
    result = check_record(map_bundle(bundle), payer_rule=payer, pair_rule="cms")  # type: ignore[arg-type]
    document = analysis_to_json(result.analysis)
    assert [sorted(f.rule for f in v.findings) for v in view.visits] == [
        sorted(f["rule"] for f in v["findings"]) for v in document["visits"]
    ]
    assert [dict(v.units) for v in view.visits] == [v["units"] for v in document["visits"]]


def _visit(day: str, offset: str, encounter: str) -> list[dict[str, object]]:
    """One PT visit of 97110 from 09:00 to 09:30 on ``day``, recorded in ``offset``."""
    subject = {"reference": "Patient/p1"}
    return [
        {
            "resourceType": "Encounter",
            "id": encounter,
            "status": "finished",
            "subject": subject,
            "period": {"start": f"{day}T09:00:00{offset}", "end": f"{day}T09:30:00{offset}"},
        },
        {
            "resourceType": "Procedure",
            "id": f"proc-{encounter}",
            "status": "completed",
            "subject": subject,
            "encounter": {"reference": f"Encounter/{encounter}"},
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97110"}]},
            "performedPeriod": {
                "start": f"{day}T09:00:00{offset}",
                "end": f"{day}T09:30:00{offset}",
            },
        },
    ]


def test_each_visit_is_drawn_in_its_own_recorded_clock() -> None:
    # US daylight saving began on 2025-03-09: a visit before it and one after it were both
    # at 09:00 on the clinic's clock, recorded at -05:00 and -04:00
    resources = [
        {"resourceType": "Patient", "id": "p1"},
        {
            "resourceType": "CarePlan",
            "id": "cp1",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/p1"},
            "category": [{"text": "Physical therapy"}],
        },
        *_visit("2025-03-07", "-05:00", "e1"),
        *_visit("2025-03-11", "-04:00", "e2"),
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
    view = analyse_bundle(bundle, payer_rule="cms", pair_rule="cms")
    zones = {v.date: v.time_zone for v in view.visits}
    assert zones == {"2025-03-07": "UTC\u221205:00", "2025-03-11": "UTC\u221204:00"}
    for visit in view.visits:  # both read 09:00, not one of them 08:00 or 10:00
        assert "09:00" in visit.svg
        assert "08:00" not in visit.svg
        assert "10:00" not in visit.svg
        assert visit.to_json()["timeZone"] == visit.time_zone
    assert view.time_zone == "UTC\u221205:00 / UTC\u221204:00"
    # the same rule as the audit report: recorded_offset of each visit's own resources
    assert [
        describe_zone(recorded_offset(_visit(d, o, "x")))
        for d, o in (("2025-03-07", "-05:00"), ("2025-03-11", "-04:00"))
    ] == list(zones.values())
