"""Plan of care and documentation flags (I-5; R-E1, R-E3, R-E4, R-E5, R-G1, R-H3, R-H9).

- W-NO-PLAN-OF-CARE: a service has no basedOn CarePlan or ServiceRequest (R-E1, R-H3).
- E-PLAN-NOT-ACTIVE / E-PLAN-PERIOD / W-RECERT-DUE: judged on the service's best linked plan
  (the one with the fewest problems on the date of service), so an active certified CarePlan
  is not undone by a second link to, say, a completed referral.
- W-NO-REASON: no reasonCode / reasonReference / reason (R-E5, R-H4).
- W-DISCIPLINE-MODIFIER-MISSING: a billed timed line without GP/GO/GN (R-G1), or any timed code
  on a visit whose discipline is unknown (I-2.5).

Unresolvable links (POLICY): a basedOn whose target is not in the input still counts as a plan
link (no W-NO-PLAN-OF-CARE), but its status, period and certification cannot be judged. When a
service has no resolved plan without problems and at least one unresolved link, no plan error is
raised; the links are returned as ``unverified_plan_refs`` for the caller to show or fetch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from fhir_mappings.model import Discipline, PlanOfCare, TimedService
from plugin.rules.billing import DISCIPLINE_MODIFIERS
from plugin.rules.catalogue import RuleId
from plugin.rules.findings import Finding, FindingFacts, Fix, make_finding
from plugin.rules.view import VisitView

RECERTIFICATION_DAYS = 90
"""R-E3 / R-E4: a certification covers at most 90 calendar days."""


@dataclass(slots=True)
class PlanProblem:
    """One plan-of-care problem of one plan on one date of service."""

    rule: RuleId
    plan: PlanOfCare
    anchor: date | None = None  # W-RECERT-DUE: the start or certification counted from
    days: int | None = None


@dataclass(slots=True)
class PlanReview:
    """The plan-of-care findings of a visit and the plan links that could not be checked."""

    findings: tuple[Finding, ...]
    unverified_plan_refs: tuple[str, ...]


def certification_anchor(plan: PlanOfCare, on: date) -> date | None:
    """The latest of the plan's start and its certifications on or before ``on`` (R-E4)."""
    candidates = [d for d in (plan.start, *plan.certifications) if d is not None and d <= on]
    return max(candidates, default=None)


def plan_problems(plan: PlanOfCare, on: date) -> tuple[PlanProblem, ...]:
    """What is wrong with ``plan`` for a service on ``on`` (R-E1, R-E3, R-E4, R-H9)."""
    problems: list[PlanProblem] = []
    if (plan.status or "").lower() != "active":
        problems.append(PlanProblem(RuleId.E_PLAN_NOT_ACTIVE, plan))
    outside = (plan.start is not None and on < plan.start) or (
        plan.end is not None and on > plan.end
    )
    if outside:
        problems.append(PlanProblem(RuleId.E_PLAN_PERIOD, plan))
    else:
        anchor = certification_anchor(plan, on)
        if anchor is not None and (on - anchor).days > RECERTIFICATION_DAYS:
            problems.append(
                PlanProblem(RuleId.W_RECERT_DUE, plan, anchor=anchor, days=(on - anchor).days)
            )
    return tuple(problems)


def _best_plan_problems(plans: Iterable[PlanOfCare], on: date) -> tuple[PlanProblem, ...]:
    ranked = sorted(((plan_problems(p, on), p.ref) for p in plans), key=lambda t: (len(t[0]), t[1]))
    return ranked[0][0] if ranked else ()


def _message(problem: PlanProblem, codes: Iterable[str], on: date) -> str:
    plan, listed = problem.plan, ", ".join(sorted(set(codes)))
    if problem.rule is RuleId.E_PLAN_NOT_ACTIVE:
        return (
            f"The plan of care for {listed} is {plan.status or 'of unknown status'}, not active;"
            " services must be furnished under an active plan."
        )
    if problem.rule is RuleId.E_PLAN_PERIOD:
        period = f"{plan.start or '...'} to {plan.end or '...'}"
        return (
            f"The date of service {on} is outside the plan of care's period ({period}) for"
            f" {listed}; extend or renew the plan."
        )
    return (
        f"{problem.days} days have passed since the plan of care was started or last certified"
        f" ({problem.anchor}); treatment of {listed} beyond 90 days needs a recertification."
    )


def _services(codes: Sequence[str]) -> str:
    """``"97140: the service is"`` or ``"97140, 97530: the services are"``."""
    return f"{', '.join(codes)}: " + ("the service is" if len(codes) == 1 else "the services are")


def review_plan_of_care(view: VisitView) -> PlanReview:
    """I-5 findings for one visit."""
    visit = view.visit
    on = visit.service_date
    plans = {p.ref: p for p in visit.plans}
    found: list[Finding] = []
    unverified: set[str] = set()
    no_plan: list[TimedService] = []
    grouped: dict[tuple[RuleId, str], tuple[PlanProblem, list[TimedService]]] = {}
    # services of a visit mostly share their basedOn list: judge each distinct list once
    judged: dict[tuple[str, ...], tuple[tuple[PlanProblem, ...], list[str], bool]] = {}
    for s in visit.services:
        if not s.plan_refs:
            no_plan.append(s)
            continue
        verdict = judged.get(s.plan_refs)
        if verdict is None:
            resolved = [plans[r] for r in s.plan_refs if r in plans]
            unresolved = [r for r in s.plan_refs if r not in plans]
            best = _best_plan_problems(resolved, on) if resolved else ()
            verdict = judged[s.plan_refs] = (best, unresolved, bool(resolved))
        problems, unresolved, any_resolved = verdict
        if unresolved and (problems or not any_resolved):
            unverified.update(unresolved)
            continue
        for problem in problems:
            key = (problem.rule, problem.plan.ref)
            grouped.setdefault(key, (problem, []))[1].append(s)
    if no_plan:
        listed = sorted({s.code for s in no_plan})
        found.append(
            make_finding(
                RuleId.W_NO_PLAN_OF_CARE,
                codes=listed,
                resources=[s.ref for s in no_plan],
                message=(
                    f"{_services(listed)} not linked to a plan of care (no basedOn CarePlan or"
                    " ServiceRequest); therapy must be furnished under one."
                ),
            )
        )
    for (_, plan_ref), (problem, services) in sorted(grouped.items()):
        plan = problem.plan
        found.append(
            make_finding(
                problem.rule,
                codes=[s.code for s in services],
                resources=[plan_ref, *(s.ref for s in services)],
                message=_message(problem, (s.code for s in services), on),
                facts=FindingFacts(
                    plan_refs=(plan_ref,),
                    plan_status=plan.status,
                    plan_start=plan.start,
                    plan_end=plan.end,
                    certified_on=problem.anchor,
                    days_since_certification=problem.days,
                ),
            )
        )
    no_reason = [s for s in visit.services if not s.has_reason]
    if no_reason:
        listed = sorted({s.code for s in no_reason})
        found.append(
            make_finding(
                RuleId.W_NO_REASON,
                codes=listed,
                resources=[s.ref for s in no_reason],
                message=(
                    f"{', '.join(listed)}: no reason (diagnosis or condition) is recorded for"
                    f" {'the service' if len(listed) == 1 else 'these services'}; medical"
                    " necessity must be documented."
                ),
            )
        )
    found += _discipline_findings(view)
    return PlanReview(tuple(found), tuple(sorted(unverified)))


_ANY_DISCIPLINE_MODIFIER = frozenset(DISCIPLINE_MODIFIERS.values())


def _discipline_findings(view: VisitView) -> list[Finding]:
    """W-DISCIPLINE-MODIFIER-MISSING (R-G1, I-2.5)."""
    visit = view.visit
    wanted = DISCIPLINE_MODIFIERS.get(visit.discipline)
    unknown = visit.discipline is Discipline.UNKNOWN
    timed = view.timed_codes
    missing = [
        line
        for code, line in view.lines.items()
        if code in timed
        and line.modifiers.isdisjoint(_ANY_DISCIPLINE_MODIFIER)
        and (line.has_billing or unknown)
    ]
    if not missing:
        return []
    listed = [line.code for line in missing]
    advice = (
        f"add {wanted} ({visit.discipline.value} plan of care)"
        if wanted
        else "add GP, GO or GN to match the plan of care"
    )
    return [
        make_finding(
            RuleId.W_DISCIPLINE_MODIFIER_MISSING,
            codes=listed,
            resources=[r for line in missing for r in (*line.charge_refs, *line.service_refs)],
            message=(
                f"{', '.join(listed)}:"
                f" {'the line carries' if len(listed) == 1 else 'the lines carry'} no therapy"
                f" discipline modifier; {advice}."
            ),
            fixes=tuple(
                Fix(line_code=line.code, charge_refs=line.fix_refs, add_modifier=wanted)
                for line in missing
            )
            if wanted
            else (),
        )
    ]
