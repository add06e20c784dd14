"""The 97140 / 97530 NCCI pair (I-4, R-D1..R-D4) and other PTP pairs on a visit (I-OTHER-PTP).

Statuses, evaluated in the order of I-4:
1. INDETERMINATE: a 97140 or 97530 service lacks a usable start and end (R-E8);
2. NOT_SUPPORTED + E-PAIR-SAME-TIMEBLOCK: a 97140 interval overlaps a 97530 interval;
3. NOT_APPLICABLE: no acceptable allocation gives both codes >= 1 unit (R-D3(3));
4. NOT_SUPPORTED: no modifier (E-PAIR-NO-MODIFIER), modifier only on column 1
   (W-MODIFIER-ON-COL1), an X modifier whose condition is not evidenced
   (W-MODIFIER-MISMATCH-XE/XP/XS), or, under the ``strict`` pair rule, a code with fewer than
   15 minutes of its own distinct time (E-PAIR-SAME-TIMEBLOCK, detail ``strict``);
5. SUPPORTED, with W-59-WITH-X when 59 and an X modifier share a line.

No charge lines (POLICY, issue 14): when the visit holds no charge line at all
(``TherapyVisit.charge_lines_read`` is False), step 4 has nothing to read, so the status is
INDETERMINATE (reason ``no-charges``) and the engine reports I-CHARGES-NOT-AVAILABLE; never
E-PAIR-NO-MODIFIER. Steps 1-3 and the strict reading rest on the documented times and still
apply, and so does an indicator-0 edit, which no modifier could bypass whatever was billed.

Ties (I-4.3, POLICY): step 3 is evaluated for every allocation in ``chosen`` (the billed one when
it is acceptable, else all acceptable ones). When they disagree, the reported status is the one
that holds if both codes are billed (steps 4-5), because that is the only case in which the edit
bites; ``PairResult.by_allocation`` keeps the status per allocation and the findings say that
billing only one of the codes is the alternative.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from fhir_mappings.model import TherapyVisit, TimedService
from plugin.rules.billing import NCCI_MODIFIERS, X_MODIFIERS, BillingLine
from plugin.rules.catalogue import RuleId
from plugin.rules.findings import Finding, FindingFacts, Fix, make_finding
from plugin.rules.intervals import cross_overlap, describe_minutes, whole_minutes
from plugin.rules.ptp import PtpEdit, PtpTable
from plugin.rules.units import UnitAssessment
from plugin.rules.view import VisitView
from plugin.rules.vocabulary import PairRule

FOCUS_PAIR: tuple[str, str] = ("97140", "97530")
"""The pair this product checks in depth (R-D2); its column order comes from the PTP table."""
STRICT_MINUTES = 15
"""Strict reading (R-D3 note, POLICY): each code needs this many minutes of its own time."""


class PairStatus(StrEnum):
    """The 97140/97530 status of a visit (I-4)."""

    SUPPORTED = "SUPPORTED"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    NOT_APPLICABLE = "NOT_APPLICABLE"
    INDETERMINATE = "INDETERMINATE"


@dataclass(frozen=True, slots=True)
class PairResult:
    """The pair status with the reading applied and the evidence behind it.

    ``reason`` is a short tag: ``no-edit`` (no edit in effect), ``absent`` (not both codes
    documented), ``no-interval``, ``same-timeblock``, ``units`` (not both codes earn a unit),
    ``no-charges`` (step 4 cannot be judged: the visit has no charge line; INDETERMINATE),
    ``modifier`` (step 4 failed), ``supported``.

    ``co_treatment`` (co-treatment, :func:`evaluate_cotreatment`): the disciplines of the
    visits holding column 1 and column 2 (e.g. ``("PT", "OT")``) when the status judges the
    pair across two visits of the same patient and date; empty for a visit's own pair.
    """

    status: PairStatus
    pair_rule: PairRule
    column1: str
    column2: str
    modifier_indicator: int | None
    reason: str
    by_allocation: tuple[PairStatus, ...] = ()
    findings: tuple[Finding, ...] = ()
    co_treatment: tuple[str, ...] = ()


_FOCUS_ORDERS = frozenset({FOCUS_PAIR, (FOCUS_PAIR[1], FOCUS_PAIR[0])})


def pair_edit(ptp: PtpTable, on: date) -> PtpEdit | None:
    """The NCCI edit between 97140 and 97530 in effect on ``on`` (R-D2)."""
    return ptp.lookup(FOCUS_PAIR[0], FOCUS_PAIR[1], on)


def _x_condition_holds(
    modifier: str, first: Sequence[TimedService], second: Sequence[TimedService]
) -> bool:
    """R-D4 POLICY: the documentation a modifier needs, for every (first, second) pair.

    Every pair must be in different encounters (XE) or have different performers (XP) or body
    sites (XS) recorded on both sides: each side records one, and what the first services record
    meets nothing the second ones record. Linear, where comparing the pairs is n x m.
    """
    if modifier == "XE":
        encounters = [s.encounter for s in first], [s.encounter for s in second]
        return (
            None not in encounters[0]
            and None not in encounters[1]
            and not (set(encounters[0]) & set(encounters[1]))
        )
    if modifier in ("XP", "XS"):
        field = "performers" if modifier == "XP" else "body_sites"
        recorded = [[getattr(s, field) for s in side] for side in (first, second)]
        if not all(all(values) for values in recorded):
            return False
        one = {v for values in recorded[0] for v in values}
        return one.isdisjoint(v for values in recorded[1] for v in values)
    return True  # 59 and XU: non-overlapping blocks, already established at step 2


_MISMATCH_RULE = {
    "XE": RuleId.W_MODIFIER_MISMATCH_XE,
    "XP": RuleId.W_MODIFIER_MISMATCH_XP,
    "XS": RuleId.W_MODIFIER_MISMATCH_XS,
}
_MISMATCH_TEXT = {
    "XE": "XE (separate encounter) needs the two services in different encounters",
    "XP": "XP (separate practitioner) needs different performers recorded on the two services",
    "XS": "XS (separate structure) needs different body sites recorded on both services",
}


def evaluate_pair(
    view: VisitView,
    *,
    assessment: UnitAssessment,
    edit: PtpEdit | None,
    pair_rule: PairRule = PairRule.CMS,
) -> PairResult:
    """The 97140/97530 status of one visit, in the order of I-4 (R-D1..R-D4, R-E8).

    ``edit`` is the table's 97140/97530 edit on the date of service (:func:`pair_edit`).
    """
    if edit is None or edit.modifier_indicator == 9:
        return PairResult(
            status=PairStatus.NOT_APPLICABLE,
            pair_rule=pair_rule,
            column1=FOCUS_PAIR[0],
            column2=FOCUS_PAIR[1],
            modifier_indicator=None,
            reason="no-edit",
        )
    col1, col2 = edit.column1, edit.column2
    lines = view.lines
    first = view.counted_by_code.get(col1, ())
    second = view.counted_by_code.get(col2, ())

    result = functools.partial(_pair_result, edit, pair_rule)

    if not first or not second:
        return result(PairStatus.NOT_APPLICABLE, "absent")
    # 1. INDETERMINATE (R-E8)
    if col1 in view.codes_without_span or col2 in view.codes_without_span:
        return result(PairStatus.INDETERMINATE, "no-interval")
    # 2. same time block (R-D3(2), R-F4); every service of the two codes has a span here
    shared = cross_overlap(view.spans_by_code[col1], view.spans_by_code[col2])
    if shared.refs:
        shared_total = shared.shared
        minutes = whole_minutes(shared_total)
        line2 = lines.get(col2)
        allowed2 = assessment.max_allowed(col2)
        fixes: tuple[Fix, ...] = ()
        if line2 is not None and line2.billed_units is not None and line2.billed_units > allowed2:
            fixes = (Fix(line_code=col2, charge_refs=line2.fix_refs, set_units=allowed2),)
        finding = make_finding(
            RuleId.E_PAIR_SAME_TIMEBLOCK,
            codes=(col1, col2),
            resources=shared.refs,
            message=(
                f"{col1} and {col2} were documented in the same time block (they overlap by"
                f" {describe_minutes(shared_total)}): the shared minutes count for {col1} only,"
                f" and no modifier can make them separate for {col2}."
            ),
            facts=FindingFacts(
                minutes=minutes,
                units_allowed=allowed2,
                column1=col1,
                column2=col2,
                modifier_indicator=edit.modifier_indicator,
                pair_rule=pair_rule,
                detail="overlap",
            ),
            fixes=fixes,
        )
        return result(PairStatus.NOT_SUPPORTED, "same-timeblock", findings=(finding,))
    # 3. both codes must earn a unit, per acceptable allocation (R-D3(3), I-4.3); 4. modifiers
    line1 = lines.get(col1)
    return _units_then_modifiers(
        tuple(a.get(col1, 0) >= 1 and a.get(col2, 0) >= 1 for a in assessment.chosen),
        _Sides(col1, col2, first, second, (line1,) if line1 else (), lines.get(col2)),
        {c: assessment.minutes.get(c, 0) for c in (col1, col2)},
        charges_read=view.visit.charge_lines_read,
        edit=edit,
        pair_rule=pair_rule,
        result=result,
    )


def _pair_result(
    edit: PtpEdit,
    pair_rule: PairRule,
    status: PairStatus,
    reason: str,
    by_allocation: tuple[PairStatus, ...] = (),
    findings: tuple[Finding, ...] = (),
    co_treatment: tuple[str, ...] = (),
) -> PairResult:
    """The pair's result under ``edit`` (a visit's own pair, or a co-treatment's)."""
    return PairResult(
        status=status,
        pair_rule=pair_rule,
        column1=edit.column1,
        column2=edit.column2,
        modifier_indicator=edit.modifier_indicator,
        reason=reason,
        by_allocation=by_allocation,
        findings=findings,
        co_treatment=co_treatment,
    )


_ResultOf = Callable[..., PairResult]


def _units_then_modifiers(
    applicable: tuple[bool, ...],
    sides: _Sides,
    minutes: Mapping[str, int],
    *,
    charges_read: bool,
    edit: PtpEdit,
    pair_rule: PairRule,
    result: _ResultOf,
) -> PairResult:
    """Steps 3 and 4 of I-4, for a visit's own pair and a co-treatment alike: ``applicable``,
    per acceptable allocation, whether both codes earn a unit (R-D3(3)); then the modifier
    checks on the billed lines (R-D4), or -- with no charge line on the column-2 visit --
    INDETERMINATE unless the strict reading fails on the documented minutes alone."""
    if not any(applicable):
        return result(
            PairStatus.NOT_APPLICABLE,
            "units",
            by_allocation=tuple(PairStatus.NOT_APPLICABLE for _ in applicable),
        )
    caveat = (
        ""
        if all(applicable)
        else " (This applies if both codes are billed; an acceptable allocation bills only one.)"
    )
    if not charges_read and edit.modifier_indicator != 0:
        strict = _strict_finding(
            sides.col1,
            sides.col2,
            sides.resources,
            edit,
            pair_rule,
            minutes,
            caveat,
            sides.context,
            sides.disciplines,
        )
        status = PairStatus.NOT_SUPPORTED if strict else PairStatus.INDETERMINATE
        reason = "modifier" if strict else "no-charges"
        findings: tuple[Finding, ...] = (strict,) if strict else ()
    else:
        findings = _modifier_findings(sides, edit, pair_rule, minutes, caveat)
        failed = any(f.rule is not RuleId.W_59_WITH_X for f in findings)
        status = PairStatus.NOT_SUPPORTED if failed else PairStatus.SUPPORTED
        reason = "modifier" if failed else "supported"
    return result(
        status,
        reason,
        by_allocation=tuple(status if ok else PairStatus.NOT_APPLICABLE for ok in applicable),
        findings=findings,
    )


@dataclass(frozen=True, slots=True)
class _Sides:
    """The two codes of an edit as billed: the column-1 services and their billing lines (one
    per visit: co-treatment may put column 1 on several), the column-2 services and line.
    ``context``: what a co-treatment finding's message opens with (empty for a visit's own
    pair); ``disciplines``: the co-treatment facts (:attr:`PairResult.co_treatment`)."""

    col1: str
    col2: str
    first: Sequence[TimedService]
    second: Sequence[TimedService]
    lines1: Sequence[BillingLine]
    line2: BillingLine | None
    context: str = ""
    disciplines: tuple[str, ...] = ()

    @property
    def resources(self) -> list[str]:
        return [s.ref for s in (*self.first, *self.second)]

    def bypass_modifier(self) -> str:
        """The modifier a fix adds to the column-2 line: XP when the record shows different
        practitioners on a co-treatment (R-D4: an X modifier is the more descriptive), else 59."""
        if self.context and _x_condition_holds("XP", self.first, self.second):
            return "XP"
        return "59"


def _modifier_findings(
    sides: _Sides,
    edit: PtpEdit,
    pair_rule: PairRule,
    minutes: Mapping[str, int],
    caveat: str,
) -> tuple[Finding, ...]:
    """Step 4 and the W-59-WITH-X check of step 5 (R-D3(1), R-D3(4), R-D4)."""
    col1, col2, first, second = sides.col1, sides.col2, sides.first, sides.second
    line2 = sides.line2
    mods1 = frozenset(m for line in sides.lines1 for m in line.modifiers) & NCCI_MODIFIERS
    mods2 = (line2.modifiers if line2 else frozenset()) & NCCI_MODIFIERS
    refs1 = tuple(r for line in sides.lines1 for r in line.fix_refs)
    refs2 = line2.fix_refs if line2 else ()
    resources = sides.resources
    ctx = sides.context
    facts = FindingFacts(
        column1=col1,
        column2=col2,
        modifier_indicator=edit.modifier_indicator,
        pair_rule=pair_rule,
        co_treatment=sides.disciplines,
    )
    bypass = sides.bypass_modifier()
    usable = f"{bypass} (or 59/XU)" if bypass != "59" else "59 (or XU)"
    found: list[Finding] = []
    if edit.modifier_indicator == 0:
        found.append(
            make_finding(
                RuleId.E_PAIR_NO_MODIFIER,
                codes=(col1, col2),
                resources=resources,
                message=(
                    f"{ctx}The NCCI edit between {col1} and {col2} has modifier indicator 0: no"
                    f" modifier can bypass it, so {col2} is not payable with {col1} on the"
                    f" same date.{caveat}"
                ),
                facts=FindingFacts(
                    column1=col1,
                    column2=col2,
                    modifier_indicator=0,
                    detail="indicator-0",
                    co_treatment=sides.disciplines,
                ),
            )
        )
    elif not mods2 and not mods1:
        found.append(
            make_finding(
                RuleId.E_PAIR_NO_MODIFIER,
                codes=(col1, col2),
                resources=resources,
                message=(
                    f"{ctx}{col1} and {col2} are both billed on this date without an NCCI"
                    f" modifier; {col2} (column 2) will be denied. The documented time blocks"
                    f" are distinct, so add modifier {usable} to the {col2} line.{caveat}"
                ),
                facts=facts,
                fixes=(Fix(line_code=col2, charge_refs=refs2, add_modifier=bypass),),
            )
        )
    elif not mods2:
        # move a modifier the record bears out on column 2 (59, XU, or an X modifier whose
        # condition holds); when none does, column 2 gets 59, which needs only distinct blocks
        fitting = [
            m
            for m in sorted(mods1)
            if m not in _MISMATCH_RULE or _x_condition_holds(m, first, second)
        ]
        moved = fitting[0] if fitting else sorted(mods1)[0]
        added = moved if fitting else "59"
        advice = (
            f"Move it to the {col2} line."
            if fitting
            else f"The record does not show what {moved} claims: take it off {col1} and put 59"
            f" (or XU) on the {col2} line."
        )
        found.append(
            make_finding(
                RuleId.W_MODIFIER_ON_COL1,
                codes=(col1, col2),
                resources=resources,
                message=(
                    f"{ctx}Modifier {moved} is on {col1} (column 1) but not on {col2} (column 2);"
                    f" the edit is bypassed only by a modifier on {col2}. {advice}{caveat}"
                ),
                facts=facts,
                fixes=(
                    Fix(line_code=col2, charge_refs=refs2, add_modifier=added),
                    Fix(line_code=col1, charge_refs=refs1, remove_modifier=moved),
                ),
            )
        )
    # column 2's modifiers the record bears out (59, XU, an X modifier whose condition holds):
    # with one of them left, a mismatched X modifier is removed and nothing is added (59 beside
    # an X modifier would be W-59-WITH-X)
    borne_out = {
        m for m in mods2 if m not in _MISMATCH_RULE or _x_condition_holds(m, first, second)
    }
    for modifier in sorted(mods2 & set(_MISMATCH_RULE)):
        if modifier in borne_out:
            continue
        found.append(
            make_finding(
                _MISMATCH_RULE[modifier],
                codes=(col1, col2),
                resources=resources,
                message=(
                    f"{ctx}{_MISMATCH_TEXT[modifier]}; the record does not show that. Since the"
                    f" time blocks are distinct, use 59 (or XU) on the {col2} line"
                    f" instead.{caveat}"
                ),
                facts=facts,
                fixes=(
                    Fix(
                        line_code=col2,
                        charge_refs=refs2,
                        remove_modifier=modifier,
                        add_modifier=None if borne_out else "59",
                    ),
                ),
            )
        )
    strict = _strict_finding(
        col1, col2, resources, edit, pair_rule, minutes, caveat, ctx, sides.disciplines
    )
    if strict is not None:
        found.append(strict)
    checked = [(col2, line2, second)] if line2 else []
    checked[:0] = [(col1, line, first) for line in sides.lines1]
    for code, line, services in checked:
        mods = line.modifiers & NCCI_MODIFIERS
        xs = sorted(mods & X_MODIFIERS)
        if "59" not in mods or not xs:
            continue
        evidenced = all(_x_condition_holds(x, first, second) for x in xs)
        refs = line.fix_refs
        fixes = (
            (Fix(line_code=code, charge_refs=refs, remove_modifier="59"),)
            if evidenced
            else tuple(Fix(line_code=code, charge_refs=refs, remove_modifier=x) for x in xs)
        )
        found.append(
            make_finding(
                RuleId.W_59_WITH_X,
                codes=(code,),
                resources=[s.ref for s in services],
                message=(
                    f"{ctx}The {code} line carries both 59 and {', '.join(xs)}; an X modifier"
                    f" replaces 59 and the two are not reported together. Keep one."
                ),
                facts=facts,
                fixes=fixes,
            )
        )
    return tuple(found)


def _strict_finding(
    col1: str,
    col2: str,
    resources: Sequence[str],
    edit: PtpEdit,
    pair_rule: PairRule,
    minutes: Mapping[str, int],
    caveat: str,
    context: str = "",
    disciplines: tuple[str, ...] = (),
) -> Finding | None:
    """Under the ``strict`` pair rule: a pair code with under 15 minutes of its own time
    (``minutes``: the attributed minutes of the two codes)."""
    if pair_rule != PairRule.STRICT:
        return None
    short = {c: minutes.get(c, 0) for c in (col1, col2)}
    short = {c: m for c, m in short.items() if m < STRICT_MINUTES}
    if not short:
        return None
    detail = ", ".join(f"{c} has {m}" for c, m in short.items())
    return make_finding(
        RuleId.E_PAIR_SAME_TIMEBLOCK,
        codes=(col1, col2),
        resources=resources,
        message=(
            f"{context}Under the strict pair rule each of {col1} and {col2} needs at least"
            f" {STRICT_MINUTES} minutes of its own distinct time ({detail}); they"
            f" are not separate 15-minute blocks.{caveat}"
        ),
        facts=FindingFacts(
            minutes=min(short.values()),
            column1=col1,
            column2=col2,
            modifier_indicator=edit.modifier_indicator,
            pair_rule=pair_rule,
            detail=PairRule.STRICT,
            co_treatment=disciplines,
        ),
    )


@dataclass(frozen=True, slots=True)
class PairPartner:
    """Another visit of the patient on the same date (another discipline) at the same billing
    provider, with its units, for the co-treatment pair (:func:`evaluate_cotreatment`).

    ``provider_known``: both visits record their billing provider (Encounter.serviceProvider)
    and share it; False when either records none and the provider is assumed to be the same.
    """

    view: VisitView
    assessment: UnitAssessment
    provider_known: bool


_STATUS_WEIGHT = {
    PairStatus.NOT_SUPPORTED: 0,
    PairStatus.INDETERMINATE: 1,
    PairStatus.SUPPORTED: 2,
    PairStatus.NOT_APPLICABLE: 3,
}


def evaluate_cotreatment(
    view: VisitView,
    *,
    assessment: UnitAssessment,
    partners: Sequence[PairPartner],
    edit: PtpEdit | None,
    pair_rule: PairRule = PairRule.CMS,
) -> PairResult | None:
    """The 97140/97530 pair across disciplines (co-treatment; R-D1: the edits apply to PT and
    OT of the same provider together), judged on the visit holding the column-2 code.

    It arises when ``view`` holds the column-2 code and not the column-1 code, and one of
    ``partners`` (the patient's other visits of the date at the same billing provider) holds
    the column-1 code. The steps are those of a visit's own pair (I-4): INDETERMINATE without
    usable times; NOT_SUPPORTED + E-PAIR-SAME-TIMEBLOCK when a column-1 service of the other
    visit overlaps a column-2 service of this one; NOT_APPLICABLE unless both codes earn a
    unit on their own visit; then the modifier on this visit's column-2 line (59, XU, or an X
    modifier whose condition the record shows: XP different performers, XE different
    encounters). Findings go on this visit, their messages say it is a co-treatment; the
    column-1 visit shows the status through :func:`cotreatment_status`. ``None`` when the
    case does not arise (the visit's own pair status stands).
    """
    if edit is None or edit.modifier_indicator == 9:
        return None
    col1, col2 = edit.column1, edit.column2
    second = view.counted_by_code.get(col2, ())
    if not second or col1 in view.counted_by_code:
        return None
    holders = [p for p in partners if p.view.counted_by_code.get(col1)]
    if not holders:
        return None
    first = tuple(s for p in holders for s in p.view.counted_by_code[col1])
    here = view.visit.discipline.value
    there = "/".join(sorted({p.view.visit.discipline.value for p in holders}))
    disciplines = (there, here)
    provider = (
        "same billing provider"
        if all(p.provider_known for p in holders)
        else "same billing provider assumed: an Encounter names no serviceProvider"
    )
    context = f"Co-treatment ({there} {col1}, {here} {col2} on this visit; {provider}). "

    result = functools.partial(_pair_result, edit, pair_rule, co_treatment=disciplines)

    # 1. INDETERMINATE (R-E8)
    if col2 in view.codes_without_span or any(col1 in p.view.codes_without_span for p in holders):
        return result(PairStatus.INDETERMINATE, "no-interval")
    # 2. same time block (R-D3(2), R-F4)
    shared = cross_overlap(
        [sp for p in holders for sp in p.view.spans_by_code.get(col1, ())],
        view.spans_by_code[col2],
    )
    if shared.refs:
        finding = make_finding(
            RuleId.E_PAIR_SAME_TIMEBLOCK,
            codes=(col1, col2),
            resources=shared.refs,
            message=(
                f"{context}{there} {col1} and {here} {col2} overlap by"
                f" {describe_minutes(shared.shared)}: one-on-one"
                f" time cannot support both codes, and no modifier makes it separate for {col2}."
                " Record which discipline delivered that time and bill it once."
            ),
            facts=FindingFacts(
                minutes=whole_minutes(shared.shared),
                column1=col1,
                column2=col2,
                modifier_indicator=edit.modifier_indicator,
                pair_rule=pair_rule,
                detail="overlap",
                co_treatment=disciplines,
            ),
        )
        return result(PairStatus.NOT_SUPPORTED, "same-timeblock", findings=(finding,))
    # 3. both codes must earn a unit, each on its own visit (R-D3(3), I-4.3); 4. modifiers
    col1_earns = any(a.get(col1, 0) >= 1 for p in holders for a in p.assessment.chosen)
    return _units_then_modifiers(
        tuple(col1_earns and a.get(col2, 0) >= 1 for a in assessment.chosen),
        _Sides(
            col1,
            col2,
            first,
            second,
            tuple(p.view.lines[col1] for p in holders if col1 in p.view.lines),
            view.lines.get(col2),
            context,
            disciplines,
        ),
        {
            col1: sum(p.assessment.minutes.get(col1, 0) for p in holders),
            col2: assessment.minutes.get(col2, 0),
        },
        charges_read=view.visit.charge_lines_read,
        edit=edit,
        pair_rule=pair_rule,
        result=result,
    )


def cotreatment_status(
    own: PairResult, judged: Sequence[PairResult], assessment: UnitAssessment
) -> PairResult:
    """The pair status of a visit holding the column-1 code of co-treatment pairs ``judged``
    on other visits (:func:`evaluate_cotreatment`): the least favourable of them, without
    their findings (they are on the column-2 visit). ``own`` when nothing was judged."""
    if not judged:
        return own
    worst = min(judged, key=lambda r: _STATUS_WEIGHT[r.status])
    disciplines = tuple(dict.fromkeys(d for r in judged for d in r.co_treatment))
    return PairResult(
        status=worst.status,
        pair_rule=worst.pair_rule,
        column1=worst.column1,
        column2=worst.column2,
        modifier_indicator=worst.modifier_indicator,
        reason=worst.reason,
        by_allocation=tuple(
            worst.status if a.get(worst.column1, 0) >= 1 else PairStatus.NOT_APPLICABLE
            for a in assessment.chosen
        ),
        findings=(),
        co_treatment=disciplines,
    )


def other_ptp_findings(
    visit: TherapyVisit,
    *,
    codes_present: Iterable[str],
    lines: Mapping[str, BillingLine],
    ptp: PtpTable,
) -> tuple[Finding, ...]:
    """I-OTHER-PTP for each PTP edit in effect between codes on the visit, other than the
    97140/97530 pair (R-D1, R-D5, R-D6). Informational: not asserted."""
    found = []
    for e in ptp.edits_among(codes_present, visit.service_date):
        if (e.column1, e.column2) in _FOCUS_ORDERS:
            continue
        refs = [
            r
            for c in (e.column1, e.column2)
            if c in lines
            for r in (*lines[c].service_refs, *lines[c].charge_refs)
        ]
        bypass = (
            "an NCCI-associated modifier on the column-2 line may bypass it when the"
            " documentation supports it"
            if e.modifier_allowed
            else "no modifier can bypass it"
        )
        caution = f" Table note: {e.note}." if e.note else ""
        found.append(
            make_finding(
                RuleId.I_OTHER_PTP,
                codes=(e.column1, e.column2),
                resources=refs,
                message=(
                    f"An NCCI PTP edit may apply: {e.column1} (column 1) with {e.column2}"
                    f" (column 2), modifier indicator {e.modifier_indicator}; {bypass}."
                    f" Not checked further.{caution}"
                ),
                facts=FindingFacts(
                    column1=e.column1,
                    column2=e.column2,
                    modifier_indicator=e.modifier_indicator,
                    detail="unconfirmed" if e.unconfirmed else None,
                ),
            )
        )
    return tuple(found)


def cross_discipline_ptp_findings(
    visit: TherapyVisit,
    *,
    codes_present: frozenset[str],
    same_day: Sequence[tuple[TherapyVisit, frozenset[str]]],
    lines: Mapping[str, BillingLine],
    ptp: PtpTable,
) -> tuple[Finding, ...]:
    """I-OTHER-PTP (detail ``cross-discipline``): NCCI edits apply across disciplines (R-D1).

    For each edit in effect whose column-2 code is on ``visit`` while its column-1 code is only
    on another visit of the same patient and date (another discipline), report it on ``visit``,
    the visit whose line would be denied. Informational: modifiers are not checked across visits.
    The 97140/97530 pair is not reported here: it is checked in full as a co-treatment
    (:func:`evaluate_cotreatment`).
    """
    found = []
    for other, other_codes in same_day:
        for e in ptp.edits_among(codes_present | other_codes, visit.service_date):
            if (e.column1, e.column2) in _FOCUS_ORDERS:
                continue
            if not (
                e.column2 in codes_present
                and e.column1 not in codes_present
                and e.column1 in other_codes
            ):
                continue
            own = lines.get(e.column2)
            refs = [
                *(own.service_refs if own else ()),
                *(own.charge_refs if own else ()),
                *(s.ref for s in other.services if s.code == e.column1),
                *(c.ref for c in other.charges if c.code == e.column1),
            ]
            found.append(
                make_finding(
                    RuleId.I_OTHER_PTP,
                    codes=(e.column1, e.column2),
                    resources=refs,
                    message=(
                        f"NCCI edits apply across disciplines: {e.column1} (column 1) is on the"
                        f" {other.discipline.value} visit of the same date, so {e.column2}"
                        f" (column 2) on this visit is denied unless an NCCI-associated modifier"
                        f" applies (indicator {e.modifier_indicator}). Not checked further."
                    ),
                    facts=FindingFacts(
                        column1=e.column1,
                        column2=e.column2,
                        modifier_indicator=e.modifier_indicator,
                        detail="cross-discipline",
                    ),
                )
            )
    return tuple(found)
