"""Running totals of an audit: small, mergeable counters (one per task, summed by the runner).

Nothing here grows with the number of visits: counts are keyed by rule id, pair status, month,
discipline, code, resource type and rejection code, all of them bounded vocabularies, and by
practitioner and site (one entry per therapist or place named in the input: a clinic's staff
list, not its visits).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugin.audit.accounting import RESOURCE_KINDS, RecordAccount, Rejection
from plugin.rules import (
    Finding,
    PairStatus,
    Severity,
    VisitAnalysis,
    billed_vs_allowed,
    over_under_billed,
)

#: The by-practitioner / by-site bucket of visits whose input names no therapist or place.
NOT_RECORDED = "(not recorded)"
_BILLING_KEYS = (
    "visits_with_charges",
    "visits_without_charges",
    "units_billed",
    "units_allowed",
    "units_over_billed",
    "units_under_billed",
    "visits_over_billed",
    "visits_under_billed",
)
_PARTY_KEYS = (
    "visits",
    "findings",
    "errors",
    "warnings",
    "units_over_billed",
    "units_under_billed",
)

PAIR_ORDER = tuple(status.value for status in PairStatus)
SEVERITIES = tuple(s.value for s in Severity)


@dataclass(slots=True)
class CodeTotals:
    visits: int = 0
    documented_minutes: int = 0
    counted_minutes: int = 0
    units: int = 0

    def merge(self, other: CodeTotals) -> None:
        self.visits += other.visits
        self.documented_minutes += other.documented_minutes
        self.counted_minutes += other.counted_minutes
        self.units += other.units


@dataclass(slots=True)
class Tally:
    """Every number of ``summary.json``; :meth:`merge` adds another task's tally."""

    visits: int = 0
    visits_with_findings: int = 0
    visits_with_errors: int = 0
    patients: int = 0
    timed_minutes: int = 0
    units_allowed: int = 0
    findings_by_rule: Counter[str] = field(default_factory=Counter)
    findings_by_severity: Counter[str] = field(default_factory=Counter)
    input_findings_by_rule: Counter[str] = field(default_factory=Counter)
    pair_status: Counter[str] = field(default_factory=Counter)
    disciplines: Counter[str] = field(default_factory=Counter)
    months: dict[str, Counter[str]] = field(default_factory=dict)
    codes: dict[str, CodeTotals] = field(default_factory=dict)
    billing: dict[str, Counter[str]] = field(default_factory=dict)  # by payer rule
    practitioners: dict[str, Counter[str]] = field(default_factory=dict)
    sites: dict[str, Counter[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # practitioner / site key -> name
    # reconciliation
    files_read: int = 0
    files_rejected: int = 0
    bulk_manifests: int = 0
    resources_read: int = 0
    used: int = 0
    out_of_scope: int = 0
    duplicates: int = 0
    rejected: int = 0
    values_not_used: int = 0
    records: int = 0
    records_mapper_disagrees: int = 0
    blank_lines: int = 0
    out_of_scope_by_type: Counter[str] = field(default_factory=Counter)
    rejected_by_code: Counter[str] = field(default_factory=Counter)

    # ---- visits and findings

    def add_visit(
        self,
        visit: VisitAnalysis,
        practitioners: Sequence[str] = (),
        site: str = "",
        names: Mapping[str, str] | None = None,
    ) -> None:
        """Count ``visit``; ``practitioners`` (its performers) and ``site`` key the
        by-practitioner and by-site tables (a visit counts under each of its performers),
        ``names`` gives their display names when the input holds them."""
        self.visits += 1
        self.timed_minutes += visit.total_timed_minutes
        units = visit.units
        self.units_allowed += sum(units.values())
        self.pair_status[visit.pair.status.value] += 1
        self.disciplines[visit.discipline.value] += 1
        month_key = visit.date.isoformat()[:7]
        month = self.months.get(month_key)
        if month is None:
            month = self.months[month_key] = Counter()
        month["visits"] += 1
        if visit.findings:
            self.visits_with_findings += 1
            month["visits_with_findings"] += 1
            errors = False
            for finding in visit.findings:
                severity = finding.severity.value
                self.findings_by_rule[finding.rule.value] += 1
                self.findings_by_severity[severity] += 1
                month[severity] += 1
                errors = errors or severity == "error"
            month["findings"] += len(visit.findings)
            if errors:
                self.visits_with_errors += 1
                month["visits_with_errors"] += 1
        over = under = 0
        billing = billed_vs_allowed(visit)
        rule = visit.payer_rule.value  # a plain str: the key of a JSON object
        by_rule = self.billing.get(rule)
        if by_rule is None:
            by_rule = self.billing[rule] = Counter()
        if billing is None:
            by_rule["visits_without_charges"] += 1
            month["visits_without_charges"] += 1
        else:
            over, under = over_under_billed(billing)
            by_rule["visits_with_charges"] += 1
            by_rule["units_billed"] += sum(b.billed for b in billing)
            by_rule["units_allowed"] += sum(b.allowed for b in billing)
            by_rule["units_over_billed"] += over
            by_rule["units_under_billed"] += under
            by_rule["visits_over_billed"] += over > 0
            by_rule["visits_under_billed"] += under > 0
            month["units_over_billed"] += over
            month["units_under_billed"] += under
        errors_here = sum(1 for f in visit.findings if f.severity is Severity.ERROR)
        warnings_here = sum(1 for f in visit.findings if f.severity is Severity.WARNING)
        for table, keys in (
            (self.practitioners, practitioners or (NOT_RECORDED,)),
            (self.sites, (site or NOT_RECORDED,)),
        ):
            for key in keys:
                row = table.get(key)
                if row is None:
                    row = table[key] = Counter()
                row["visits"] += 1
                row["findings"] += len(visit.findings)
                row["errors"] += errors_here
                row["warnings"] += warnings_here
                row["units_over_billed"] += over
                row["units_under_billed"] += under
                name = (names or {}).get(key)
                if name:
                    self.add_name(key, name)
        raw, counted = visit.raw_minutes, visit.minutes
        for code in raw.keys() | units.keys():
            totals = self.codes.get(code)
            if totals is None:
                totals = self.codes[code] = CodeTotals()
            totals.visits += 1
            totals.documented_minutes += raw.get(code, 0)
            totals.counted_minutes += counted.get(code, 0)
            totals.units += units.get(code, 0)

    def add_name(self, key: str, name: str) -> None:
        """The display name of a practitioner or site; the same key named differently in two
        inputs keeps the smallest name, so any merge order gives the same table."""
        if not name:
            return
        known = self.names.get(key)
        if known is None or name < known:
            self.names[key] = name

    def add_input_finding(self, finding: Finding) -> None:
        """A finding not tied to a visit (a set-aside service, an unattached charge)."""
        self.findings_by_rule[finding.rule.value] += 1
        self.findings_by_severity[finding.severity.value] += 1
        self.input_findings_by_rule[finding.rule.value] += 1

    # ---- reconciliation

    def add_account(self, account: RecordAccount) -> None:
        self.records += 1
        self.resources_read += account.read
        self.used += account.used
        self.out_of_scope += account.out_of_scope
        self.duplicates += account.duplicates
        self.out_of_scope_by_type.update(account.out_of_scope_by_type)
        if not account.mapper_agrees:
            self.records_mapper_disagrees += 1
        for rejection in account.rejections:
            self.add_rejection(rejection, counted_as_read=True)

    def add_rejection(self, rejection: Rejection, *, counted_as_read: bool) -> None:
        """Count a rejection; ``counted_as_read`` is False when it was not yet in ``read``."""
        self.rejected_by_code[rejection.code] += 1
        if rejection.kind == "file":
            self.files_rejected += 1
        elif rejection.kind in RESOURCE_KINDS:
            self.rejected += 1
            if not counted_as_read:
                self.resources_read += 1
        else:
            self.values_not_used += 1

    def merge(self, other: Tally) -> None:
        for name in (
            "visits",
            "visits_with_findings",
            "visits_with_errors",
            "patients",
            "timed_minutes",
            "units_allowed",
            "files_read",
            "files_rejected",
            "bulk_manifests",
            "resources_read",
            "used",
            "out_of_scope",
            "duplicates",
            "rejected",
            "values_not_used",
            "records",
            "records_mapper_disagrees",
            "blank_lines",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in (
            "findings_by_rule",
            "findings_by_severity",
            "input_findings_by_rule",
            "pair_status",
            "disciplines",
            "out_of_scope_by_type",
            "rejected_by_code",
        ):
            getattr(self, name).update(getattr(other, name))
        for month, counts in other.months.items():
            self.months.setdefault(month, Counter()).update(counts)
        for code, totals in other.codes.items():
            self.codes.setdefault(code, CodeTotals()).merge(totals)
        for mine, theirs in (
            (self.billing, other.billing),
            (self.practitioners, other.practitioners),
            (self.sites, other.sites),
        ):
            for key, counts in theirs.items():
                mine.setdefault(key, Counter()).update(counts)
        for key, name in other.names.items():
            self.add_name(key, name)

    # ---- summary.json

    def _parties(self, table: Mapping[str, Counter[str]]) -> dict[str, dict[str, Any]]:
        """Most findings first, then most visits, then by key; the name when one is known."""
        ordered = sorted(
            table.items(), key=lambda kv: (-kv[1]["findings"], -kv[1]["visits"], kv[0])
        )
        return {
            key: {"name": self.names.get(key, ""), **{k: c[k] for k in _PARTY_KEYS}}
            for key, c in ordered
        }

    def reconciliation(self) -> dict[str, Any]:
        accounted = self.used + self.out_of_scope + self.duplicates + self.rejected
        return {
            "resources_read": self.resources_read,
            "used": self.used,
            "out_of_scope": self.out_of_scope,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "balanced": accounted == self.resources_read and self.records_mapper_disagrees == 0,
            "unaccounted": self.resources_read - accounted,
            "values_not_used": self.values_not_used,
            "files_read": self.files_read,
            "files_rejected": self.files_rejected,
            "bulk_manifests": self.bulk_manifests,
            "blank_lines": self.blank_lines,
            "out_of_scope_by_type": dict(sorted(self.out_of_scope_by_type.items())),
            "rejected_by_reason": dict(sorted(self.rejected_by_code.items())),
        }

    def summary(self) -> dict[str, Any]:
        findings_total = sum(self.findings_by_rule.values())
        return {
            "totals": {
                "visits": self.visits,
                "patients": self.patients,
                "visits_with_findings": self.visits_with_findings,
                "visits_with_errors": self.visits_with_errors,
                "findings": findings_total,
                "findings_on_visits": findings_total - sum(self.input_findings_by_rule.values()),
                "findings_not_on_a_visit": sum(self.input_findings_by_rule.values()),
                "errors": self.findings_by_severity.get("error", 0),
                "warnings": self.findings_by_severity.get("warning", 0),
                "infos": self.findings_by_severity.get("info", 0),
                "timed_minutes": self.timed_minutes,
                "units_allowed": self.units_allowed,
            },
            "findings_by_rule": dict(
                sorted(self.findings_by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
            ),
            "findings_not_on_a_visit_by_rule": dict(sorted(self.input_findings_by_rule.items())),
            "findings_by_severity": {s: self.findings_by_severity.get(s, 0) for s in SEVERITIES},
            "pair_status": {s: self.pair_status.get(s, 0) for s in PAIR_ORDER},
            "disciplines": dict(sorted(self.disciplines.items())),
            "by_month": {
                month: {
                    "visits": c["visits"],
                    "visits_with_findings": c["visits_with_findings"],
                    "visits_with_errors": c["visits_with_errors"],
                    "findings": c["findings"],
                    "errors": c["error"],
                    "warnings": c["warning"],
                    "infos": c["info"],
                    "visits_without_charges": c["visits_without_charges"],
                    "units_over_billed": c["units_over_billed"],
                    "units_under_billed": c["units_under_billed"],
                }
                for month, c in sorted(self.months.items())
            },
            "billing_by_payer_rule": {
                rule: {key: c[key] for key in _BILLING_KEYS}
                for rule, c in sorted(self.billing.items())
            },
            "by_practitioner": self._parties(self.practitioners),
            "by_site": self._parties(self.sites),
            "units_by_code": {
                code: {
                    "visits": t.visits,
                    "documented_minutes": t.documented_minutes,
                    "counted_minutes": t.counted_minutes,
                    "units": t.units,
                }
                for code, t in sorted(self.codes.items())
            },
            "reconciliation": self.reconciliation(),
        }
