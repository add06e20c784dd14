"""The rule engine: a visit grouping in, an :class:`Analysis` out, and its JSON form.

``analyze`` runs, per visit (one patient, date of service and discipline; R-B2, R-B2a):
timing findings (I-2.3, I-2.4), group exclusion, attribution and units (I-2.6..I-3), the
97140/97530 pair (I-4), other PTP edits and the plan-of-care flags (I-5); a visit without any
charge line gets I-CHARGES-NOT-AVAILABLE instead of claims about what was billed (issue 14).
Services the mappers set aside become top-level findings (I-2.1), and so do billed charges of
timed codes that no visit could take (E-UNITS-EXCEED, nothing documented supports them).
Everything is deterministic: visits sorted by patient, date and discipline; findings by
severity, rule id, codes and resources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir_mappings.model import (
    Charge,
    Discipline,
    SetAside,
    SetAsideReason,
    TherapyVisit,
    VisitGrouping,
    fast_builder,
)
from plugin.rules.catalogue import RuleId
from plugin.rules.code_catalog import CodeCatalog, default_code_catalog
from plugin.rules.counts import CodeCounts
from plugin.rules.findings import (
    Finding,
    make_finding,
    new_finding_facts,
    new_fix,
    sort_findings,
)
from plugin.rules.pair import (
    PairResult,
    PairRule,
    cross_discipline_ptp_findings,
    evaluate_pair,
    other_ptp_findings,
    pair_edit,
)
from plugin.rules.payer import PayerDecision
from plugin.rules.plan import review_plan_of_care
from plugin.rules.ptp import PtpTable, default_ptp_table
from plugin.rules.timing import timing_findings
from plugin.rules.units import Allocation, PayerRule, assess_units, plural_units
from plugin.rules.view import VisitView, visit_view


@dataclass(frozen=True, slots=True)
class VisitAnalysis:
    """The outcome for one visit (one entry of the contract's ``visits``)."""

    patient: str
    date: date
    discipline: Discipline
    payer_rule: PayerRule
    pair_rule: PairRule
    total_timed_minutes: int
    raw_minutes: CodeCounts  # documented minutes per timed code, before attribution
    minutes: CodeCounts  # attributed minutes per timed code
    units: Allocation  # one acceptable allocation (the billed one when acceptable)
    allocations: tuple[Allocation, ...]  # every acceptable allocation
    units_allowed_total: int
    pair: PairResult
    findings: tuple[Finding, ...]
    unverified_plan_refs: tuple[str, ...] = ()
    # Added for issue 13 (additive, defaulted): billed units per timed code (see
    # :func:`billed_units_of`); None when no charge line could be read for the visit.
    billed_units: CodeCounts | None = None
    # Added for issue 15 (additive, defaulted): why ``payer_rule`` applies to this visit
    # ("Medicare Part B coverage → CMS 8-minute rule"; plugin/rules/payer.py). Plain text.
    payer_rule_reason: str = ""


@dataclass(frozen=True, slots=True)
class CodeBilling:
    """One timed code of a visit: units billed, units allowed, and billed minus allowed."""

    code: str
    billed: int
    allowed: int

    @property
    def difference(self) -> int:
        """Positive: over-billed by that many units; negative: under-billed."""
        return self.billed - self.allowed


def billed_units_of(view: VisitView) -> CodeCounts | None:
    """Units billed per timed code of the visit, from its charges (ServiceRequests, Claim/EOB
    items) or its services' billed units (I-3, :func:`~plugin.rules.billing.billing_lines`).

    None when the visit holds no charge line at all (I-CHARGES-NOT-AVAILABLE): nothing says
    what was billed, so no 0 is invented. Otherwise a timed code with a billing line that states
    its units gets them; a timed code nothing bills on the visit (no charge, no billed units,
    no modifier) gets 0; a code whose billing line states no units (a charge without a
    quantity) is left out: its billed units are not known.
    """
    if not view.visit.charge_lines_read:
        return None
    billed: dict[str, int] = {}
    for code, line in view.lines.items():  # sorted by code
        if code not in view.timed_codes:
            continue
        if line.billed_units is not None:
            billed[code] = line.billed_units
        elif not line.has_billing:
            billed[code] = 0
    return CodeCounts.from_sorted(billed)


def billed_vs_allowed(visit: VisitAnalysis) -> tuple[CodeBilling, ...] | None:
    """Per timed code, billed and allowed units and their difference (the one definition
    ``check``, ``visits.csv`` and the audit report use). Allowed units are :attr:`units` (the
    billed allocation when it is acceptable). Codes: every timed code whose billed units are
    known (see :func:`billed_units_of`), sorted. None when no charge line was read."""
    billed = visit.billed_units
    if billed is None:
        return None
    rows = []
    for code in sorted(billed.keys() | visit.units.keys()):
        count = billed.get(code)
        if count is None:  # billed, but the number of units is not stated
            continue
        rows.append(CodeBilling(code, count, visit.units.get(code, 0)))
    return tuple(rows)


def over_under_billed(billing: Sequence[CodeBilling]) -> tuple[int, int]:
    """(units over-billed, units under-billed) of a visit: its positive differences summed,
    and its negative ones (as a positive number)."""
    over = under = 0
    for line in billing:
        if line.difference > 0:
            over += line.difference
        else:
            under -= line.difference
    return over, under


_new_visit_analysis = fast_builder(VisitAnalysis)


@dataclass(frozen=True, slots=True)
class Analysis:
    """Every visit of an input, plus findings not tied to a visit."""

    visits: tuple[VisitAnalysis, ...]
    findings: tuple[Finding, ...]
    payer_rule: PayerRule
    pair_rule: PairRule
    ptp_version: str


def analyze_visit(
    visit: TherapyVisit,
    *,
    payer_rule: PayerRule = "cms",
    pair_rule: PairRule = "cms",
    ptp: PtpTable | None = None,
    codes: CodeCatalog | None = None,
    same_day: Sequence[TherapyVisit] = (),
) -> VisitAnalysis:
    """All rules for one visit (I-2 .. I-5).

    ``same_day``: the patient's other visits on the same date (other disciplines), for the
    cross-discipline PTP note (R-D1).
    """
    table = ptp if ptp is not None else default_ptp_table()
    catalog = codes if codes is not None else default_code_catalog()
    others = [visit_view(o, catalog) for o in same_day if o is not visit]
    return _analyze_view(
        visit_view(visit, catalog), others, payer_rule=payer_rule, pair_rule=pair_rule, ptp=table
    )


def _analyze_view(
    view: VisitView,
    same_day: Sequence[VisitView],
    *,
    payer_rule: PayerRule,
    pair_rule: PairRule,
    ptp: PtpTable,
    payer_rule_reason: str = "",
) -> VisitAnalysis:
    """:func:`analyze_visit` on a visit's :class:`VisitView` (``same_day``: the other visits)."""
    visit = view.visit
    edit = pair_edit(ptp, visit.service_date)
    assessment = assess_units(
        view,
        payer_rule=payer_rule,
        pair=(edit.column1, edit.column2) if edit else None,
    )
    pair = evaluate_pair(view, assessment=assessment, edit=edit, pair_rule=pair_rule)
    lines, present = view.lines, view.billable_codes
    review = review_plan_of_care(view)
    findings = (
        *(f for s in view.timing_suspects for f in timing_findings(s)),
        *assessment.findings,
        *pair.findings,
        *other_ptp_findings(visit, codes_present=present, lines=lines, ptp=ptp),
        *cross_discipline_ptp_findings(
            visit,
            codes_present=present,
            same_day=[(o.visit, o.billable_codes) for o in same_day],
            lines=lines,
            ptp=ptp,
        ),
        *review.findings,
        *(() if visit.charge_lines_read else (charges_not_available_finding(view, pair),)),
    )
    return _new_visit_analysis(
        patient=visit.patient,
        date=visit.service_date,
        discipline=visit.discipline,
        payer_rule=payer_rule,
        pair_rule=pair_rule,
        total_timed_minutes=assessment.total_timed_minutes,
        raw_minutes=assessment.raw_minutes,
        minutes=assessment.minutes,
        units=assessment.units,
        allocations=assessment.allocations,
        units_allowed_total=assessment.units_allowed_total,
        pair=pair,
        findings=sort_findings(findings),
        unverified_plan_refs=review.unverified_plan_refs,
        billed_units=billed_units_of(view),
        payer_rule_reason=payer_rule_reason,
    )


def charges_not_available_finding(view: VisitView, pair: PairResult) -> Finding:
    """I-CHARGES-NOT-AVAILABLE: the visit holds no charge line (issue 14), so no rule claims
    what was billed; the units are what the documentation supports, the pair step 4 is open."""
    codes = tuple(view.lines)
    message = (
        "No charge line could be read for this visit (no ServiceRequest, Claim item or billing"
        " extension), so the billed units and modifiers were not checked; the units shown are"
        " what the documented time supports."
    )
    if pair.reason == "no-charges":
        message += (
            f" {pair.column1} and {pair.column2} both earn units in distinct time blocks: the"
            f" {pair.column2} line needs modifier 59 (or XU) when both are billed."
        )
    return make_finding(
        RuleId.I_CHARGES_NOT_AVAILABLE,
        codes=codes,
        resources=[r for line in view.lines.values() for r in line.service_refs],
        message=message,
        facts=new_finding_facts(detail="no-charges"),
    )


def set_aside_finding(set_aside: SetAside) -> Finding:
    """The top-level finding for a service the mappers set aside (I-2.1, I-2.3).

    Ignored status -> I-IGNORED-STATUS (detail ``status``); no patient -> I-IGNORED-STATUS
    (detail ``no-patient``, POLICY: the catalogue has no closer id); no date of service ->
    W-NO-DURATION (detail ``no-date``).
    """
    s = set_aside.service
    if set_aside.reason is SetAsideReason.NO_DATE:
        return make_finding(
            RuleId.W_NO_DURATION,
            codes=(s.code,),
            resources=(s.ref,),
            message=(
                f"{s.code}: no usable date or time was recorded, so the service could not be"
                " placed on a date of service and was not analysed."
            ),
            facts=new_finding_facts(detail="no-date"),
        )
    if set_aside.reason is SetAsideReason.NO_PATIENT:
        return make_finding(
            RuleId.I_IGNORED_STATUS,
            codes=(s.code,),
            resources=(s.ref,),
            message=f"{s.code}: the service names no patient and was not analysed.",
            facts=new_finding_facts(status=s.status, detail="no-patient"),
        )
    return make_finding(
        RuleId.I_IGNORED_STATUS,
        codes=(s.code,),
        resources=(s.ref,),
        message=f"{s.code}: the service has status '{s.status}' and was not analysed.",
        facts=new_finding_facts(status=s.status, detail="status"),
    )


def unattached_charge_finding(charge: Charge, codes: CodeCatalog) -> Finding | None:
    """E-UNITS-EXCEED (detail ``unattached``) for a charge of a timed code that no visit took:
    no documented minutes support its units (I-3, R-B3). ``None`` when nothing is billed."""
    if not codes.is_timed(charge.code) or not charge.units:
        return None
    return make_finding(
        RuleId.E_UNITS_EXCEED,
        codes=(charge.code,),
        resources=(charge.ref,),
        message=(
            f"{charge.code} is billed for {plural_units(charge.units)} but no documented"
            " service of the patient on that date supports it; document the service with its"
            " start and end time, or remove the charge."
        ),
        facts=new_finding_facts(units_allowed=0, units_billed=charge.units, detail="unattached"),
        fixes=(new_fix(line_code=charge.code, charge_refs=(charge.ref,), set_units=0),),
    )


def analyze(
    grouping: VisitGrouping,
    *,
    payer_rule: PayerRule = "cms",
    pair_rule: PairRule = "cms",
    ptp: PtpTable | None = None,
    codes: CodeCatalog | None = None,
    payers: Mapping[tuple[str, date], PayerDecision] | None = None,
) -> Analysis:
    """Analyse every visit of ``grouping`` (I-2 .. I-5); set-asides become top-level findings.

    ``payer_rule``: ``cms`` (8-minute rule, pooled; R-B) or ``ama`` (per code; R-C2).
    ``payers``: per (patient, date of service), the rule chosen from Coverage and why
    (:class:`~plugin.rules.payer.PayerChoice`); a visit not in it gets ``payer_rule``.
    ``pair_rule``: ``cms`` (distinct, non-overlapping blocks) or ``strict`` (each pair code
    needs 15 minutes of its own time). ``ptp`` defaults to the shipped fallback table, ``codes``
    to ``fhir_mappings.codes``.
    """
    table = ptp if ptp is not None else default_ptp_table()
    catalog = codes if codes is not None else default_code_catalog()
    views = [visit_view(v, catalog) for v in grouping.visits]
    by_day: dict[tuple[str, date], list[VisitView]] = {}
    for view in views:
        by_day.setdefault((view.visit.patient, view.visit.service_date), []).append(view)
    chosen = payers or {}
    none = PayerDecision(payer_rule, "")
    visits = sorted(
        (
            _analyze_view(
                view,
                [o for o in by_day[day] if o.visit is not view.visit],
                payer_rule=decision.rule,
                pair_rule=pair_rule,
                ptp=table,
                payer_rule_reason=decision.reason,
            )
            for view in views
            for day in ((view.visit.patient, view.visit.service_date),)
            for decision in (chosen.get(day, none),)
        ),
        key=lambda v: (v.patient, v.date, v.discipline.value),
    )
    return Analysis(
        visits=tuple(visits),
        findings=sort_findings(
            [
                *(set_aside_finding(s) for s in grouping.set_aside),
                *(
                    f
                    for c in grouping.unattached_charges
                    if (f := unattached_charge_finding(c, catalog)) is not None
                ),
            ]
        ),
        payer_rule=payer_rule,
        pair_rule=pair_rule,
        ptp_version=table.version,
    )


def finding_to_json(finding: Finding) -> dict[str, Any]:
    """A finding in the contract's shape: rule, severity, codes, resources, message."""
    return {
        "rule": finding.rule.value,
        "severity": finding.severity.value,
        "codes": list(finding.codes),
        "resources": list(finding.resources),
        "message": finding.message,
    }


def visit_to_json(visit: VisitAnalysis) -> dict[str, Any]:
    """One entry of the contract's ``visits`` list."""
    return {
        "patient": visit.patient,
        "date": visit.date.isoformat(),
        "discipline": visit.discipline.value,
        "payer_rule": visit.payer_rule,
        "total_timed_minutes": visit.total_timed_minutes,
        "units": dict(visit.units),
        "allocations": [dict(a) for a in visit.allocations],
        "pair": visit.pair.status.value,
        "findings": [finding_to_json(f) for f in visit.findings],
        # issue 13 (added member): billed units per timed code, null when no charge was read
        "billed_units": None if visit.billed_units is None else dict(visit.billed_units),
        # issue 15 (added member): why payer_rule applies ("" when no reason was worked out)
        "payer_rule_reason": visit.payer_rule_reason,
    }


def analysis_to_json(analysis: Analysis) -> dict[str, Any]:
    """The exact ``check --format json`` document of the product contract."""
    return {
        "visits": [visit_to_json(v) for v in analysis.visits],
        "findings": [finding_to_json(f) for f in analysis.findings],
    }
