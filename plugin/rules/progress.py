"""W-PROGRESS-REPORT-DUE: a progress report at least once every 10 treatment days (R-E6).

The first reporting period begins on the first day of the episode (CMS Pub. 100-02 ch. 15
§220.3 D); here that is the start of the plan of care the visit's services are linked to.

- **Treatment days** (POLICY): the distinct dates of service, for the visit's patient and
  discipline, of (a) the analysed therapy visits (completed services) and (b) the patient's
  Encounters that took place (R5 status in-progress, on-hold, completed, discharged or
  discontinued; R4 codes read as their R5 equivalents) whose discipline is known: from
  Encounter.serviceType / Encounter.type, else from the therapy services documented on them.
  Several encounters on one date are one day; an encounter of unknown discipline, one of another
  discipline and one before the plan's start do not count.
- **Progress reports**: DocumentReferences typed with a LOINC progress-note code
  (:data:`fhir_mappings.codes.PROGRESS_NOTE_TYPES`) of the visit's discipline, or the generic
  11506-3; the latest one dated on or after the plan's start and on or before the visit
  ends the reporting period on its date: the count restarts the next treatment day.
- The finding is raised on the visit that is the 10th (or later) treatment day of the period.

When the visit history is not available (a CDS call whose history key could not be had), no
finding is raised: :data:`HISTORY_NOT_CHECKED` says so on the visit's summary.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from fhir_mappings.model import (
    Discipline,
    PlanOfCare,
    ProgressReport,
    TherapyRecord,
    TherapyVisit,
)
from fhir_mappings.visits import sole_patient
from plugin.rules.catalogue import RuleId
from plugin.rules.findings import Finding, FindingFacts, make_finding

REPORT_INTERVAL_DAYS = 10
"""R-E6: a progress report at least once every 10 treatment days."""

#: Encounter statuses (R5 codes; the mapper reads R4 codes as their R5 equivalents) of an
#: encounter that took place: a treatment day. POLICY: planned, cancelled, entered-in-error and
#: unknown do not count.
TREATMENT_STATUSES = frozenset(
    {"in-progress", "on-hold", "completed", "discharged", "discontinued"}
)

HISTORY_NOT_CHECKED = (
    "Progress report interval not checked: no visit history (the patient's therapy encounters"
    " and progress reports could not be read)."
)

_UNKNOWN = Discipline.UNKNOWN
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class TherapyHistory:
    """The patient's treatment days per discipline and progress reports an input holds."""

    days: Mapping[tuple[str, Discipline], tuple[date, ...]]  # sorted, distinct
    reports: Mapping[str, tuple[ProgressReport, ...]]  # per patient, sorted by date


def therapy_history(record: TherapyRecord, visits: Sequence[TherapyVisit]) -> TherapyHistory:
    """The treatment days and progress reports of ``record`` and its ``visits`` (R-E6)."""
    fallback = sole_patient(record)
    days: dict[tuple[str, Discipline], set[date]] = {}
    by_encounter: dict[str, set[Discipline]] = {}
    for visit in visits:
        if visit.discipline is not _UNKNOWN:
            days.setdefault((visit.patient, visit.discipline), set()).add(visit.service_date)
            for service in visit.services:
                if service.encounter is not None:
                    by_encounter.setdefault(service.encounter, set()).add(visit.discipline)
    for encounter in record.encounters.values():
        patient = encounter.patient or fallback
        if (
            patient is None
            or encounter.service_date is None
            or encounter.status not in TREATMENT_STATUSES
        ):
            continue
        disciplines = (
            {encounter.discipline}
            if encounter.discipline is not _UNKNOWN
            else by_encounter.get(encounter.ref, set())
        )
        for discipline in disciplines:
            days.setdefault((patient, discipline), set()).add(encounter.service_date)
    reports: dict[str, list[ProgressReport]] = {}
    for report in record.progress_reports:
        patient = report.patient or fallback
        if patient is not None:
            reports.setdefault(patient, []).append(report)
    return TherapyHistory(
        days={key: tuple(sorted(found)) for key, found in days.items()},
        reports={
            key: tuple(sorted(found, key=lambda r: (r.date, r.ref)))
            for key, found in reports.items()
        },
    )


def episode_plan(visit: TherapyVisit) -> PlanOfCare | None:
    """The plan of care whose start opens the visit's episode: of the visit's resolved plans
    of its discipline (or of none) whose period holds the date, the latest-starting one."""
    on = visit.service_date
    candidates = [
        p
        for p in visit.plans
        if p.start is not None
        and p.start <= on
        and (p.end is None or on <= p.end)
        and p.discipline in (visit.discipline, _UNKNOWN)
    ]
    return max(candidates, key=lambda p: (p.start or on, p.ref), default=None)


def progress_report_due(
    visit: TherapyVisit, history: TherapyHistory, codes: Sequence[str]
) -> Finding | None:
    """W-PROGRESS-REPORT-DUE for ``visit`` (R-E6), or ``None``; ``codes``: the visit's codes."""
    if visit.discipline is _UNKNOWN:
        return None
    plan = episode_plan(visit)
    if plan is None or plan.start is None:
        return None
    on, episode_start = visit.service_date, plan.start
    last: ProgressReport | None = None
    reports = history.reports.get(visit.patient, ())
    # the latest report on or before the visit: scan back from it, stop before the episode
    for i in range(bisect_right(reports, on, key=lambda r: r.date) - 1, -1, -1):
        report = reports[i]
        if report.date < episode_start:
            break
        if report.discipline in (visit.discipline, _UNKNOWN):
            last = report
            break
    since = last.date + _DAY if last is not None else episode_start
    days = history.days.get((visit.patient, visit.discipline), ())
    first, upto = bisect_left(days, since), bisect_right(days, on)
    count = upto - first
    if count < REPORT_INTERVAL_DAYS:
        return None
    tenth = days[first + REPORT_INTERVAL_DAYS - 1]
    period = (
        f"the last progress report ({last.date})"
        if last is not None
        else f"the start of the plan of care ({episode_start})"
    )
    return make_finding(
        RuleId.W_PROGRESS_REPORT_DUE,
        codes=codes,
        resources=[plan.ref, *((last.ref,) if last is not None else ())],
        message=(
            f"{on} is {visit.discipline.value} treatment day {count} since {period}, with no"
            f" progress report since; one is due at least every {REPORT_INTERVAL_DAYS}"
            " treatment days"
            + (f" (it was due on {tenth})" if tenth != on else "")
            + ": write it with this visit's note."
        ),
        facts=FindingFacts(
            plan_refs=(plan.ref,),
            plan_start=episode_start,
            treatment_days=count,
            last_report=last.date if last is not None else None,
        ),
    )
