"""The engine and the contract's ``check --format json`` shape; the finding catalogue (I-6)."""

from __future__ import annotations

import json
import re
from datetime import date

from rules_builders import CODES, charge, svc, visit

from fhir_mappings.model import Discipline, SetAside, SetAsideReason, TimingKind, VisitGrouping
from plugin.rules import (
    CATALOGUE,
    RuleId,
    Severity,
    analysis_to_json,
    analyze,
    default_code_catalog,
)

I6_IDS = [
    "E-PAIR-NO-MODIFIER",
    "W-MODIFIER-ON-COL1",
    "E-PAIR-SAME-TIMEBLOCK",
    "W-OVERLAP",
    "W-MODIFIER-MISMATCH-XE",
    "W-MODIFIER-MISMATCH-XP",
    "W-MODIFIER-MISMATCH-XS",
    "W-59-WITH-X",
    "W-CODE-ZERO-UNITS",
    "W-MIN-UNDER-8",
    "I-TIE",
    "E-UNITS-EXCEED",
    "W-MISSING-END",
    "W-MISSING-START",
    "W-NO-DURATION",
    "W-SPANS-MIDNIGHT",
    "I-COMBINE-LINES",
    "E-GROUP-NOT-ONE-ON-ONE",
    "W-NO-PLAN-OF-CARE",
    "E-PLAN-NOT-ACTIVE",
    "E-PLAN-PERIOD",
    "W-RECERT-DUE",
    "W-NO-REASON",
    "W-DISCIPLINE-MODIFIER-MISSING",
    "I-IGNORED-STATUS",
    "I-OTHER-PTP",
]
# The product's own ids, after I-6 (issue 14: a visit without any charge line; issue 15: the
# progress-report interval, rule book R-E6).
PRODUCT_IDS = ["I-CHARGES-NOT-AVAILABLE", "W-PROGRESS-REPORT-DUE"]
PRODUCT_IDS += ["E-MUE-EXCEEDED"]  # issue 15: CMS data loaded by the user
PRODUCT_IDS += ["W-ASSISTANT-MODIFIER-MISSING", "W-ASSISTANT-MODIFIER-UNSUPPORTED"]  # R-G3


def test_catalogue_is_exactly_i6_then_the_product_ids() -> None:
    assert [r.value for r in CATALOGUE] == I6_IDS + PRODUCT_IDS
    assert [r.value for r in RuleId] == I6_IDS + PRODUCT_IDS


def test_catalogue_entries_are_complete() -> None:
    prefix = {Severity.ERROR: "E-", Severity.WARNING: "W-", Severity.INFO: "I-"}
    for rule, entry in CATALOGUE.items():
        assert entry.rule is rule
        assert rule.value.startswith(prefix[entry.severity]), rule
        assert entry.meaning
        assert "\n" not in entry.meaning
        assert entry.implements
        assert all(re.fullmatch(r"R-[A-H]\d+|I-\d(\.\d)?", i) for i in entry.implements), entry
        assert entry.sources
        assert all(re.fullmatch(r"S\d+[a-z]?", s) for s in entry.sources)
        assert entry.document


def test_pair_status_changers_match_i4() -> None:
    changers = {r.value for r, e in CATALOGUE.items() if e.changes_pair_status}
    assert changers == {
        "E-PAIR-NO-MODIFIER",
        "W-MODIFIER-ON-COL1",
        "E-PAIR-SAME-TIMEBLOCK",
        "W-MODIFIER-MISMATCH-XE",
        "W-MODIFIER-MISMATCH-XP",
        "W-MODIFIER-MISMATCH-XS",
    }


def _grouping() -> VisitGrouping:
    later = visit(
        svc("97110", 0, 20, ref="Procedure/late"),
        on=date(2025, 3, 5),
        charges=[charge("97110", 1, "GP")],
    )
    main = visit(
        svc("97140", 0, 10, ref="Procedure/p1"),
        svc("97530", 10, 15, ref="Procedure/p2", modifiers=["59"]),
        svc("97140", 25, 5, ref="Procedure/p3"),
        svc("97035", 30, 5, ref="Procedure/p4"),
        charges=[charge("97140", 1, "GP"), charge("97530", 1, "GP", "59")],
    )
    ot = visit(svc("97530", 0, 5, ref="Procedure/ot"), discipline=Discipline.OT)
    ignored = svc("97530", 0, 15, ref="Procedure/void", status="entered-in-error")
    undated = svc(
        "97110", None, None, ref="Procedure/undated", timing=TimingKind.NONE, service_date=None
    )
    return VisitGrouping(
        visits=(later, ot, main),
        set_aside=(
            SetAside(undated, SetAsideReason.NO_DATE),
            SetAside(ignored, SetAsideReason.IGNORED_STATUS),
        ),
    )


def test_json_shape_is_the_contract() -> None:
    doc = analysis_to_json(analyze(_grouping(), codes=CODES))
    assert list(doc) == ["visits", "findings"]
    assert [(v["date"], v["discipline"]) for v in doc["visits"]] == [
        ("2025-03-04", "OT"),
        ("2025-03-04", "PT"),
        ("2025-03-05", "PT"),
    ]
    main = doc["visits"][1]
    assert list(main) == [
        "patient",
        "date",
        "discipline",
        "payer_rule",
        "total_timed_minutes",
        "units",
        "allocations",
        "pair",
        "findings",
        "billed_units",  # issue 13 (added member)
        "payer_rule_reason",  # issue 15 (added member)
    ]
    assert main["patient"] == "Patient/P1"
    assert main["payer_rule"] == "cms"
    assert main["total_timed_minutes"] == 35
    assert main["units"] == {"97035": 0, "97140": 1, "97530": 1}, "0-unit codes are listed"
    assert main["allocations"] == [{"97035": 0, "97140": 1, "97530": 1}]
    assert main["pair"] == "SUPPORTED"
    for finding in main["findings"]:
        assert list(finding) == ["rule", "severity", "codes", "resources", "message"]
    assert [f["rule"] for f in main["findings"]] == ["W-CODE-ZERO-UNITS", "I-COMBINE-LINES"]
    assert [f["rule"] for f in doc["findings"]] == ["W-NO-DURATION", "I-IGNORED-STATUS"]
    assert doc["findings"][1]["resources"] == ["Procedure/void"]
    json.dumps(doc)


def test_output_is_deterministic_and_free_of_patient_ids() -> None:
    first = analysis_to_json(analyze(_grouping(), codes=CODES))
    grouping = _grouping()
    shuffled = VisitGrouping(
        visits=tuple(reversed(grouping.visits)), set_aside=tuple(reversed(grouping.set_aside))
    )
    assert analysis_to_json(analyze(shuffled, codes=CODES)) == first
    for v in first["visits"]:
        for f in v["findings"]:
            assert "Patient/" not in f["message"]


def test_ama_payer_rule_in_output() -> None:
    doc = analysis_to_json(analyze(_grouping(), payer_rule="ama", codes=CODES))
    assert {v["payer_rule"] for v in doc["visits"]} == {"ama"}
    ot = doc["visits"][0]
    # the OT 97530 (09:00-09:05) lies in the PT 97140 block (09:00-09:10): co-treatment in
    # one time block (R-D1, R-D3(2)), reported on the OT visit that holds column 2
    assert [f["rule"] for f in ot["findings"]] == ["E-PAIR-SAME-TIMEBLOCK", "W-MIN-UNDER-8"]
    assert ot["pair"] == "NOT_SUPPORTED"
    assert doc["visits"][1]["pair"] == "SUPPORTED", "the PT visit's own pair stands"


def test_default_code_catalog_agrees_on_the_codes_used_here() -> None:
    catalog = default_code_catalog()
    for code in ("97110", "97112", "97116", "97140", "97530", "97035"):
        assert catalog.is_timed(code), code
        assert catalog.is_one_on_one(code), code
    for code in ("97010", "97012", "97150", "97161", "97164", "G0283"):
        assert not catalog.is_timed(code), code
    assert analysis_to_json(analyze(_grouping())) == analysis_to_json(
        analyze(_grouping(), codes=CODES)
    )


def test_catalogue_markdown_lists_every_rule() -> None:
    from plugin.rules.catalogue import catalogue_markdown

    text = catalogue_markdown()
    assert text.count("\n") == len(I6_IDS) + len(PRODUCT_IDS) + 2
    for rule in I6_IDS + PRODUCT_IDS:
        assert f"| `{rule}` |" in text


def test_results_are_hashable_values() -> None:
    analysis = analyze(_grouping(), codes=CODES)
    assert len({hash(v) for v in analysis.visits}) == len(analysis.visits)
    tie = visit(svc("97112", 0, 20), svc("97110", 20, 20))
    findings = analyze(VisitGrouping(visits=(tie,)), codes=CODES).visits[0].findings
    assert len(set(findings)) == len(findings)


def test_set_aside_without_patient() -> None:
    lost = svc("97110", 0, 15, ref="Procedure/lost")
    analysis = analyze(
        VisitGrouping(visits=(), set_aside=(SetAside(lost, SetAsideReason.NO_PATIENT),)),
        codes=CODES,
    )
    (finding,) = analysis.findings
    assert (finding.rule, finding.facts.detail) == (RuleId.I_IGNORED_STATUS, "no-patient")
    assert analysis_to_json(analysis) == {
        "visits": [],
        "findings": [
            {
                "rule": "I-IGNORED-STATUS",
                "severity": "info",
                "codes": ["97110"],
                "resources": ["Procedure/lost"],
                "message": finding.message,
            }
        ],
    }


def test_cross_discipline_pair_is_noted_on_the_column_2_visit() -> None:
    # R-D1: NCCI edits apply across disciplines. Another edit than 97140/97530 (which is
    # checked in full as a co-treatment, tests/plugin/rules/test_rules_cotreatment.py) is noted
    # on the visit holding its column 2: 97530 (PT, column 1) with 97116 (OT, column 2).
    pt = visit(svc("97530", 0, 20, ref="Procedure/pt"), charges=[charge("97530", 1, "GP")])
    ot = visit(
        svc("97116", 30, 20, ref="Procedure/ot"),
        charges=[charge("97116", 1, "GO", ref="ServiceRequest/ot")],
        discipline=Discipline.OT,
    )
    analysis = analyze(VisitGrouping(visits=(pt, ot)), codes=CODES)
    ot_result, pt_result = analysis.visits
    assert ot_result.discipline is Discipline.OT
    note = [f for f in ot_result.findings if f.rule is RuleId.I_OTHER_PTP]
    assert len(note) == 1
    assert note[0].facts.detail == "cross-discipline"
    assert note[0].resources == (
        "Procedure/ot",
        "Procedure/pt",
        "ServiceRequest/ot",
        "ServiceRequest/sr-97530",
    )
    assert not [f for f in pt_result.findings if f.rule is RuleId.I_OTHER_PTP]
    assert ot_result.pair.status.value == "NOT_APPLICABLE"


def test_unattached_charges_of_timed_codes_are_top_level_exceed_findings() -> None:
    grouping = VisitGrouping(
        visits=(),
        unattached_charges=(charge("97530", 2, "GP"), charge("97161", 1), charge("97110", 0)),
    )
    analysis = analyze(grouping, codes=CODES)
    (finding,) = analysis.findings
    assert (finding.rule, finding.facts.detail) == (RuleId.E_UNITS_EXCEED, "unattached")
    assert (finding.facts.units_billed, finding.facts.units_allowed) == (2, 0)
    assert finding.resources == ("ServiceRequest/sr-97530",)
