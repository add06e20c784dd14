"""Small builders of domain objects for the rule tests (no FHIR JSON)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, timezone

from fhir_mappings.model import (
    CPT_SYSTEM,
    Charge,
    ChargeSource,
    DeliveryMode,
    Discipline,
    PlanOfCare,
    TherapyVisit,
    TimedService,
    TimingKind,
)
from plugin.rules import (
    Finding,
    PairRule,
    PayerRule,
    StaticCodeCatalog,
    VisitAnalysis,
    analyze_visit,
)

DOS = date(2025, 3, 4)
T0 = datetime(2025, 3, 4, 14, 0, tzinfo=UTC)  # 09:00 at UTC-05:00, same local date

TIMED_ONE_ON_ONE = (
    "97110",
    "97112",
    "97116",
    "97140",
    "97530",
    "97535",
    "97032",
    "97033",
    "97034",
    "97035",
    "97036",
)
UNTIMED = ("97010", "97012", "97014", "G0283", "97150", "97161", "97162", "97163", "97164")
CODES = StaticCodeCatalog.of(timed=TIMED_ONE_ON_ONE, one_on_one=TIMED_ONE_ON_ONE)


def svc(
    code: str,
    at: float | None = 0,
    minutes: float | None = 15,
    *,
    ref: str | None = None,
    base: datetime = T0,
    start: datetime | None = None,
    end: datetime | None = None,
    timing: TimingKind = TimingKind.PERIOD,
    status: str = "completed",
    modifiers: Iterable[str] = (),
    billed_units: int | None = None,
    encounter: str | None = "Encounter/e1",
    performers: Iterable[str] = ("Practitioner/t1",),
    body_sites: Iterable[str] = (),
    group: bool = False,
    subject_is_group: bool = False,
    plan_refs: Iterable[str] = ("CarePlan/cp1",),
    has_reason: bool = True,
    spans_midnight: bool = False,
    service_date: date | None = DOS,
) -> TimedService:
    """A service of ``minutes`` starting ``at`` minutes after ``base`` (or explicit times)."""
    if start is None and at is not None:
        start = base + timedelta(minutes=at)
    if end is None and start is not None and minutes is not None and at is not None:
        end = start + timedelta(minutes=minutes)
    return TimedService(
        ref=ref or f"Procedure/{code}-{at}",
        code=code,
        system=CPT_SYSTEM,
        status=status,
        timing=timing,
        start=start,
        end=end,
        service_date=service_date,
        spans_midnight=spans_midnight,
        patient="Patient/P1",
        encounter=encounter,
        performers=tuple(performers),
        body_sites=tuple(body_sites),
        delivery_mode=DeliveryMode.GROUP if group else DeliveryMode.INDIVIDUAL,
        subject_is_group=subject_is_group,
        modifiers=tuple(modifiers),
        billed_units=billed_units,
        plan_refs=tuple(plan_refs),
        has_reason=has_reason,
    )


def charge(
    code: str,
    units: int | None,
    *modifiers: str,
    ref: str | None = None,
    status: str | None = "draft",
) -> Charge:
    return Charge(
        ref=ref or f"ServiceRequest/sr-{code}",
        source=ChargeSource.DRAFT_ORDER,
        code=code,
        system=CPT_SYSTEM,
        units=units,
        modifiers=modifiers,
        patient="Patient/P1",
        status=status,
    )


def plan(
    ref: str = "CarePlan/cp1",
    *,
    status: str | None = "active",
    start: date | None = date(2025, 2, 1),
    end: date | None = date(2025, 4, 30),
    certifications: Iterable[date] = (),
    kind: str = "CarePlan",
) -> PlanOfCare:
    return PlanOfCare(
        ref=ref,
        kind=kind,
        status=status,
        start=start,
        end=end,
        certifications=tuple(certifications),
        discipline=Discipline.PT,
        patient="Patient/P1",
    )


def visit(
    *services: TimedService,
    charges: Iterable[Charge] = (),
    plans: Iterable[PlanOfCare] | None = None,
    discipline: Discipline = Discipline.PT,
    on: date = DOS,
    unresolved: Iterable[str] = (),
) -> TherapyVisit:
    return TherapyVisit(
        patient="Patient/P1",
        service_date=on,
        discipline=discipline,
        services=services,
        charges=tuple(charges),
        plans=tuple(plans) if plans is not None else (plan(),),
        unresolved_plan_refs=tuple(unresolved),
    )


def tz(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


def run(
    v: TherapyVisit, payer_rule: PayerRule = "cms", pair_rule: PairRule = "cms"
) -> VisitAnalysis:
    return analyze_visit(v, payer_rule=payer_rule, pair_rule=pair_rule, codes=CODES)


def rules_of(analysis: VisitAnalysis) -> list[str]:
    return [f.rule.value for f in analysis.findings]


def only(analysis: VisitAnalysis, rule: str) -> Finding:
    found = [f for f in analysis.findings if f.rule.value == rule]
    assert len(found) == 1, (rule, rules_of(analysis))
    return found[0]
