"""Findings: what a rule reports, with the facts and fixes the card layer turns into suggestions.

A :class:`Finding` carries its catalogue id and severity, the codes and resources it is about, a
plain-English message (never a patient identifier or name), structured :class:`FindingFacts`
(minutes, units, plan dates, pair columns ...) and zero or more :class:`Fix` values, each saying
which billed line to change and how (set units, add or remove a modifier, replace the code).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from plugin.rules.catalogue import SEVERITY_RANK, RuleId, Severity, severity_of
from plugin.rules.counts import CodeCounts


@dataclass(frozen=True, slots=True)
class Fix:
    """One change to a billed line that would resolve (part of) a finding.

    ``charge_refs`` are the charges billing ``line_code`` (``ServiceRequest/..`` or
    ``Claim/..#item-n``); when the visit has no charge for the code they are the Procedures
    carrying the billed-units / billing-modifier extensions; empty when nothing is billed yet
    (the fix then applies to the line the user is about to create).

    ``new_line``: the fix adds a charge for ``line_code`` (with ``set_units``) beside the
    charges in ``charge_refs``, which it is modelled on (same patient, encounter, date and
    discipline modifier), and leaves those charges as they are.
    """

    line_code: str
    charge_refs: tuple[str, ...] = ()
    set_units: int | None = None
    add_modifier: str | None = None
    remove_modifier: str | None = None
    replace_code: str | None = None
    new_line: bool = False


@dataclass(frozen=True, slots=True)
class FindingFacts:
    """Structured numbers behind a finding. Each rule fills only the fields that apply.

    - ``minutes``: the minutes the finding is about (a code's attributed minutes, the visit's
      total for W-MIN-UNDER-8, the overlap for W-OVERLAP / E-PAIR-SAME-TIMEBLOCK; when one
      W-OVERLAP folds several pairs, the minutes two or more one-on-one services cover);
      ``raw_minutes``: documented minutes before overlap attribution.
    - ``units_allowed`` / ``units_billed``: for E-UNITS-EXCEED, W-CODE-ZERO-UNITS, W-MIN-UNDER-8,
      I-COMBINE-LINES (``units_billed`` 0: the codes are not billed; ``None``: not known).
    - ``allocations``: the acceptable allocations (I-TIE).
    - ``minutes_kept_by``: the code that keeps overlapping minutes (W-OVERLAP of one pair).
    - ``column1`` / ``column2`` / ``modifier_indicator``: the NCCI edit (pair findings,
      I-OTHER-PTP); ``pair_rule``: the reading applied (``cms`` / ``strict``);
      ``co_treatment``: for a pair judged across two disciplines' visits of one date, their
      disciplines (column-1 visit, column-2 visit), e.g. ``("PT", "OT")``.
    - ``plan_refs`` / ``plan_status`` / ``plan_start`` / ``plan_end`` / ``certified_on`` /
      ``days_since_certification``: plan-of-care findings.
    - ``treatment_days`` / ``last_report``: W-PROGRESS-REPORT-DUE (R-E6).
    - ``status``: the ignored status (I-IGNORED-STATUS); ``detail``: a short machine tag for
      the variant of a finding (e.g. ``"total"`` vs ``"code"`` for E-UNITS-EXCEED).
    """

    minutes: int | None = None
    raw_minutes: int | None = None
    units_allowed: int | None = None
    units_billed: int | None = None
    allocations: tuple[CodeCounts, ...] = ()
    minutes_kept_by: str | None = None
    column1: str | None = None
    column2: str | None = None
    modifier_indicator: int | None = None
    pair_rule: str | None = None
    plan_refs: tuple[str, ...] = ()
    plan_status: str | None = None
    plan_start: date | None = None
    plan_end: date | None = None
    certified_on: date | None = None
    days_since_certification: int | None = None
    status: str | None = None
    detail: str | None = None
    co_treatment: tuple[str, ...] = ()
    # Added for issue 15 (additive, defaulted), W-PROGRESS-REPORT-DUE: treatment days since
    # the episode's start or the last progress report, and that report's date.
    treatment_days: int | None = None
    last_report: date | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule outcome (I-6). ``severity`` always equals the catalogue's for ``rule``."""

    rule: RuleId
    severity: Severity
    codes: tuple[str, ...]
    resources: tuple[str, ...]
    message: str
    facts: FindingFacts = field(default_factory=FindingFacts)
    fixes: tuple[Fix, ...] = ()


_SEVERITY = {rule: severity_of(rule) for rule in RuleId}
_NO_FACTS = FindingFacts()  # frozen: one shared value for findings without facts


def make_finding(
    rule: RuleId,
    *,
    codes: Iterable[str],
    resources: Iterable[str],
    message: str,
    facts: FindingFacts | None = None,
    fixes: Iterable[Fix] = (),
) -> Finding:
    """Build a finding with the catalogue severity; codes and resources sorted, de-duplicated."""
    return Finding(
        rule=rule,
        severity=_SEVERITY[rule],
        codes=tuple(sorted(set(codes))),
        resources=tuple(sorted(set(resources))),
        message=message,
        facts=facts if facts is not None else _NO_FACTS,
        fixes=fixes if type(fixes) is tuple else tuple(fixes),
    )


def finding_sort_key(f: Finding) -> tuple[int, str, tuple[str, ...], tuple[str, ...], str]:
    """Deterministic order: errors, warnings, infos; then rule id, codes, resources, message."""
    return (SEVERITY_RANK[f.severity], f.rule.value, f.codes, f.resources, f.message)


def sort_findings(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """Findings in the deterministic order of :func:`finding_sort_key`."""
    return tuple(sorted(findings, key=finding_sort_key))
