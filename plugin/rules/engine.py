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
)
from plugin.rules.assistant import assistant_findings
from plugin.rules.catalogue import RuleId
from plugin.rules.cms_data import MueTable, RuleTables, TableFile, active_tables
from plugin.rules.code_catalog import CodeCatalog, default_code_catalog
from plugin.rules.counts import CodeCounts
from plugin.rules.findings import (
    Finding,
    FindingFacts,
    Fix,
    make_finding,
    sort_findings,
)
from plugin.rules.mue import mue_findings
from plugin.rules.pair import (
    PairPartner,
    PairResult,
    cotreatment_status,
    cross_discipline_ptp_findings,
    evaluate_cotreatment,
    evaluate_pair,
    other_ptp_findings,
    pair_edit,
)
from plugin.rules.payer import PayerDecision
from plugin.rules.plan import review_plan_of_care
from plugin.rules.progress import TherapyHistory, progress_report_due
from plugin.rules.ptp import PtpEdit, PtpTable
from plugin.rules.timing import timing_findings
from plugin.rules.units import (
    Allocation,
    UnitAssessment,
    assess_units,
    plural_units,
)
from plugin.rules.view import VisitView, visit_view
from plugin.rules.vocabulary import PairRule, PayerRule


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
    # Added for issue 15 (additive, defaulted): the NCCI PTP table and the MUE table (when one
    # is loaded) applied to the visit's date of service.
    tables: tuple[TableFile, ...] = ()
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


@dataclass(frozen=True, slots=True)
class Analysis:
    """Every visit of an input, plus findings not tied to a visit."""

    visits: tuple[VisitAnalysis, ...]
    findings: tuple[Finding, ...]
    payer_rule: PayerRule
    pair_rule: PairRule
    ptp_version: str
    # Added for issue 15 (additive, defaulted): False when the visit history was not available,
    # so the progress-report interval (R-E6) was not checked.
    visit_history: bool = True
    # issue 15: every table some visit used, PTP first (see plugin/rules/cms_data.py)
    tables: tuple[TableFile, ...] = ()


def analyze_visit(
    visit: TherapyVisit,
    *,
    payer_rule: PayerRule = PayerRule.CMS,
    pair_rule: PairRule = PairRule.CMS,
    ptp: PtpTable | None = None,
    codes: CodeCatalog | None = None,
    same_day: Sequence[TherapyVisit] = (),
    history: TherapyHistory | None = None,
    tables: RuleTables | None = None,
) -> VisitAnalysis:
    """All rules for one visit (I-2 .. I-5).

    ``same_day``: the patient's other visits on the same date (other disciplines), for the
    co-treatment pair and the cross-discipline PTP note (R-D1). ``history``: the patient's
    treatment days and progress reports (R-E6); ``None``: the progress-report interval is not
    checked. ``tables``: the loaded CMS data (default: the process's,
    :func:`~plugin.rules.cms_data.active_tables`); ``ptp``, when given, replaces its PTP table.
    """
    catalog = codes if codes is not None else default_code_catalog()
    views = [
        visit_view(visit, catalog),
        *(visit_view(o, catalog) for o in same_day if o is not visit),
    ]
    return _analyze_day(
        views,
        payer_rule=payer_rule,
        pair_rule=pair_rule,
        ptp=ptp,
        tables=tables if tables is not None else active_tables(),
        history=history,
    )[0]


@dataclass(slots=True)
class _Prepared:
    """A visit's units and own pair status, before the co-treatment pass of its day."""

    view: VisitView
    edit: PtpEdit | None
    assessment: UnitAssessment
    pair: PairResult
    providers: frozenset[str]
    ptp: PtpTable  # the PTP table of the visit's date of service
    mue: MueTable | None  # the MUE table of that date, when one is loaded
    used: tuple[TableFile, ...]  # the loaded tables the visit used (issue 15)


def billing_providers(visit: TherapyVisit) -> frozenset[str]:
    """The billing providers a visit records: its Encounters' serviceProvider (the only place
    the mapped data names one; empty when none is recorded)."""
    return frozenset(e.service_provider for e in visit.encounters if e.service_provider)


def _same_provider(a: _Prepared, b: _Prepared) -> bool:
    """Whether two visits of a day are billed by the same provider (R-D1): they share an
    Encounter.serviceProvider, or either records none (POLICY: assumed the same, and the
    co-treatment findings say so)."""
    return not a.providers or not b.providers or not a.providers.isdisjoint(b.providers)


def _prepare(
    view: VisitView,
    *,
    payer_rule: PayerRule,
    pair_rule: PairRule,
    ptp: PtpTable | None,
    tables: RuleTables,
) -> _Prepared:
    """A visit's tables (by its date of service), units and own 97140/97530 pair status."""
    on = view.visit.service_date
    loaded = tables.ptp_for(on)
    mue = tables.mue_for(on)
    used = (() if ptp is not None else (loaded.file,)) + (() if mue is None else (mue.file,))
    table = ptp if ptp is not None else loaded.table
    edit = pair_edit(table, on)
    assessment = assess_units(
        view,
        payer_rule=payer_rule,
        pair=(edit.column1, edit.column2) if edit else None,
    )
    pair = evaluate_pair(view, assessment=assessment, edit=edit, pair_rule=pair_rule)
    return _Prepared(view, edit, assessment, pair, billing_providers(view.visit), table, mue, used)


def _analyze_day(
    views: Sequence[VisitView],
    *,
    payer_rule: PayerRule,
    pair_rule: PairRule,
    ptp: PtpTable | None,
    tables: RuleTables,
    history: TherapyHistory | None = None,
    payer_rule_reason: str = "",
) -> list[VisitAnalysis]:
    """The visits of one patient and date (one per discipline), in the order given: each
    visit's own rules, and the 97140/97530 pair across two of them (co-treatment, R-D1)."""
    prepared = [
        _prepare(v, payer_rule=payer_rule, pair_rule=pair_rule, ptp=ptp, tables=tables)
        for v in views
    ]
    peers = {id(p): [o for o in prepared if o is not p and _same_provider(p, o)] for p in prepared}
    if len(prepared) > 1:
        judged: dict[int, list[PairResult]] = {}
        for p in prepared:
            co = evaluate_cotreatment(
                p.view,
                assessment=p.assessment,
                partners=[
                    PairPartner(o.view, o.assessment, bool(p.providers and o.providers))
                    for o in peers[id(p)]
                ],
                edit=p.edit,
                pair_rule=pair_rule,
            )
            if co is None:
                continue
            p.pair = co
            for o in peers[id(p)]:
                if co.column1 in o.view.counted_by_code:
                    judged.setdefault(id(o), []).append(co)
        for p in prepared:
            if p.pair.reason == "absent" and id(p) in judged:
                p.pair = cotreatment_status(p.pair, judged[id(p)], p.assessment)
    return [
        _finish(
            p,
            [o.view for o in peers[id(p)]],
            payer_rule=payer_rule,
            pair_rule=pair_rule,
            history=history,
            payer_rule_reason=payer_rule_reason,
        )
        for p in prepared
    ]


def _finish(
    prepared: _Prepared,
    same_day: Sequence[VisitView],
    *,
    payer_rule: PayerRule,
    pair_rule: PairRule,
    history: TherapyHistory | None = None,
    payer_rule_reason: str = "",
) -> VisitAnalysis:
    """The findings and outcome of a visit (``same_day``: its day's other visits at the same
    billing provider)."""
    view, assessment, pair = prepared.view, prepared.assessment, prepared.pair
    ptp, mue = prepared.ptp, prepared.mue
    visit = view.visit
    lines, present = view.lines, view.billable_codes
    review = review_plan_of_care(view)
    progress = (
        progress_report_due(visit, history, tuple(view.lines)) if history is not None else None
    )
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
        *((progress,) if progress is not None else ()),
        *(() if mue is None else mue_findings(visit, [o.visit for o in same_day], mue)),
        *assistant_findings(view, assessment.units),
        *(() if visit.charge_lines_read else (charges_not_available_finding(view, pair),)),
    )
    return VisitAnalysis(
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
        tables=prepared.used,
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
        facts=FindingFacts(detail="no-charges"),
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
            facts=FindingFacts(detail="no-date"),
        )
    if set_aside.reason is SetAsideReason.NO_PATIENT:
        return make_finding(
            RuleId.I_IGNORED_STATUS,
            codes=(s.code,),
            resources=(s.ref,),
            message=f"{s.code}: the service names no patient and was not analysed.",
            facts=FindingFacts(status=s.status, detail="no-patient"),
        )
    return make_finding(
        RuleId.I_IGNORED_STATUS,
        codes=(s.code,),
        resources=(s.ref,),
        message=f"{s.code}: the service has status '{s.status}' and was not analysed.",
        facts=FindingFacts(status=s.status, detail="status"),
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
        facts=FindingFacts(units_allowed=0, units_billed=charge.units, detail="unattached"),
        fixes=(Fix(line_code=charge.code, charge_refs=(charge.ref,), set_units=0),),
    )


def analyze(
    grouping: VisitGrouping,
    *,
    payer_rule: PayerRule = PayerRule.CMS,
    pair_rule: PairRule = PairRule.CMS,
    ptp: PtpTable | None = None,
    codes: CodeCatalog | None = None,
    history: TherapyHistory | None = None,
    visit_history: bool = True,
    tables: RuleTables | None = None,
    payers: Mapping[tuple[str, date], PayerDecision] | None = None,
) -> Analysis:
    """Analyse every visit of ``grouping`` (I-2 .. I-5); set-asides become top-level findings.

    ``payer_rule``: ``cms`` (8-minute rule, pooled; R-B) or ``ama`` (per code; R-C2).
    ``payers``: per (patient, date of service), the rule chosen from Coverage and why
    (:class:`~plugin.rules.payer.PayerChoice`); a visit not in it gets ``payer_rule``.
    ``pair_rule``: ``cms`` (distinct, non-overlapping blocks) or ``strict`` (each pair code
    needs 15 minutes of its own time). ``tables``: the NCCI PTP and MUE tables applied by date
    of service (default: the process's, :func:`~plugin.rules.cms_data.active_tables`, the
    built-in PTP excerpt unless CMS files were loaded); ``ptp``, when given, replaces the PTP
    table for every date (tests); ``codes`` defaults to ``fhir_mappings.codes``. ``history``:
    the patient's treatment days and progress reports (R-E6; ``None``: not checked),
    ``visit_history``: whether the input held that history at all (recorded on the result,
    for the "not checked" note). ``payers``: per (patient, date of service), the payer rule
    chosen from Coverage and why (:class:`~plugin.rules.payer.PayerChoice`); a visit not in it
    gets ``payer_rule``.
    """
    loaded = tables if tables is not None else active_tables()
    catalog = codes if codes is not None else default_code_catalog()
    by_day: dict[tuple[str, date], list[VisitView]] = {}
    for v in grouping.visits:
        by_day.setdefault((v.patient, v.service_date), []).append(visit_view(v, catalog))
    chosen = payers or {}
    none = PayerDecision(payer_rule, "")
    visits = sorted(
        (
            analysed
            for key, day in by_day.items()
            for decision in (chosen.get(key, none),)
            for analysed in _analyze_day(
                day,
                payer_rule=decision.rule,
                pair_rule=pair_rule,
                ptp=ptp,
                tables=loaded,
                history=history,
                payer_rule_reason=decision.reason,
            )
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
        ptp_version=ptp.version if ptp is not None else loaded.ptp[-1].table.version,
        visit_history=visit_history,
        tables=tables_used(visits),
    )


def tables_used(visits: Sequence[VisitAnalysis]) -> tuple[TableFile, ...]:
    """The tables the visits used, each once: PTP first, then MUE, each kind by first date."""
    found = {t: None for v in visits for t in v.tables}
    return tuple(sorted(found, key=lambda t: (t.kind != "ptp", t.starts or date.min, t.name)))


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
    """The exact ``check --format json`` document of the product contract (``check`` adds the
    ``tables`` member, issue 15: see :attr:`Analysis.tables`)."""
    return {
        "visits": [visit_to_json(v) for v in analysis.visits],
        "findings": [finding_to_json(f) for f in analysis.findings],
    }
