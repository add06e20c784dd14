"""The audit's CSV files: column names, cell formatting, patient pseudonyms.

Cells that a spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@`` first) are
prefixed with ``'`` -- ids and references come from the input and are not trusted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from plugin.audit.accounting import Rejection
from plugin.rules import Finding, VisitAnalysis, billed_vs_allowed, over_under_billed

VISIT_COLUMNS = (
    "patient",
    "date",
    "discipline",
    "payer_rule",
    "total_timed_minutes",
    "units_allowed_total",
    "units",
    "minutes",
    "units_billed",
    "units_over_billed",
    "units_under_billed",
    "pair",
    "findings",
    "errors",
    "warnings",
    "finding_ids",
    "source",
    "payer_rule_reason",  # issue 15: which payer rule and why (added last)
)
FINDING_COLUMNS = (
    "patient",
    "date",
    "discipline",
    "rule",
    "severity",
    "codes",
    "resources",
    "message",
    "source",
)
REJECTED_COLUMNS = ("kind", "reason_code", "source", "location", "resource", "reason")

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: str) -> str:
    """``value`` made safe to open in a spreadsheet."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def per_code(counts: Mapping[str, int]) -> str:
    """``{"97140": 1, "97530": 2}`` -> ``"97140=1;97530=2"`` (codes sorted)."""
    return ";".join(f"{code}={counts[code]}" for code in sorted(counts))


class Pseudonyms:
    """Patient references as written, or keyed hashes of them (``--pseudonymize``).

    With a key, ``Patient/123`` becomes ``Patient/~`` + 16 hex digits of HMAC-SHA256; the same
    key gives the same pseudonym in every run, so audits can be compared without sharing ids.
    """

    __slots__ = ("_key", "_memo")

    def __init__(self, key: bytes | None) -> None:
        self._key = key
        self._memo: dict[str, str] = {}

    @property
    def active(self) -> bool:
        return self._key is not None

    def __call__(self, patient: str) -> str:
        if self._key is None or not patient:
            return patient
        known = self._memo.get(patient)
        if known is None:
            digest = hmac.new(self._key, patient.encode(), hashlib.sha256).hexdigest()[:16]
            kind = patient.split("/", 1)[0] if "/" in patient else "Patient"
            known = self._memo[patient] = f"{kind}/~{digest}"
            if len(self._memo) > 4096:  # a shard's patients at most; keep it bounded
                self._memo.clear()
        return known


def visit_row(visit: VisitAnalysis, patient: str, source: str) -> list[str]:
    """One ``visits.csv`` row. The billed columns are empty when no charge line was read for
    the visit (nothing says what was billed); ``units_billed`` lists the codes whose billed
    units are known (:func:`~plugin.rules.billed_vs_allowed`)."""
    billing = billed_vs_allowed(visit)
    if billing is None:
        billed_cells = ["", "", ""]
    else:
        over, under = over_under_billed(billing)
        billed_cells = [per_code({b.code: b.billed for b in billing}), str(over), str(under)]
    errors = sum(1 for f in visit.findings if f.severity.value == "error")
    warnings = sum(1 for f in visit.findings if f.severity.value == "warning")
    return [
        cell(patient),
        visit.date.isoformat(),
        visit.discipline.value,
        visit.payer_rule,
        str(visit.total_timed_minutes),
        str(visit.units_allowed_total),
        per_code(visit.units),
        per_code(visit.minutes),
        *billed_cells,
        visit.pair.status.value,
        str(len(visit.findings)),
        str(errors),
        str(warnings),
        ";".join(f.rule.value for f in visit.findings),
        cell(source),
        cell(visit.payer_rule_reason),
    ]


def finding_rows(
    findings: Iterable[Finding], patient: str, day: str, discipline: str, source: str
) -> list[list[str]]:
    return [
        [
            cell(patient),
            day,
            discipline,
            f.rule.value,
            f.severity.value,
            ";".join(f.codes),
            cell(";".join(f.resources)),
            f.message,
            cell(source),
        ]
        for f in findings
    ]


def rejected_row(rejection: Rejection) -> list[str]:
    return [
        rejection.kind,
        rejection.code,
        cell(rejection.source),
        cell(rejection.location),
        cell(rejection.resource),
        rejection.reason,
    ]
