"""One path from FHIR to findings, shared by ``check``, ``audit`` and the CDS services.

Whatever enters (a file, a bundle, a CDS Hooks request) becomes a
:class:`~fhir_mappings.model.TherapyRecord`, is grouped into visits and analysed by the rules.
Keeping this in one place is what makes the same visit give the same findings everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fhir_mappings import group_visits
from fhir_mappings.model import TherapyRecord, VisitGrouping
from plugin.rules import Analysis, PairRule, PayerRule, PtpTable, analyze
from plugin.rules.cms_data import RuleTables
from plugin.rules.payer import PayerChoice
from plugin.rules.progress import therapy_history
from plugin.settings import MAX_PROCEDURES_PER_VISIT


class TooManyProceduresError(ValueError):
    """One visit -- or one CDS call -- carries more therapy Procedures than the cap.

    The message says what (how many, where) and the limit with its setting; the callers add what
    to do (the services answer 413, ``check`` prints it, ``audit`` rejects the record). It names
    a date and a discipline, never a patient.
    """

    def __init__(self, count: int, cap: int, where: str) -> None:
        self.count = count
        self.cap = cap
        super().__init__(
            f"{where} has {count} therapy Procedures, more than the {cap} one visit may have"
            " (THERAPY_CDS_MAX_PROCEDURES_PER_VISIT); nothing of it was analysed"
        )


def require_procedures_within(count: int, cap: int, where: str) -> None:
    """Raise :class:`TooManyProceduresError` when ``count`` is over ``cap``."""
    if count > cap:
        raise TooManyProceduresError(count, cap, where)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A record, its visits and their analysis."""

    record: TherapyRecord
    grouping: VisitGrouping
    analysis: Analysis


def check_record(
    record: TherapyRecord,
    *,
    payer_rule: PayerRule,
    pair_rule: PairRule,
    ptp: PtpTable | None = None,
    max_procedures_per_visit: int = MAX_PROCEDURES_PER_VISIT,
    visit_history: bool = True,
    tables: RuleTables | None = None,
    payer: PayerChoice | None = None,
) -> CheckResult:
    """Group the record's services into visits (I-2) and run the rule book over them.

    ``visit_history``: the record holds the patient's visit history (a bundle or export is
    read as the record of care; a CDS call only when its history was had); when False the
    progress-report interval (R-E6) is not checked and the analysis says so.

    Each visit's payer rule comes from the record's Coverage for its date of service through
    ``payer`` (default: the shipped payer mapping), ``payer_rule`` being the configured default
    (or, with ``payer.override``, the rule for every visit).

    A visit with more than ``max_procedures_per_visit`` Procedures raises
    :class:`TooManyProceduresError` before any rule runs. ``tables``: the CMS data applied
    (default: the process's, set at start-up by :func:`plugin.rules.cms_data.use_tables`).
    """
    grouping = group_visits(record)
    for visit in grouping.visits:
        require_procedures_within(
            len(visit.services),
            max_procedures_per_visit,
            f"the {visit.discipline.value} visit of {visit.service_date.isoformat()}",
        )
    choice = payer if payer is not None else PayerChoice()
    payers = replace(choice, default=payer_rule).decide_all(
        record.coverages, {(v.patient, v.service_date) for v in grouping.visits}
    )
    analysis = analyze(
        grouping,
        payer_rule=payer_rule,
        pair_rule=pair_rule,
        ptp=ptp,
        history=therapy_history(record, grouping.visits) if visit_history else None,
        visit_history=visit_history,
        tables=tables,
        payers=payers,
    )
    return CheckResult(record=record, grouping=grouping, analysis=analysis)
