"""Findings -> CDS Hooks cards.

- one card per error or warning finding (error -> ``critical``, warning -> ``warning``), its
  ``source.topic`` the finding id, its summary under 140 characters with no patient identifier,
  its detail in Markdown with the minutes, the units and the rule's source;
- ``overrideReasons`` that fit the finding;
- suggestions where the fix is mechanical: one action per draft ServiceRequest that sets the
  supported units, adds or removes a modifier, replaces the code, removes a charge with no
  billable units or adds a new one. This module says what to change
  (:class:`fhir_mappings.writeback.ChargeChange`); :mod:`fhir_mappings.writeback` writes it as
  FHIR for the request's version, proves every kind of change valid at start-up and checks each
  written draft before it is sent;
- one ``info`` summary card per visit with the units per code and every informational finding.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from cds_hooks.models import SUMMARY_MAX, Action, Card, Coding, Link, Source, Suggestion
from fhir_mappings.writeback import DELETE, ChargeChange, DraftOrders, NewCharge
from plugin.markdown import quote_markdown
from plugin.rules import Analysis, Finding, Fix, PairResult, VisitAnalysis
from plugin.rules.billing import NCCI_MODIFIERS
from plugin.rules.catalogue import CATALOGUE, SEVERITY_RANK, RuleId, Severity
from plugin.rules.vocabulary import CardPolicy, PairRule, PayerRule

logger = logging.getLogger(__name__)

FINDING_SYSTEM = "https://therapy-cds.github.io/fhir/CodeSystem/finding"
OVERRIDE_SYSTEM = "https://therapy-cds.github.io/fhir/CodeSystem/override-reason"
SOURCE_LABEL = "therapy-cds billing rules"
#: How many of a finding's resources a card's detail names; the rest are counted ("and N more").
LISTED_RESOURCES = 20
# Card and suggestion uuids are derived from the hook instance, so a retried call gets the same
# ids and feedback can be matched to the finding that raised the card.
_UUID_NAMESPACE = uuid.UUID("6f1f0c4e-6a43-5b0e-9d1e-5c0a3c1d7e21")

# ------------------------------------------------------------------------- override reasons


def _reason(code: str, display: str) -> Coding:
    return Coding(system=OVERRIDE_SYSTEM, code=code, display=display)


DOCUMENTED_SEPARATELY = _reason("documented-separately", "Documented separately in the note")
WILL_CORRECT = _reason("will-correct-documentation", "Will correct the documentation first")
PAYER_EXCEPTION = _reason("payer-exception", "This payer does not apply this edit")
DIFFERENT_REGION = _reason("separate-structure", "Services were on separate body regions")
PLAN_ON_FILE = _reason("plan-on-file", "Current plan of care is on file outside the EHR")
CLINICAL = _reason("clinical-judgement", "Clinically appropriate; reviewed by the therapist")

_PAIR = (DOCUMENTED_SEPARATELY, PAYER_EXCEPTION, WILL_CORRECT)
_TIMES = (WILL_CORRECT, DOCUMENTED_SEPARATELY)
_UNITS = (DOCUMENTED_SEPARATELY, PAYER_EXCEPTION, WILL_CORRECT)
_PLAN = (PLAN_ON_FILE, WILL_CORRECT)

OVERRIDE_REASONS: Mapping[RuleId, tuple[Coding, ...]] = {
    RuleId.E_PAIR_NO_MODIFIER: _PAIR,
    RuleId.W_MODIFIER_ON_COL1: (PAYER_EXCEPTION, WILL_CORRECT),
    RuleId.E_PAIR_SAME_TIMEBLOCK: (WILL_CORRECT, DOCUMENTED_SEPARATELY),
    RuleId.W_OVERLAP: _TIMES,
    RuleId.W_MODIFIER_MISMATCH_XE: (DOCUMENTED_SEPARATELY, WILL_CORRECT),
    RuleId.W_MODIFIER_MISMATCH_XP: (DOCUMENTED_SEPARATELY, WILL_CORRECT),
    RuleId.W_MODIFIER_MISMATCH_XS: (DIFFERENT_REGION, DOCUMENTED_SEPARATELY, WILL_CORRECT),
    RuleId.W_59_WITH_X: (PAYER_EXCEPTION, WILL_CORRECT),
    RuleId.W_CODE_ZERO_UNITS: _UNITS,
    RuleId.W_MIN_UNDER_8: _UNITS,
    RuleId.E_UNITS_EXCEED: _UNITS,
    RuleId.W_MISSING_END: _TIMES,
    RuleId.W_MISSING_START: _TIMES,
    RuleId.W_NO_DURATION: _TIMES,
    RuleId.W_SPANS_MIDNIGHT: (CLINICAL, WILL_CORRECT),
    RuleId.E_GROUP_NOT_ONE_ON_ONE: (DOCUMENTED_SEPARATELY, WILL_CORRECT),
    RuleId.W_NO_PLAN_OF_CARE: _PLAN,
    RuleId.E_PLAN_NOT_ACTIVE: _PLAN,
    RuleId.E_PLAN_PERIOD: _PLAN,
    RuleId.W_RECERT_DUE: _PLAN,
    RuleId.W_NO_REASON: (DOCUMENTED_SEPARATELY, WILL_CORRECT),
    RuleId.W_DISCIPLINE_MODIFIER_MISSING: (PAYER_EXCEPTION, WILL_CORRECT),
    RuleId.W_PROGRESS_REPORT_DUE: (DOCUMENTED_SEPARATELY, WILL_CORRECT),
    RuleId.E_MUE_EXCEEDED: _UNITS,  # issue 15
    RuleId.W_ASSISTANT_MODIFIER_MISSING: (PAYER_EXCEPTION, WILL_CORRECT),
    RuleId.W_ASSISTANT_MODIFIER_UNSUPPORTED: (DOCUMENTED_SEPARATELY, WILL_CORRECT),
}

# ------------------------------------------------------------------------------- summaries

#: What each finding id is about, in a few words: the card source's topic display and the line
#: naming the findings a card groups under its primary one.
_TITLES: Mapping[RuleId, str] = {
    RuleId.E_PAIR_NO_MODIFIER: "97140 with 97530 and no NCCI modifier",
    RuleId.W_MODIFIER_ON_COL1: "NCCI modifier on 97140 instead of 97530",
    RuleId.E_PAIR_SAME_TIMEBLOCK: "97140 and 97530 in the same time block",
    RuleId.W_OVERLAP: "one-on-one services overlap; shared minutes counted once",
    RuleId.W_MODIFIER_MISMATCH_XE: "XE used on one encounter",
    RuleId.W_MODIFIER_MISMATCH_XP: "XP used with one practitioner",
    RuleId.W_MODIFIER_MISMATCH_XS: "XS used without separate body sites",
    RuleId.W_59_WITH_X: "59 and an X modifier on one line",
    RuleId.W_CODE_ZERO_UNITS: "a documented code earns no unit",
    RuleId.W_MIN_UNDER_8: "under 8 timed minutes",
    RuleId.I_TIE: "tied allocations",
    RuleId.E_UNITS_EXCEED: "billed units over what the minutes support",
    RuleId.W_MISSING_END: "no end time",
    RuleId.W_MISSING_START: "no start time",
    RuleId.W_NO_DURATION: "no duration",
    RuleId.W_SPANS_MIDNIGHT: "service crosses midnight",
    RuleId.I_COMBINE_LINES: "one code in several services: one line",
    RuleId.E_GROUP_NOT_ONE_ON_ONE: "one-on-one code delivered to a group",
    RuleId.W_NO_PLAN_OF_CARE: "no plan of care linked",
    RuleId.E_PLAN_NOT_ACTIVE: "plan of care not active",
    RuleId.E_PLAN_PERIOD: "date outside the plan of care",
    RuleId.W_RECERT_DUE: "plan of care recertification due",
    RuleId.W_NO_REASON: "no diagnosis or reason linked",
    RuleId.W_DISCIPLINE_MODIFIER_MISSING: "no GP/GO/GN discipline modifier",
    RuleId.I_IGNORED_STATUS: "service not analysed",
    RuleId.I_OTHER_PTP: "another NCCI edit may apply",
    RuleId.I_CHARGES_NOT_AVAILABLE: "billed units not checked: no charge line",
    RuleId.W_PROGRESS_REPORT_DUE: "progress report due (every 10 treatment days)",
    RuleId.E_MUE_EXCEEDED: "units over the CMS MUE",  # issue 15
    RuleId.W_ASSISTANT_MODIFIER_MISSING: "assistant minutes without CQ/CO",
    RuleId.W_ASSISTANT_MODIFIER_UNSUPPORTED: "CQ/CO without a recorded assistant",
}


def _fit(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _codes_text(codes: Sequence[str], most: int = 4) -> str:
    """Codes for a summary; they came from the request, so they are quoted like any data."""
    shown = ", ".join(quote_markdown(code) for code in codes[:most])
    return shown + (f" +{len(codes) - most} more" if len(codes) > most else "")


def _allocation_text(allocation: Mapping[str, int]) -> str:
    return (
        " + ".join(f"{quote_markdown(code)}×{n}" for code, n in allocation.items() if n) or "none"
    )


def _units_word(n: int) -> str:
    return "1 unit" if n == 1 else f"{n} units"


def _exceed_summary(finding: Finding, visit: VisitAnalysis | None, on: str) -> str:
    """E-UNITS-EXCEED: the code, the billed units and where the limit comes from."""
    facts = finding.facts
    billed = facts.units_billed if facts.units_billed is not None else 0
    code = _codes_text(finding.codes)
    if visit is None or facts.detail == "unattached":
        return f"{code}{on}: {_units_word(billed)} billed; no documented service supports them"
    if visit.payer_rule == PayerRule.CMS:
        allocation = visit.allocations[0] if visit.allocations else visit.units
        who = code if facts.detail == "code" else "Timed codes"
        return (
            f"{who}{on}: {_units_word(billed)} billed; {visit.total_timed_minutes} pooled"
            f" minutes support {_units_word(visit.units_allowed_total)}:"
            f" {_allocation_text(allocation)}"
        )
    minutes = visit.minutes.get(finding.codes[0], 0) if finding.codes else 0
    allowed = facts.units_allowed if facts.units_allowed is not None else 0
    return (
        f"{code}{on}: {_units_word(billed)} billed; its {minutes} minutes support"
        f" {_units_word(allowed)} (AMA per-code rule)"
    )


def _group_summary(group: Sequence[Finding], visit: VisitAnalysis | None) -> str:
    """The summary of a card's primary finding, and its cause when another finding of the
    group changed the minutes it is about (missing times, group delivery, overlap: a cause of
    lower severity), space permitting."""
    text = _summary(group[0], visit)
    causes = [f for f in group[1:] if _caused(f, group[0])]
    if causes:
        with_cause = f"{text} ({_TITLES[causes[0].rule]})"
        if len(with_cause) <= SUMMARY_MAX:
            return with_cause
    return text


def _summary(finding: Finding, visit: VisitAnalysis | None) -> str:
    """The card summary: the code(s), the date and the numbers, under 140 characters."""
    on = f" on {visit.date.isoformat()}" if visit is not None else ""
    facts = finding.facts
    codes = _codes_text(finding.codes)
    col1, col2 = (
        quote_markdown(c or d) for c, d in ((facts.column1, "97140"), (facts.column2, "97530"))
    )
    cotreat = len(facts.co_treatment) == 2
    if cotreat:  # the pair across two disciplines' visits: name both disciplines
        col1, col2 = (f"{d} {c}" for d, c in zip(facts.co_treatment, (col1, col2), strict=True))
    minutes = facts.minutes if facts.minutes is not None else 0
    rule = finding.rule
    text: str
    if rule is RuleId.E_UNITS_EXCEED:
        text = _exceed_summary(finding, visit, on)
    elif rule is RuleId.E_PAIR_NO_MODIFIER and cotreat:
        text = f"Co-treatment {col1} + {col2}{on}: no 59/XP/XU on {col2}; it will be denied"
    elif rule is RuleId.E_PAIR_NO_MODIFIER:
        text = f"{col2} with {col1}{on}: no modifier 59/XU on {col2}; {col2} will be denied"
    elif rule is RuleId.W_MODIFIER_ON_COL1:
        text = f"{col1}/{col2}{on}: the NCCI modifier is on {col1}; move it to {col2}"
    elif rule is RuleId.E_PAIR_SAME_TIMEBLOCK and cotreat and facts.detail == "overlap":
        text = f"Co-treatment {col1} and {col2}{on} overlap by {minutes} min: bill that time once"
    elif rule is RuleId.E_PAIR_SAME_TIMEBLOCK and cotreat:
        text = f"Co-treatment {col1} and {col2}{on}: each needs 15 min of its own (strict rule)"
    elif rule is RuleId.E_PAIR_SAME_TIMEBLOCK:
        text = (
            f"{col1} and {col2}{on} overlap by {minutes} min: those minutes count for {col1} only"
        )
    elif rule is RuleId.W_OVERLAP:
        text = f"{codes}{on}: services overlap by {minutes} min; shared minutes counted once"
    elif rule in _MISMATCH:
        text = f"{_MISMATCH[rule]} on {col2}{on}, not shown by the record; use 59 or XU"
    elif rule is RuleId.W_59_WITH_X:
        text = f"{codes}{on}: 59 and an X modifier on one line; report only one"
    elif rule is RuleId.W_CODE_ZERO_UNITS:
        text = f"{codes}{on}: {minutes} minutes earn no unit of the day's; do not bill it"
    elif rule is RuleId.W_MIN_UNDER_8:
        text = f"{codes}{on}: {minutes} timed minutes, under the 8 for one unit; nothing billable"
    elif rule in (RuleId.W_MISSING_END, RuleId.W_MISSING_START):
        which = "end" if rule is RuleId.W_MISSING_END else "start"
        text = f"{codes}{on}: no {which} time recorded; its minutes cannot be counted"
    elif rule is RuleId.W_NO_DURATION:
        text = f"{codes}{on}: no start and end recorded; its minutes cannot be counted"
    elif rule is RuleId.W_SPANS_MIDNIGHT:
        text = f"{codes}{on}: the service crosses midnight; all of it counts on the start date"
    elif rule is RuleId.E_GROUP_NOT_ONE_ON_ONE:
        text = f"{codes}{on} was delivered to a group: bill 97150×1 instead"
    elif rule is RuleId.W_NO_PLAN_OF_CARE:
        text = f"{codes}{on}: not linked to a plan of care"
    elif rule is RuleId.E_PLAN_NOT_ACTIVE:
        status = f" ({quote_markdown(facts.plan_status)})" if facts.plan_status else ""
        text = f"{codes}{on}: the linked plan of care is not active{status}"
    elif rule is RuleId.E_PLAN_PERIOD:
        period = (
            f" ({facts.plan_start or '…'} to {facts.plan_end or '…'})"
            if facts.plan_start or facts.plan_end
            else ""
        )
        text = f"{codes}{on}: outside the plan of care's period{period}"
    elif rule is RuleId.W_RECERT_DUE:
        days = facts.days_since_certification
        since = f" {days} days after certification" if days is not None else ""
        text = f"{codes}{on}:{since} the plan of care is due for recertification"
    elif rule is RuleId.W_NO_REASON:
        text = f"{codes}{on}: no diagnosis or reason linked"
    elif rule is RuleId.W_DISCIPLINE_MODIFIER_MISSING:
        text = f"{codes}{on}: no GP/GO/GN discipline modifier on the line"
    elif rule is RuleId.W_PROGRESS_REPORT_DUE:
        days = facts.treatment_days
        since = f"report of {facts.last_report}" if facts.last_report else "plan of care start"
        text = (
            f"{codes}{on}: treatment day {days} since the {since}; a progress report is due"
            " (every 10 treatment days)"
        )
    elif rule is RuleId.E_MUE_EXCEEDED:  # issue 15
        per = "per line" if facts.detail == "line" else "per date of service"
        text = (
            f"{codes}{on}: {_units_word(facts.units_billed or 0)} billed, over the MUE of"
            f" {facts.units_allowed} {per}"
        )
    elif rule is RuleId.I_CHARGES_NOT_AVAILABLE:
        text = f"{codes}{on}: no charge line to read; billed units and modifiers not checked"
    elif rule is RuleId.W_ASSISTANT_MODIFIER_MISSING:
        who = "PTA" if facts.detail == "CQ" else "OTA"
        text = (
            f"{codes}{on}: {who} furnished {minutes} of {facts.raw_minutes or 0} min"
            f" (over 10 %); add {quote_markdown(facts.detail or '')}"
        )
    elif rule is RuleId.W_ASSISTANT_MODIFIER_UNSUPPORTED:
        modifier = quote_markdown(facts.detail or "")
        who = "PTA" if facts.detail == "CQ" else "OTA"
        text = f"{codes}{on}: {modifier} billed but no {who} recorded as performer; remove it"
    else:
        text = f"{codes}{on}: {_TITLES.get(rule) or CATALOGUE[rule].meaning}"
    return _fit(text)


_MISMATCH: Mapping[RuleId, str] = {
    RuleId.W_MODIFIER_MISMATCH_XE: "XE (separate encounter)",
    RuleId.W_MODIFIER_MISMATCH_XP: "XP (separate practitioner)",
    RuleId.W_MODIFIER_MISMATCH_XS: "XS (separate structure)",
}


def cotreatment_text(pair: PairResult) -> str:
    """`` (co-treatment: PT 97140, OT 97530)`` after a pair status judged across two
    disciplines' visits, else empty: what the summary card and ``check`` show."""
    if len(pair.co_treatment) != 2:
        return ""
    one, two = pair.co_treatment
    return f" (co-treatment: {one} {pair.column1}, {two} {pair.column2})"


# ---------------------------------------------------------------------------------- detail


def _units_table(visit: VisitAnalysis) -> str:
    """The visit's units table (markdown); shown at most once per visit."""
    rows = [
        "| code | documented min | counted min | units |",
        "|---|---:|---:|---:|",
    ]
    for code in sorted(set(visit.raw_minutes) | set(visit.units)):
        rows.append(
            f"| {quote_markdown(code)} | {visit.raw_minutes.get(code, 0)} "
            f"| {visit.minutes.get(code, 0)} "
            f"| {visit.units.get(code, 0)} |"
        )
    rule = "CMS 8-minute rule, pooled" if visit.payer_rule == PayerRule.CMS else "AMA per-code rule"
    if visit.payer_rule_reason:  # which rule and why (issue 15); may name a payer: escaped
        pooled = "pooled" if visit.payer_rule == PayerRule.CMS else "per code"
        rule = f"{pooled}; {quote_markdown(visit.payer_rule_reason)}"
    rows.append("")
    rows.append(
        f"Total timed minutes: **{visit.total_timed_minutes}** · units allowed: "
        f"**{visit.units_allowed_total}** ({rule})"
    )
    return "\n".join(rows)


def _documentation(resources: Sequence[str]) -> str:
    """The resources a finding is about, as code spans; at most :data:`LISTED_RESOURCES`, and the
    count of the others."""
    listed = ", ".join(quote_markdown(ref, code=True) for ref in resources[:LISTED_RESOURCES])
    left_out = len(resources) - LISTED_RESOURCES
    return f"Documentation: {listed}" + (
        f", and {left_out} more not listed" if left_out > 0 else ""
    )


def _pair_reading(finding: Finding) -> str | None:
    if not (finding.facts.pair_rule and finding.rule.value.startswith(("E-PAIR", "W-MODIFIER"))):
        return None
    if finding.facts.pair_rule == PairRule.CMS:
        return "Pair rule: CMS (distinct blocks, split blocks allowed)."
    return "Pair rule: strict (each code needs 15 minutes of its own)."


def _listed(primary: Finding, findings: Sequence[Finding]) -> str:
    """The findings a card groups under its primary one, each as ``**ID**`` (so the id stays
    searchable) with what it is about; a time cause (missing times, group delivery, an
    overlap the primary does not already describe) with its message, which says what to
    correct in the documentation."""
    said = primary.rule in _OVERLAP
    return "; ".join(
        f"**{f.rule.value}**: {quote_markdown(f.message)}"
        if f.rule in _TIME_CAUSES and not (said and f.rule in _OVERLAP)
        else f"**{f.rule.value}** ({_TITLES.get(f.rule, '')})"
        for f in findings
    )


#: Findings read from the NCCI PTP table: the pair's and I-OTHER-PTP (issue 15).
_PTP_RULES = frozenset(
    {r for r, e in CATALOGUE.items() if e.changes_pair_status} | {RuleId.I_OTHER_PTP}
)


def _tables_line(finding: Finding, visit: VisitAnalysis | None) -> tuple[str, ...]:
    """Issue 15: the NCCI table a PTP or MUE finding was read from (its CMS file and quarter,
    or the built-in rule-book excerpt, said to be no CMS table)."""
    if visit is None:
        return ()
    kind = "mue" if finding.rule is RuleId.E_MUE_EXCEEDED else "ptp"
    if kind == "ptp" and finding.rule not in _PTP_RULES:
        return ()
    return tuple(quote_markdown(t.label) for t in visit.tables if t.kind == kind)


def _detail(
    group: Sequence[Finding],
    riding: Sequence[Finding],
    extra: Sequence[str],
    visit: VisitAnalysis | None = None,
) -> str:
    """The card detail: the primary finding's message, the findings grouped with it, the
    informational ones that concern it, the documentation, then ``extra`` (the units table and
    notes, when this card carries them)."""
    primary = group[0]
    parts = [quote_markdown(primary.message)]
    if len(group) > 1:
        parts.append("Same cause: " + _listed(primary, group[1:]))
    for info in riding:
        parts.append(f"Note ({info.rule.value}): {quote_markdown(info.message)}")
    resources = sorted({r for f in group for r in f.resources})
    if resources:
        parts.append(_documentation(resources))
    reading = _pair_reading(primary)
    if reading:
        parts.append(reading)
    parts.extend(_tables_line(primary, visit))
    parts.extend(extra)
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------ suggestions


def _charge_changes(fixes: Sequence[Fix]) -> tuple[ChargeChange, ...]:
    """The changes of one draft charge that make ``fixes``: the draft is deleted when they
    leave it with 0 units and the same code (not billed, R-23), else each fix is one change."""
    if _drops_line(fixes):
        return (DELETE,)
    return tuple(
        ChargeChange(
            code=fix.replace_code,
            units=fix.set_units,
            remove_modifier=fix.remove_modifier,
            add_modifier=fix.add_modifier,
        )
        for fix in fixes
    )


def _new_line(fix: Fix) -> NewCharge:
    """The new charge a ``new_line`` fix adds: ``fix.line_code`` with ``fix.set_units``, and no
    NCCI modifier (those were for the code of the draft it is modelled on)."""
    return NewCharge(
        code=fix.line_code, units=fix.set_units, without_modifiers=tuple(sorted(NCCI_MODIFIERS))
    )


def _describe(fix: Fix) -> str:
    """What a fix does, in words (suggestion labels, action descriptions); the codes came from
    the request, so they are quoted like any data (EHRs may render these as Markdown too)."""
    line = quote_markdown(fix.line_code)
    if fix.new_line:
        units = fix.set_units if fix.set_units is not None else 1
        return f"add a {line} charge of {units} unit{'s' if units != 1 else ''}"
    changes = []
    if fix.replace_code is not None:
        changes.append(f"bill {quote_markdown(fix.replace_code)} instead of {line}")
    if fix.set_units is not None:
        target = quote_markdown(fix.replace_code) if fix.replace_code else line
        changes.append(f"set {target} to {fix.set_units} unit{'s' if fix.set_units != 1 else ''}")
    if fix.remove_modifier is not None:
        changes.append(f"remove modifier {quote_markdown(fix.remove_modifier)} from {line}")
    if fix.add_modifier is not None:
        changes.append(f"add modifier {quote_markdown(fix.add_modifier)} to {line}")
    return "; ".join(changes)


def _drops_line(fixes: Sequence[Fix]) -> bool:
    """True when the fixes leave a draft charge with 0 units and the same code: not billed."""
    return any(f.set_units == 0 for f in fixes) and not any(f.replace_code for f in fixes)


def _suggestion(
    finding: Finding,
    drafts: DraftOrders,
    make_uuid: Callable[[str], str],
    claimed: frozenset[str] = frozenset(),
) -> Suggestion | None:
    """One suggestion whose actions apply all of the finding's fixes, one action per draft.

    A draft left with 0 units is removed (a ``delete`` action, R-23) rather than billed as 0.
    Drafts in ``claimed`` are being replaced by another card's suggestion and are left alone,
    so two cards never propose conflicting edits of one charge.
    """
    by_ref: dict[str, list[Fix]] = {}
    new_lines: list[tuple[str, Fix]] = []
    for fix in finding.fixes:
        if fix.new_line:  # modelled on the first draft of its charges, which it leaves alone
            template = next((r for r in fix.charge_refs if r in drafts.resources), None)
            if template is not None:
                new_lines.append((template, fix))
            continue
        for ref in fix.charge_refs:
            if ref in drafts.resources and ref not in claimed:
                by_ref.setdefault(ref, []).append(fix)
    if not by_ref and not new_lines:
        return None
    actions = []
    labels = []
    for template, fix in new_lines:
        created = drafts.create(template, _new_line(fix))
        if created is None:
            logger.info("suggestion skipped: no new charge can be modelled on %s", template)
            return None
        description = _describe(fix)
        actions.append(Action(type="create", description=description, resource=created.resource))
        labels.append(description)
    for ref in sorted(by_ref):
        fixes = by_ref[ref]
        written = drafts.change(ref, _charge_changes(fixes))
        if written is None:
            logger.info("suggestion skipped: draft order %s is not valid FHIR", ref)
            return None
        if written.type == "delete":
            code = quote_markdown(fixes[0].line_code)
            description = f"remove the draft {code} charge (no billable units)"
            actions.append(
                Action(
                    type="delete",
                    description=f"{quote_markdown(ref)}: {description}",
                    resource_id=written.resource_id,
                )
            )
            labels.append(f"remove the {code} charge")
            continue
        description = "; ".join(_describe(f) for f in fixes)
        actions.append(
            Action(
                type="update",
                description=f"{quote_markdown(ref)}: {description}",
                resource=written.resource,
            )
        )
        labels.append(description)
    label = "; ".join(dict.fromkeys(labels))
    return Suggestion(
        label=(label[0].upper() + label[1:])[:120],
        uuid=make_uuid("suggestion"),
        is_recommended=True,
        actions=tuple(actions),
    )


# ------------------------------------------------------------------------------ the cards


@dataclass(frozen=True, slots=True)
class CardOptions:
    """Per-call inputs to card building.

    ``policy``: which cards to answer with (:class:`plugin.rules.vocabulary.CardPolicy`);
    ``rules_url``: the absolute URL of the finding catalogue page, each card links to its
    findings' entries (``None``: no link, CDS Hooks links must be absolute)."""

    hook_instance: str
    drafts: DraftOrders | None = None
    links: tuple[Link, ...] = ()
    notes: tuple[str, ...] = ()  # one-line caveats on the card carrying the visit's units table
    policy: CardPolicy = CardPolicy.PROBLEMS
    rules_url: str | None = None


@functools.cache
def _source(code: str, display: str | None) -> Source:
    """The card source for a topic. Built once per topic: the topics are the finding ids of
    the catalogue and ``units-summary``, so the cache is bounded."""
    return Source(
        label=SOURCE_LABEL, topic=Coding(system=FINDING_SYSTEM, code=code, display=display)
    )


_NAMESPACE_SHA1 = hashlib.sha1(_UUID_NAMESPACE.bytes, usedforsecurity=False)


def uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(_UUID_NAMESPACE, name))`` without building UUID objects: the same
    RFC 4122 name-based (SHA-1) UUID, several per card, so the cheaper path matters."""
    hasher = _NAMESPACE_SHA1.copy()
    hasher.update(name.encode())
    digest = bytearray(hasher.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _uuid_factory(hook_instance: str, *parts: str) -> Callable[[str], str]:
    base = "|".join((hook_instance, *parts))

    def make(kind: str) -> str:
        return uuid5_text(f"{base}|{kind}")

    return make


# ---------------------------------------------------------------------- one card per problem

#: Findings about how a service's documented time counts: overlapping blocks.
_OVERLAP = frozenset({RuleId.E_PAIR_SAME_TIMEBLOCK, RuleId.W_OVERLAP})
#: Findings saying the visit could not be fully checked: told once, in one card.
NOT_CHECKED = frozenset(
    {
        RuleId.W_MISSING_END,
        RuleId.W_MISSING_START,
        RuleId.W_NO_DURATION,
        RuleId.I_CHARGES_NOT_AVAILABLE,
    }
)
#: Findings whose time facts change the minutes a visit's units come from.
_TIME_CAUSES = _OVERLAP | NOT_CHECKED | {RuleId.E_GROUP_NOT_ONE_ON_ONE}
#: Findings about the units the minutes support: consequences of a time cause.
_UNITS_FINDINGS = frozenset({RuleId.E_UNITS_EXCEED, RuleId.W_CODE_ZERO_UNITS, RuleId.W_MIN_UNDER_8})
_CATALOGUE_ORDER = {rule: i for i, rule in enumerate(CATALOGUE)}


def _problem_key(f: Finding) -> tuple[int, int]:
    """Most severe first, then the catalogue's order: the primary finding of a group."""
    return SEVERITY_RANK[f.severity], _CATALOGUE_ORDER[f.rule]


def _touches(fix: Fix) -> frozenset[str]:
    """What of a charge a fix changes: its units, its code, a modifier; or the new line it
    adds."""
    if fix.new_line:
        return frozenset({f"new {fix.line_code} line"})
    touched = set()
    if fix.replace_code is not None:
        touched |= {"code", "units"}
    if fix.set_units is not None:
        touched.add("units")
    for modifier in (fix.add_modifier, fix.remove_modifier):
        if modifier is not None:
            touched.add(f"modifier {modifier}")
    return frozenset(touched)


def _edited(fix: Fix) -> set[tuple[str, str]]:
    """(charge, what) a fix changes; a line of a new code (added, or replacing a line's code)
    is one whatever charge it comes from: the visit bills that code once."""
    if fix.new_line:
        return {("", what) for what in _touches(fix)}
    edits = {(ref, what) for ref in fix.charge_refs for what in _touches(fix)}
    if fix.replace_code is not None:
        edits.add(("", f"new {fix.replace_code} line"))
    return edits


def _edits(finding: Finding) -> set[tuple[str, str]]:
    return {edit for fix in finding.fixes for edit in _edited(fix)}


def _shares(a: Finding, b: Finding) -> bool:
    return not set(a.resources).isdisjoint(b.resources)


def _caused(cause: Finding, effect: Finding) -> bool:
    """Whether ``cause`` changed the minutes ``effect`` is about: an overlap, missing times or
    group delivery, and a units finding on a service or code they share."""
    return (
        cause.rule in _TIME_CAUSES
        and effect.rule in _UNITS_FINDINGS
        and (_shares(cause, effect) or not set(cause.codes).isdisjoint(effect.codes))
    )


def _same_cause(a: Finding, b: Finding) -> bool:
    """Whether two findings of one visit have one cause, so one card says both:

    - their fixes change the same thing of the same charge (the same removal proposed twice,
      a code replacement and a units change of that line): one suggestion must carry both;
    - both are about the same overlapping time blocks (a shared resource);
    - both say the visit could not be checked (times or charges missing): told once;
    - both are about group delivery: the session is billed as one 97150;
    - one changes the minutes (overlap, missing times, group delivery) and the other is about
      the units those minutes support, on a service or code they share (:func:`_caused`).
    """
    if _edits(a) & _edits(b):
        return True
    if a.rule in NOT_CHECKED and b.rule in NOT_CHECKED:
        return True
    if a.rule in _OVERLAP and b.rule in _OVERLAP and _shares(a, b):
        return True
    if a.rule is RuleId.E_GROUP_NOT_ONE_ON_ONE and b.rule is RuleId.E_GROUP_NOT_ONE_ON_ONE:
        return True  # one group session, billed as one 97150 whatever codes it documents
    return _caused(a, b) or _caused(b, a)


#: Advice not to bill a code ("do not bill it", "nothing billable").
_DO_NOT_BILL = frozenset({RuleId.W_CODE_ZERO_UNITS, RuleId.W_MIN_UNDER_8})


def _is_problem(f: Finding) -> bool:
    """Something to act on: an error or a warning, or what says the visit was not checked.
    Advice not to bill codes that the visit's charge lines show are not billed
    (``units_billed`` 0) has nothing to act on: it rides with the card it concerns, or in the
    summary, like an informational finding."""
    if f.rule in _DO_NOT_BILL and f.facts.units_billed == 0:
        return False
    return f.severity is not Severity.INFO or f.rule in NOT_CHECKED


def _ordered(group: Sequence[Finding]) -> tuple[Finding, ...]:
    """A group primary first: the most severe; among equally severe findings, one that
    changed the minutes another of the group is about (:func:`_caused`) before it, since the
    cause is what the card's suggestion and the therapist's correction address; then the
    catalogue's order."""
    return tuple(
        sorted(
            group,
            key=lambda f: (
                SEVERITY_RANK[f.severity],
                not any(_caused(f, g) for g in group if g.severity is f.severity),
                _CATALOGUE_ORDER[f.rule],
            ),
        )
    )


def problem_groups(findings: Sequence[Finding]) -> list[tuple[Finding, ...]]:
    """The findings to act on (errors, warnings, and what says the visit was not checked), in
    groups of one cause (:func:`_same_cause`, transitively), each ordered primary first; the
    groups ordered by their primary. Quadratic in the visit's findings, which the rules keep
    to a few per rule id (never one per pair of services)."""
    problems = sorted((f for f in findings if _is_problem(f)), key=_problem_key)
    parent = list(range(len(problems)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(problems):
        for j in range(i + 1, len(problems)):
            if _same_cause(a, problems[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[Finding]] = {}
    for i, f in enumerate(problems):
        groups.setdefault(root(i), []).append(f)
    return sorted((_ordered(g) for g in groups.values()), key=lambda g: _problem_key(g[0]))


def _unit_ceilings(fixes: Iterable[Fix]) -> dict[str, int]:
    """Per charge, the fewest units any of ``fixes`` sets it to (code replacements and new
    lines aside). A units fix says the most its finding lets the line bill: a code's most in
    any acceptable allocation, the column-2 code's when the pair shares a time block, an MUE,
    0 for a code that earns no unit; the fix of the day's pooled total sets every billed code
    to one acceptable allocation, whose units are within each code's most. Only the lowest
    meets them all: a code's own most assumes the other codes bill less than they may still
    do, so taking it over the total's allocation can leave the day over its total."""
    ceilings: dict[str, int] = {}
    for fix in fixes:
        if fix.set_units is None or fix.replace_code is not None or fix.new_line:
            continue
        for ref in fix.charge_refs:
            ceilings[ref] = min(ceilings.get(ref, fix.set_units), fix.set_units)
    return ceilings


def _merged_fixes(group: Sequence[Finding]) -> tuple[Fix, ...]:
    """Every fix of the group, one charge each; where two change the same thing of a charge
    the first wins, code replacements before anything else (a replaced line is not re-sized,
    and a line billed under a new code is not added again), except that a line re-sized by
    several fixes gets the fewest units any of them sets (:func:`_unit_ceilings`)."""
    ordered = sorted(
        (fix for f in group for fix in f.fixes), key=lambda fix: fix.replace_code is None
    )
    ceilings = _unit_ceilings(ordered)
    taken: set[tuple[str, str]] = set()
    merged: list[Fix] = []
    for fix in ordered:
        if fix.new_line:
            if not _edited(fix) & taken:
                taken |= _edited(fix)
                merged.append(fix)
            continue
        for ref in fix.charge_refs:
            one = replace(fix, charge_refs=(ref,))
            # a modifier change another fix already makes is made once; the rest of it stays
            if fix.add_modifier is not None and (ref, f"modifier {fix.add_modifier}") in taken:
                one = replace(one, add_modifier=None)
            if fix.remove_modifier is not None and (
                (ref, f"modifier {fix.remove_modifier}") in taken
            ):
                one = replace(one, remove_modifier=None)
            if ref in ceilings and one.set_units is not None and one.replace_code is None:
                # re-sized once, to the lowest ceiling; a line already re-sized (or billed
                # under a new code) keeps that, the rest of this fix stays
                resized = (ref, "units") in taken
                one = replace(one, set_units=None if resized else ceilings[ref])
            touched = {(ref, what) for what in _touches(one)}
            if not touched or touched & taken:
                continue
            taken |= touched
            merged.append(one)
        taken |= {edit for edit in _edited(fix) if not edit[0]}  # the new code's line
    return tuple(merged)


def _catalogue_links(group: Sequence[Finding], options: CardOptions) -> tuple[Link, ...]:
    if options.rules_url is None:
        return options.links
    return options.links + tuple(
        Link(
            label=f"{f.rule.value} in the rule catalogue",
            url=f"{options.rules_url}#{f.rule.value}",
            type="absolute",
        )
        for f in group
    )


def _visit_key(visit: VisitAnalysis | None) -> str:
    return f"{visit.patient}|{visit.date}|{visit.discipline.value}" if visit else "-"


def problem_card(
    group: Sequence[Finding],
    visit: VisitAnalysis | None,
    options: CardOptions,
    *,
    claimed: frozenset[str] = frozenset(),
    riding: Sequence[Finding] = (),
    extra: Sequence[str] = (),
) -> Card:
    """The card for one problem: ``group`` (primary finding first) with every fix of the group
    in one suggestion. ``claimed``: drafts another card's suggestion replaces; ``riding``:
    informational findings shown with it; ``extra``: the visit's units table and notes when
    this card carries them."""
    primary = group[0]
    make_uuid = _uuid_factory(
        options.hook_instance,
        _visit_key(visit),
        primary.rule.value,
        ",".join(primary.resources),
        ",".join(primary.codes),
    )
    combined = replace(primary, fixes=_merged_fixes(group)) if len(group) > 1 else primary
    suggestion = (
        _suggestion(combined, options.drafts, make_uuid, claimed)
        if options.drafts is not None
        else None
    )
    severities = {f.severity for f in group}
    indicator: Literal["critical", "warning", "info"] = (
        "critical"
        if Severity.ERROR in severities
        else "warning"
        if Severity.WARNING in severities
        else "info"
    )
    reasons = dict.fromkeys(
        reason for f in group for reason in OVERRIDE_REASONS.get(f.rule, (WILL_CORRECT,))
    )
    return Card(
        uuid=make_uuid("card"),
        summary=_group_summary(group, visit),
        indicator=indicator,
        detail=_detail(group, riding, extra, visit),
        source=_source(primary.rule.value, _TITLES.get(primary.rule)),
        suggestions=(suggestion,) if suggestion else (),
        selection_behavior="at-most-one" if suggestion else None,
        override_reasons=tuple(reasons),
        links=_catalogue_links(group, options),
    )


def _units_summary(visit: VisitAnalysis) -> str:
    units = (
        ", ".join(f"{quote_markdown(code)}×{n}" for code, n in visit.units.items() if n)
        or "no timed units"
    )
    text = (
        f"{visit.discipline.value} {visit.date.isoformat()}: {units} "
        f"({visit.total_timed_minutes} timed min, {visit.payer_rule.upper()})"
    )
    return _fit(text)


def summary_card(
    visit: VisitAnalysis, options: CardOptions, groups: Sequence[Sequence[Finding]]
) -> Card:
    """The per-visit ``info`` card: the units table, the acceptable allocations, the pair
    status, the visit's problem cards by id and every informational finding."""
    make_uuid = _uuid_factory(options.hook_instance, _visit_key(visit), "summary")
    lines = [_units_table(visit)]
    if len(visit.allocations) > 1:
        options_text = " **or** ".join(
            ", ".join(f"{quote_markdown(c)}×{n}" for c, n in allocation.items())
            for allocation in visit.allocations
        )
        lines.append(f"Acceptable allocations (any may be billed): {options_text}")
    lines.append(f"97140/97530 pair: **{visit.pair.status.value}**{cotreatment_text(visit.pair)}")
    if visit.tables:  # issue 15: the NCCI tables applied to the visit's date
        lines.append("Tables: " + "; ".join(quote_markdown(t.label) for t in visit.tables))
    if groups:
        lines.append(
            "Problems: " + "; ".join(" + ".join(f"**{f.rule.value}**" for f in g) for g in groups)
        )
    infos = [f for f in visit.findings if not _is_problem(f)]
    if infos:
        lines.append("\n".join(f"- **{f.rule.value}**: {quote_markdown(f.message)}" for f in infos))
    lines.extend(options.notes)
    return Card(
        uuid=make_uuid("card"),
        summary=_units_summary(visit),
        indicator="info",
        detail="\n\n".join(lines),
        source=_source("units-summary", "Units per code for the visit"),
        links=options.links,
    )


def info_card(finding: Finding, visit: VisitAnalysis | None, options: CardOptions) -> Card:
    """One informational finding as its own ``info`` card (policy ``all``)."""
    make_uuid = _uuid_factory(
        options.hook_instance,
        _visit_key(visit),
        finding.rule.value,
        ",".join(finding.resources),
        ",".join(finding.codes),
    )
    return Card(
        uuid=make_uuid("card"),
        summary=_summary(finding, visit),
        indicator="info",
        detail=_detail((finding,), (), ()),
        source=_source(finding.rule.value, _TITLES.get(finding.rule)),
        links=_catalogue_links((finding,), options),
    )


OTHER_PATIENT_TOPIC = "other-patient-data"


def other_patient_summary(count: int) -> str:
    """What every entry point says when ``count`` resources about another patient than the one
    in context were left out (issue 14): the card, the SMART page and ``check``."""
    return f"{count} resource(s) about another patient were left out"


def other_patient_card(count: int, options: CardOptions) -> Card:
    """The warning that ``count`` resources about another patient were left out (issue 14).

    It names no resource and no patient: the count is all the service keeps of them."""
    return Card(
        uuid=_uuid_factory(options.hook_instance, OTHER_PATIENT_TOPIC)("card"),
        summary=other_patient_summary(count),
        indicator="warning",
        detail=(
            f"The request carried {count} resource(s) whose subject is not the patient in"
            " context (another patient, or none that can be identified). They were not"
            " analysed and nothing from them is shown; the cards cover the patient in context"
            " only. Check that the EHR sends this patient's data."
        ),
        source=_source(OTHER_PATIENT_TOPIC, "Data about another patient"),
        links=options.links,
    )


_INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}


def _visit_cards(visit: VisitAnalysis, options: CardOptions) -> list[Card]:
    groups = problem_groups(visit.findings)
    with_summary = options.policy != CardPolicy.PROBLEMS
    replaced = frozenset(
        ref
        for f in visit.findings
        for fix in f.fixes
        if fix.replace_code
        for ref in fix.charge_refs
    )
    infos = [f for f in visit.findings if not _is_problem(f)]
    # Without a summary card, an informational finding rides on the first problem card that
    # shares a code with it; the units table goes on the first card about minutes or units.
    riding: dict[int, list[Finding]] = {}
    if not with_summary:
        for info in infos:
            for i, group in enumerate(groups):
                if any(not set(info.codes).isdisjoint(f.codes) for f in group):
                    riding.setdefault(i, []).append(info)
                    break
    table_at = (
        None
        if with_summary
        else next(
            (
                i
                for i, g in enumerate(groups)
                if any(f.rule in _TIME_CAUSES or f.rule in _UNITS_FINDINGS for f in g)
            ),
            None,
        )
    )
    cards = []
    for i, group in enumerate(groups):
        replaces = any(fix.replace_code for f in group for fix in f.fixes)
        extra = (_units_table(visit), *options.notes) if i == table_at else ()
        cards.append(
            problem_card(
                group,
                visit,
                options,
                claimed=frozenset() if replaces else replaced,
                riding=riding.get(i, ()),
                extra=extra,
            )
        )
    if with_summary:
        cards.append(summary_card(visit, options, groups))
    if options.policy == CardPolicy.ALL:
        cards.extend(info_card(f, visit, options) for f in infos)
    return cards


def cards_for(analysis: Analysis, options: CardOptions) -> tuple[Card, ...]:
    """The cards for an analysis under ``options.policy``, ordered critical, warning, info
    (stable: visit by visit within an indicator).

    - ``problems``: one card per problem (:func:`problem_groups`) -- errors, warnings, and a
      visit that could not be checked -- with the informational findings that concern it; a
      visit with nothing to act on gets no card;
    - ``summary``: also each visit's ``info`` summary card (units per code, allocations, pair
      status, its informational findings) and, when findings are outside any visit (a service
      set aside, a charge no visit took), one ``info`` card listing them;
    - ``all``: also one ``info`` card per informational finding.
    """
    cards: list[Card] = []
    for visit in analysis.visits:
        cards.extend(_visit_cards(visit, options))
    loose: Sequence[Finding] = analysis.findings
    for group in problem_groups(loose):
        cards.append(problem_card(group, None, options))
    if options.policy != CardPolicy.PROBLEMS and loose:
        cards.append(
            Card(
                uuid=_uuid_factory(options.hook_instance, "outside-visits")("card"),
                summary=f"{len(loose)} finding(s) not tied to any visit",
                indicator="info",
                detail="\n".join(
                    f"- **{f.rule.value}**: {quote_markdown(f.message)}" for f in loose
                ),
                source=_source(loose[0].rule.value, "Findings outside any visit"),
            )
        )
    if options.policy == CardPolicy.ALL:
        cards.extend(info_card(f, None, options) for f in loose if not _is_problem(f))
    cards.sort(key=lambda c: _INDICATOR_RANK[c.indicator])
    return tuple(cards)
