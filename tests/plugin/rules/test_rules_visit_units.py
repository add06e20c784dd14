"""Visit-level minutes and units: attribution (R-F4, R-H10), I-2/I-3 findings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rules_builders import DOS, T0, charge, only, rules_of, run, svc, tz, visit

from fhir_mappings.model import TimingKind
from plugin.rules import Fix


@pytest.mark.parametrize(
    ("services", "expected_minutes", "source"),
    [
        (
            [svc("97140", 0, 10), svc("97530", 10, 15), svc("97140", 25, 5)],
            {"97140": 15, "97530": 15},
            "CMS modifier-59 Example 9 split block (S7): 10 + 5 min 97140 around 15 min 97530",
        ),
        (
            [svc("97140", 0, 15), svc("97530", 15, 15)],
            {"97140": 15, "97530": 15},
            "R-H10: touching intervals (end == next start) do not overlap",
        ),
        (
            [svc("97140", 0, 20), svc("97530", 10, 20)],
            {"97140": 20, "97530": 10},
            "R-F4 POLICY: 97140/97530 overlap goes to 97140 (column 1) only",
        ),
        (
            [svc("97110", 0, 20), svc("97112", 10, 20)],
            {"97110": 10, "97112": 10},
            "R-F4 POLICY: other one-on-one overlaps are removed from both codes",
        ),
        (
            [svc("97110", 0, 20), svc("97110", 10, 20, ref="Procedure/b")],
            {"97110": 30},
            "R-B8 + R-F4: same code overlapping itself counts the shared time once",
        ),
        (
            [svc("97110", 0, 20), svc("97010", 0, 20), svc("97530", 20, 10)],
            {"97110": 20, "97530": 10},
            "R-F3: a supervised modality (97010, untimed) may overlap; untimed minutes excluded",
        ),
        (
            [svc("97140", 0, 30), svc("97530", 0, 30), svc("97110", 10, 10)],
            {"97140": 20, "97530": 0, "97110": 0},
            "R-F4 POLICY: three-way overlap goes to nobody; pair-only time to 97140",
        ),
        (
            [svc("97110", 0, 10), svc("97110", 40, 10, ref="Procedure/later")],
            {"97110": 20},
            "R-B8: the same code twice on one day, minutes summed",
        ),
        (
            [
                svc("97110", start=T0, end=T0 + timedelta(minutes=7, seconds=40)),
                svc(
                    "97110",
                    start=T0 + timedelta(minutes=30),
                    end=T0 + timedelta(minutes=30, seconds=25),
                    ref="Procedure/b",
                ),
            ],
            {"97110": 8},
            "R-H10: seconds summed per code, then floored (460 s + 25 s = 8 min)",
        ),
    ],
)
def test_attributed_minutes(services: list, expected_minutes: dict[str, int], source: str) -> None:
    analysis = run(visit(*services))
    assert dict(analysis.minutes) == dict(sorted(expected_minutes.items())), source


def test_offsets_that_hide_an_overlap() -> None:
    # 10:00-05:00 is 15:00Z; 16:10+01:00 is 15:10Z: the local clocks look 6 hours apart.
    a = svc(
        "97110",
        at=None,
        start=T0.replace(hour=10, minute=0, tzinfo=tz(-5)),
        end=T0.replace(hour=10, minute=20, tzinfo=tz(-5)),
    )
    b = svc(
        "97112",
        at=None,
        start=T0.replace(hour=16, minute=10, tzinfo=tz(1)),
        end=T0.replace(hour=16, minute=30, tzinfo=tz(1)),
    )
    analysis = run(visit(a, b))
    assert dict(analysis.minutes) == {"97110": 10, "97112": 10}
    overlap = only(analysis, "W-OVERLAP")
    assert overlap.facts.minutes == 10
    assert overlap.facts.minutes_kept_by is None


def test_overlap_finding_for_pair_names_the_code_that_keeps_minutes() -> None:
    analysis = run(visit(svc("97140", 0, 20), svc("97530", 10, 20)))
    overlap = only(analysis, "W-OVERLAP")
    assert overlap.codes == ("97140", "97530")
    assert overlap.facts.minutes_kept_by == "97140"
    assert "97140 only" in overlap.message


@pytest.mark.parametrize(
    ("minutes", "payer_rule", "expected", "source"),
    [
        ([("97110", 7)], "cms", ["W-MIN-UNDER-8"], "R-B3 boundary: 7 min total"),
        ([("97110", 8)], "cms", [], "R-B3 boundary: 8 min total bills 1 unit"),
        (
            [("97110", 4), ("97140", 3)],
            "cms",
            ["W-MIN-UNDER-8"],
            "I-3: total < 8, only W-MIN-UNDER-8",
        ),
        ([("97110", 4), ("97140", 4)], "cms", ["I-TIE"], "R-B5: 4 + 4 = 8, one unit, tie"),
        (
            [("97110", 33), ("97140", 7)],
            "cms",
            [],
            "CMS Example 3: 7 min 97140 gets a unit, no warning",
        ),
        (
            [("97110", 18), ("97140", 13), ("97116", 10), ("97035", 8)],
            "cms",
            ["W-CODE-ZERO-UNITS"],
            "CMS Example 4: ultrasound documented but 0 units (R-B7)",
        ),
        (
            [("97110", 7), ("97140", 7)],
            "ama",
            ["W-MIN-UNDER-8", "W-MIN-UNDER-8"],
            "R-C2 AMA per code",
        ),
        ([("97110", 8), ("97140", 7)], "ama", ["W-MIN-UNDER-8"], "R-C2 AMA: 8 is a unit, 7 is not"),
        (
            [("97110", 18), ("97140", 13), ("97116", 10), ("97035", 8)],
            "ama",
            [],
            "R-C2: never W-CODE-ZERO-UNITS under AMA",
        ),
    ],
)
def test_threshold_findings(
    minutes: list[tuple[str, int]], payer_rule: str, expected: list[str], source: str
) -> None:
    services = []
    at = 0
    for code, m in minutes:
        services.append(svc(code, at, m))
        at += m
    analysis = run(visit(*services), payer_rule=payer_rule)  # type: ignore[arg-type]
    found = [r for r in rules_of(analysis) if r in {"W-MIN-UNDER-8", "W-CODE-ZERO-UNITS", "I-TIE"}]
    assert found == expected, source


def test_zero_units_after_attribution_uses_raw_minutes() -> None:
    # 97530 fully inside 97140: raw 10 minutes, attributed 0 -> still W-CODE-ZERO-UNITS (I-3).
    analysis = run(visit(svc("97140", 0, 30), svc("97530", 5, 10)))
    assert dict(analysis.minutes) == {"97140": 30, "97530": 0}
    assert dict(analysis.units) == {"97140": 2, "97530": 0}
    zero = only(analysis, "W-CODE-ZERO-UNITS")
    assert zero.codes == ("97530",)
    assert (zero.facts.minutes, zero.facts.raw_minutes) == (0, 10)


def test_tie_reports_every_allocation_and_billed_choice_is_reported_as_units() -> None:
    services = [svc("97112", 0, 20), svc("97110", 20, 20)]
    plain = run(visit(*services))
    tie = only(plain, "I-TIE")
    assert tie.codes == ("97110", "97112")
    assert [dict(a) for a in tie.facts.allocations] == [
        {"97110": 2, "97112": 1},
        {"97110": 1, "97112": 2},
    ]
    billed = run(visit(*services, charges=[charge("97112", 2, "GP"), charge("97110", 1, "GP")]))
    assert dict(billed.units) == {"97110": 1, "97112": 2}
    assert "E-UNITS-EXCEED" not in rules_of(billed)


def test_example_2_billing_three_units_of_one_code_exceeds() -> None:
    services = [svc("97112", 0, 20), svc("97110", 20, 20)]
    analysis = run(visit(*services, charges=[charge("97112", 3, "GP")]))
    exceed = only(analysis, "E-UNITS-EXCEED")
    assert exceed.facts.detail == "code"
    assert (exceed.facts.units_billed, exceed.facts.units_allowed) == (3, 2)
    assert exceed.fixes == (
        Fix(line_code="97112", charge_refs=("ServiceRequest/sr-97112",), set_units=2),
    )


def test_total_exceed_when_each_code_is_within_its_own_maximum() -> None:
    # CMS Example 2: "Do not bill 3 units for either one" - and not 2 + 2 either.
    services = [svc("97112", 0, 20), svc("97110", 20, 20)]
    analysis = run(visit(*services, charges=[charge("97112", 2, "GP"), charge("97110", 2, "GP")]))
    exceed = only(analysis, "E-UNITS-EXCEED")
    assert exceed.facts.detail == "total"
    assert (exceed.facts.units_billed, exceed.facts.units_allowed) == (4, 3)
    assert exceed.codes == ("97110", "97112")
    assert len(exceed.fixes) == 1


def test_billed_units_from_services_when_no_charge() -> None:
    analysis = run(visit(svc("97530", 0, 22, billed_units=2, modifiers=["GP"])))
    exceed = only(analysis, "E-UNITS-EXCEED")
    assert (exceed.facts.units_billed, exceed.facts.units_allowed) == (2, 1)
    assert exceed.fixes[0].charge_refs == ("Procedure/97530-0",)


def test_charges_take_precedence_over_service_billed_units() -> None:
    v = visit(svc("97530", 0, 22, billed_units=5), charges=[charge("97530", 1, "GP")])
    assert "E-UNITS-EXCEED" not in rules_of(run(v))


def test_billed_code_without_documented_minutes_exceeds() -> None:
    v = visit(svc("97110", 0, 20), charges=[charge("97110", 1, "GP"), charge("97530", 1, "GP")])
    exceed = only(run(v), "E-UNITS-EXCEED")
    assert exceed.codes == ("97530",)
    assert exceed.facts.units_allowed == 0


def test_cancelled_charges_are_not_billed() -> None:
    v = visit(svc("97110", 0, 20), charges=[charge("97110", 4, "GP", status="revoked")])
    assert "E-UNITS-EXCEED" not in rules_of(run(v))


def test_ama_units_per_code_and_exceed() -> None:
    v = visit(
        svc("97112", 0, 24), svc("97110", 24, 23), charges=[charge("97112", 2), charge("97110", 2)]
    )
    analysis = run(v, payer_rule="ama")
    assert dict(analysis.units) == {"97110": 2, "97112": 2}
    assert analysis.units_allowed_total == 4
    assert "E-UNITS-EXCEED" not in rules_of(analysis)
    cms = run(v)
    assert cms.units_allowed_total == 3
    exceed = only(cms, "E-UNITS-EXCEED")  # CMS Example 1: 97110 gets 1 unit, not 2
    assert (exceed.codes, exceed.facts.detail) == (("97110",), "code")


def test_same_code_twice_combines_lines() -> None:
    v = visit(
        svc("97110", 0, 10),
        svc("97110", 40, 10, ref="Procedure/b"),
        charges=[
            charge("97110", 1, "GP", ref="ServiceRequest/a"),
            charge("97110", 1, "GP", ref="ServiceRequest/b"),
        ],
    )
    analysis = run(v)
    combine = only(analysis, "I-COMBINE-LINES")
    assert combine.resources == ("Procedure/97110-0", "Procedure/b")
    assert (combine.facts.minutes, combine.facts.units_allowed) == (20, 1)
    assert combine.fixes == (
        Fix(line_code="97110", charge_refs=("ServiceRequest/a", "ServiceRequest/b"), set_units=1),
    )
    assert only(analysis, "E-UNITS-EXCEED").facts.units_billed == 2


@pytest.mark.parametrize(
    ("kwargs", "source"),
    [
        ({"group": True}, "R-H8: therapy-delivery-mode = group"),
        ({"subject_is_group": True}, "R-H8: Procedure.subject is a Group"),
    ],
)
def test_group_delivery_of_one_on_one_code(kwargs: dict[str, bool], source: str) -> None:
    v = visit(
        svc("97530", 0, 30, **kwargs), svc("97110", 30, 10), charges=[charge("97530", 2, "GP")]
    )
    analysis = run(v)
    group = only(analysis, "E-GROUP-NOT-ONE-ON-ONE")
    assert group.codes == ("97530",), source
    assert group.fixes == (
        Fix(
            line_code="97530",
            charge_refs=("ServiceRequest/sr-97530",),
            set_units=1,
            replace_code="97150",
        ),
    )
    assert dict(analysis.units) == {"97110": 1}, "group minutes excluded (I-2.6)"
    assert "W-CODE-ZERO-UNITS" not in rules_of(analysis), "I-3: removed codes never get it"
    assert only(analysis, "E-UNITS-EXCEED").codes == ("97530",)


def test_group_code_present_suggests_dropping_the_line() -> None:
    v = visit(svc("97530", 0, 30, group=True), svc("97150", 0, 30))
    group = only(run(v), "E-GROUP-NOT-ONE-ON-ONE")
    assert group.fixes[0].replace_code is None
    assert group.fixes[0].set_units == 0


def test_group_session_billed_as_97150_only_is_not_flagged() -> None:
    """The group suggestion accepted: 97150 billed, the one-on-one code not billed (R-F2)."""
    v = visit(svc("97530", 0, 30, group=True), charges=[charge("97150", 1, "GP")])
    analysis = run(v)
    assert "E-GROUP-NOT-ONE-ON-ONE" not in rules_of(analysis)
    assert dict(analysis.units) == {}, "group minutes stay out of the timed total"
    both = visit(
        svc("97530", 0, 30, group=True), charges=[charge("97150", 1, "GP"), charge("97530", 2)]
    )
    group = only(run(both), "E-GROUP-NOT-ONE-ON-ONE")
    assert group.fixes == (
        Fix(line_code="97530", charge_refs=("ServiceRequest/sr-97530",), set_units=0),
    )


@pytest.mark.parametrize(
    ("service", "expected", "source"),
    [
        (svc("97530", 0, None), "W-MISSING-END", "I-2.3: period without end"),
        (
            svc("97530", None, None, end=T0 + timedelta(minutes=20)),
            "W-MISSING-START",
            "I-2.3: period without start",
        ),
        (
            svc("97530", None, None, start=T0, timing=TimingKind.INSTANT),
            "W-NO-DURATION",
            "I-2.3: dateTime only",
        ),
        (svc("97530", None, None, timing=TimingKind.DATE), "W-NO-DURATION", "R-H2: date only"),
        (
            svc("97530", None, None, start=T0, end=T0 - timedelta(minutes=5)),
            "W-NO-DURATION",
            "R-H10 per-1: end before start",
        ),
        (
            svc(
                "97530",
                None,
                None,
                start=T0.replace(hour=23, minute=50, tzinfo=tz(-5)),
                end=T0.replace(day=5, hour=0, minute=10, tzinfo=tz(-5)),
                spans_midnight=True,
            ),
            "W-SPANS-MIDNIGHT",
            "I-2.4: crosses local midnight, kept on the start date",
        ),
    ],
)
def test_timing_findings(service: object, expected: str, source: str) -> None:
    analysis = run(visit(service))  # type: ignore[arg-type]
    assert expected in rules_of(analysis), source


def test_midnight_minutes_stay_whole_on_start_date() -> None:
    service = svc(
        "97110",
        None,
        None,
        start=T0.replace(hour=23, minute=50, tzinfo=tz(-5)),
        end=T0.replace(day=5, hour=0, minute=15, tzinfo=tz(-5)),
        spans_midnight=True,
    )
    analysis = run(visit(service))
    assert analysis.date == DOS
    assert dict(analysis.units) == {"97110": 2}


def test_service_without_duration_adds_no_minutes_and_no_unit_row() -> None:
    analysis = run(visit(svc("97110", 0, 20), svc("97530", 0, None)))
    assert dict(analysis.units) == {"97110": 1}
    assert analysis.total_timed_minutes == 20


@pytest.mark.parametrize(
    ("minutes", "expected_units", "source"),
    [
        (7, 0, "R-B3 boundary 7/8"),
        (8, 1, "R-B3 boundary 7/8"),
        (22, 1, "R-B3 boundary 22/23"),
        (23, 2, "R-B3 boundary 22/23"),
        (37, 2, "R-B3 boundary 37/38"),
        (38, 3, "R-B3 boundary 37/38"),
    ],
)
def test_single_code_boundaries_through_the_engine(
    minutes: int, expected_units: int, source: str
) -> None:
    for payer_rule in ("cms", "ama"):
        analysis = run(visit(svc("97530", 0, minutes)), payer_rule=payer_rule)  # type: ignore[arg-type]
        assert dict(analysis.units) == {"97530": expected_units}, (source, payer_rule)


def test_touching_intervals_raise_no_overlap() -> None:
    analysis = run(visit(svc("97110", 0, 15), svc("97112", 15, 15)))
    assert "W-OVERLAP" not in rules_of(analysis)
