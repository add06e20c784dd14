"""Group a record's services into visits: one patient, one date of service, one discipline.

Rules implemented (billing-rules.md):

* I-2.1 / R-H6 — only ``completed`` services enter a visit; the rest are set aside
  (:attr:`SetAsideReason.IGNORED_STATUS`, reported as I-IGNORED-STATUS).
* I-2.4 — the date of service is ``TimedService.service_date`` (local date of the start); a
  service with none is set aside (:attr:`SetAsideReason.NO_DATE`).
* R-B2 / R-B2b — one visit per calendar day, across encounters (morning and afternoon are one).
* R-B2a / I-2.5 — split by discipline: GP/GO/GN on the service's own modifiers, else on a charge
  for the same code, patient and date (for a service delivered to a group, also a charge for the
  group code 97150 that bills it, R-F2), else the discipline of a plan the service is based on,
  else ``UNKNOWN`` (one group; the rules raise W-DISCIPLINE-MODIFIER-MISSING).

Patient (POLICY): a service without a patient (no subject, or a Group subject, R-H8) is given the
CDS Hooks ``context.patientId`` when there is one, else the input's only patient when exactly one
patient appears anywhere in it (services, charges, encounters, plans, Patient resources); else it
is set aside (:attr:`SetAsideReason.NO_PATIENT`). The same fallback applies to charges.

Charge lines (POLICY, issue 14): a visit has read its charge lines when a charge joined it or one
of its services carries a billing modifier or billed units (a linked Claim line or the project
extensions, R-H7); otherwise :attr:`TherapyVisit.charge_lines_read` is False and no rule may
claim what was billed (the rules say "charges not available").

Charges (POLICY): a dated charge joins the visits of its patient on that date (its own GP/GO/GN
modifier, then its code, choose among several disciplines); an undated charge (the norm for
order-sign draft orders) joins the visits of its patient that contain its code, else the
patient's only visit. A Claim line linked to Procedures joins the visits of those Procedures.
Charges no visit can take are returned in :attr:`VisitGrouping.unattached_charges`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from operator import attrgetter

from fhir_mappings import codes
from fhir_mappings.model import (
    Charge,
    DeliveryMode,
    Discipline,
    EncounterInfo,
    PlanOfCare,
    SetAside,
    SetAsideReason,
    TherapyRecord,
    TherapyVisit,
    TimedService,
    VisitGrouping,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
VisitKey = tuple[str, date, Discipline]
LineKey = tuple[str, str, date | None]  # patient, code, date of service (None: undated)


def modifier_discipline(modifiers: Iterable[str]) -> Discipline | None:
    """The first GP/GO/GN among ``modifiers`` (R-G1), or ``None``."""
    for modifier in modifiers:
        found = codes.discipline_of_modifier(modifier)
        if found is not None:
            return found
    return None


def sole_patient(record: TherapyRecord) -> str | None:
    """The patient assumed for data without one: ``context_patient``, else the only patient."""
    if record.context_patient:
        return record.context_patient
    seen: set[str] = set(record.patients)
    seen.update(s.patient for s in record.services if s.patient)
    seen.update(c.patient for c in record.charges if c.patient)
    seen.update(e.patient for e in record.encounters.values() if e.patient)
    seen.update(p.patient for p in record.plans.values() if p.patient)
    return next(iter(seen)) if len(seen) == 1 else None


def group_visits(record: TherapyRecord) -> VisitGrouping:
    """Group completed services into :class:`TherapyVisit` values (I-2.1, I-2.4, I-2.5, R-B2)."""
    fallback_patient = sole_patient(record)
    set_aside: list[SetAside] = []
    buckets: dict[VisitKey, list[TimedService]] = {}
    # per (patient, code, date) billed line: the GP/GO/GN of each charge that has one, in order,
    # with the Procedures the charge is limited to (empty: any)
    line_disciplines: dict[LineKey, list[tuple[tuple[str, ...], Discipline]]] = {}
    for charge in record.charges:
        patient = charge.patient or fallback_patient
        if patient is None:
            continue
        found = modifier_discipline(charge.modifiers)
        if found is not None:
            line = (patient, charge.code, charge.service_date)
            line_disciplines.setdefault(line, []).append((charge.procedure_refs, found))

    for service in record.services:
        if service.status != "completed":
            set_aside.append(SetAside(service, SetAsideReason.IGNORED_STATUS))
            continue
        if service.service_date is None:
            set_aside.append(SetAside(service, SetAsideReason.NO_DATE))
            continue
        patient = service.patient or fallback_patient
        if patient is None:
            set_aside.append(SetAside(service, SetAsideReason.NO_PATIENT))
            continue
        discipline = _service_discipline(service, patient, record, line_disciplines)
        key = (patient, service.service_date, discipline)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [service]
        else:
            bucket.append(service)

    visit_keys = sorted(buckets, key=lambda k: (k[0], k[1], k[2].value))
    codes_of = {key: {s.code for s in buckets[key]} for key in visit_keys}
    refs_of = {key: {s.ref for s in buckets[key]} for key in visit_keys}
    attached: dict[VisitKey, list[Charge]] = {key: [] for key in visit_keys}
    unattached: list[Charge] = []
    for charge in record.charges:
        targets = _charge_visits(charge, fallback_patient, visit_keys, codes_of, refs_of)
        if not targets:
            unattached.append(charge)
        for key in targets:
            attached[key].append(charge)

    visits = []
    for key in visit_keys:
        services = _in_start_order(buckets[key])
        visit_charges = tuple(attached[key])
        plans, unresolved = _plans(services, visit_charges, record.plans)
        visits.append(
            TherapyVisit(
                patient=key[0],
                service_date=key[1],
                discipline=key[2],
                services=services,
                charges=visit_charges,
                plans=plans,
                unresolved_plan_refs=unresolved,
                encounters=_encounters(services, record.encounters),
                charge_lines_read=bool(visit_charges) or any(_bills(s) for s in services),
            )
        )
    return VisitGrouping(
        visits=tuple(visits), set_aside=tuple(set_aside), unattached_charges=tuple(unattached)
    )


def _bills(service: TimedService) -> bool:
    """The service carries billing itself: modifiers or billed units (a Claim line or the
    project extensions, R-H7)."""
    return bool(service.modifiers) or service.billed_units is not None


def _start_order(service: TimedService) -> tuple[bool, datetime, str]:
    """Start order; services without a start time come last (then by reference)."""
    start = service.start
    if start is None:
        return True, _EPOCH, service.ref
    return False, start, service.ref


_START_THEN_REF = attrgetter("start", "ref")


def _in_start_order(services: list[TimedService]) -> tuple[TimedService, ...]:
    """``services`` sorted by :func:`_start_order`; when all have a start that is the order of
    (start, reference), which a C-level key gives without a Python call per service."""
    if all(s.start is not None for s in services):
        return tuple(sorted(services, key=_START_THEN_REF))
    return tuple(sorted(services, key=_start_order))


_GROUP_CODES = tuple(sorted(c for c in codes.CODE_LIST.codes if codes.is_group_code(c)))


def _delivered_to_group(service: TimedService) -> bool:
    return service.delivery_mode is DeliveryMode.GROUP or service.subject_is_group


def _service_discipline(
    service: TimedService,
    patient: str,
    record: TherapyRecord,
    line_disciplines: Mapping[LineKey, list[tuple[tuple[str, ...], Discipline]]],
) -> Discipline:
    if service.modifiers:
        found = modifier_discipline(service.modifiers)
        if found is not None:
            return found
    # a service delivered to a group is billed as the group code (R-F2, R-H8): its charge
    # is one for that code as well as one for the code documented
    billed_as = (service.code, *_GROUP_CODES) if _delivered_to_group(service) else (service.code,)
    for code in billed_as:
        for day in (service.service_date, None):
            for procedure_refs, discipline in line_disciplines.get((patient, code, day), ()):
                if procedure_refs and service.ref not in procedure_refs:
                    continue
                return discipline
    for ref in service.plan_refs:
        plan = record.plans.get(ref)
        if plan is not None and plan.discipline is not Discipline.UNKNOWN:
            return plan.discipline
    return Discipline.UNKNOWN


def _charge_visits(
    charge: Charge,
    fallback_patient: str | None,
    visit_keys: list[VisitKey],
    codes_of: Mapping[VisitKey, set[str]],
    refs_of: Mapping[VisitKey, set[str]],
) -> list[VisitKey]:
    if charge.procedure_refs:
        linked = [key for key in visit_keys if not refs_of[key].isdisjoint(charge.procedure_refs)]
        if linked:
            return linked
    patient = charge.patient or fallback_patient
    if patient is None:
        return []
    mine = [key for key in visit_keys if key[0] == patient]
    if charge.service_date is not None:
        mine = [key for key in mine if key[1] == charge.service_date]
    if not mine:
        return []
    discipline = modifier_discipline(charge.modifiers)
    if discipline is not None:
        same = [key for key in mine if key[2] is discipline]
        if same:
            mine = same
    with_code = [key for key in mine if charge.code in codes_of[key]]
    if with_code:
        return with_code
    return mine if len(mine) == 1 else []


def _plans(
    services: Iterable[TimedService],
    charges: Iterable[Charge],
    plans: Mapping[str, PlanOfCare],
) -> tuple[tuple[PlanOfCare, ...], tuple[str, ...]]:
    resolved: list[PlanOfCare] = []
    unresolved: list[str] = []
    refs: list[str] = []
    for service in services:
        refs.extend(service.plan_refs)
    for charge in charges:
        refs.extend(charge.plan_refs)
    for ref in dict.fromkeys(refs):  # each reference once: a repeat would change nothing
        plan = plans.get(ref)
        if plan is not None:
            if plan not in resolved:
                resolved.append(plan)
        elif ref not in unresolved:
            unresolved.append(ref)
    return tuple(resolved), tuple(unresolved)


def _encounters(
    services: Iterable[TimedService], encounters: Mapping[str, EncounterInfo]
) -> tuple[EncounterInfo, ...]:
    found: list[EncounterInfo] = []
    for ref in dict.fromkeys([s.encounter for s in services]):  # each reference once, in order
        if ref is None:
            continue
        info = encounters.get(ref)
        if info is not None and info not in found:
            found.append(info)
    return tuple(found)
