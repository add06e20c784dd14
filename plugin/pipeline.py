"""One path from FHIR to findings, shared by ``check``, ``audit`` and the CDS services.

Whatever enters (a file, a bundle, a CDS Hooks request) becomes a
:class:`~fhir_mappings.model.TherapyRecord`, is grouped into visits and analysed by the rules.
Keeping this in one place is what makes the same visit give the same findings everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_mappings import group_visits
from fhir_mappings.model import TherapyRecord, VisitGrouping
from plugin.rules import Analysis, PairRule, PayerRule, PtpTable, analyze


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
) -> CheckResult:
    """Group the record's services into visits (I-2) and run the rule book over them."""
    grouping = group_visits(record)
    analysis = analyze(grouping, payer_rule=payer_rule, pair_rule=pair_rule, ptp=ptp)
    return CheckResult(record=record, grouping=grouping, analysis=analysis)
