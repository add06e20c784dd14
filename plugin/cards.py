"""Findings -> CDS Hooks cards.

- one card per error or warning finding (error -> ``critical``, warning -> ``warning``), its
  ``source.topic`` the finding id, its summary under 140 characters with no patient identifier,
  its detail in Markdown with the minutes, the units and the rule's source;
- ``overrideReasons`` that fit the finding;
- suggestions where the fix is mechanical: one ``update`` action per draft ServiceRequest that
  sets the supported units, adds or removes a modifier, or replaces the code; every kind of
  change is proven valid through the full FHIR models at start-up (:func:`warm_up`) and each
  updated draft is checked for the members FHIR requires before it is sent (:func:`sound_update`);
- one ``info`` summary card per visit with the units per code and every informational finding.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import orjson
from pydantic import ValidationError

from cds_hooks.models import Action, Card, Coding, Link, Source, Suggestion
from fhir_mappings.codes import split_modifiers
from fhir_mappings.model import (
    BILLING_SYSTEMS,
    CPT_SYSTEM,
    EXT_BILLING_MODIFIER,
    HCPCS_SYSTEM,
    FhirVersion,
)
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

JsonObject = dict[str, Any]


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

#: A card summary is plain text under 140 characters (CDS Hooks 2.0).
SUMMARY_LIMIT = 139


def _fit(text: str) -> str:
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


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
        if len(with_cause) <= SUMMARY_LIMIT:
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


def _modifier_system(modifier: str) -> str:
    return CPT_SYSTEM if modifier.isdigit() else HCPCS_SYSTEM


def _codings_of(concept: Any) -> list[JsonObject]:
    if isinstance(concept, dict):
        codings = concept.get("coding")
        if isinstance(codings, list):
            return [c for c in codings if isinstance(c, dict)]
    return []


# A modifier sits in three places on a draft ServiceRequest, all read by the mapper
# (fhir_mappings.mapper): R4/R4B ``orderDetail[]`` (a CodeableConcept), R5
# ``orderDetail[].parameter[].valueCodeableConcept`` and the project ``billing-modifier``
# extension. The mapper reads a coding's code split on commas and blanks, in any case
# (codes.split_modifiers); an EHR also shows the concept's ``text`` and the codings' ``display``.
# Removing a modifier takes away every trace of it there; anything else is left as it was.

#: Words that may stand beside modifier codes in a text ("Modifier 59", "mod. XU").
_MODIFIER_WORDS = frozenset({"MOD", "MODIFIER", "MODIFIERS", "CPT", "HCPCS"})
_WORD = re.compile(r"[A-Za-z0-9]+")


def _billing_system(system: object, *, allow_none: bool) -> bool:
    return system in BILLING_SYSTEMS or (allow_none and system is None)


def _coding_modifiers(coding: object, *, allow_none: bool) -> list[str]:
    """The modifiers the mapper reads from ``coding`` (``allow_none``: a coding without a
    system counts, as in the extension)."""
    if not isinstance(coding, dict):
        return []
    code = coding.get("code")
    if not isinstance(code, str) or not _billing_system(
        coding.get("system"), allow_none=allow_none
    ):
        return []
    return split_modifiers(code)


def _modifier_list(text: str) -> list[str] | None:
    """The 2-character codes of a text that lists modifiers only ("59", "Modifier 59, GP");
    ``None`` for any other text (prose is never rewritten)."""
    words = [w for w in _WORD.findall(text) if w.upper() not in _MODIFIER_WORDS]
    return words if words and all(len(w) == 2 for w in words) else None


def _names(text: object, modifier: str) -> bool:
    """True when ``text`` mentions ``modifier`` as a word."""
    return isinstance(text, str) and modifier in (w.upper() for w in _WORD.findall(text))


def _text_without(text: str, modifier: str) -> str | None:
    """``text`` without ``modifier`` (a modifier list loses that entry; prose naming it goes);
    ``None`` when nothing is left."""
    listed = _modifier_list(text)
    if listed is None:
        return None
    rest = [w for w in listed if w.upper() != modifier]
    return ", ".join(rest) if rest else None


def _coding_without(coding: object, modifier: str) -> object | None:
    """``coding`` without ``modifier``: ``None`` when it named that modifier only (by code, or
    by display alone when it has no code), a copy with the other codes when it named several."""
    if not isinstance(coding, dict) or not _billing_system(coding.get("system"), allow_none=True):
        return coding
    code = coding.get("code")
    if code is None:
        display = coding.get("display")
        listed = _modifier_list(display) if isinstance(display, str) else None
        named = listed is not None and [w.upper() for w in listed] == [modifier]
        return None if named else coding
    parts = split_modifiers(code) if isinstance(code, str) else []
    if modifier not in parts:
        return coding
    rest = [p for p in parts if p != modifier]
    if not rest:
        return None
    kept = {k: v for k, v in coding.items() if k != "display"}  # it described all the codes
    kept["code"] = ", ".join(rest)
    return kept


def _concept_without(concept: JsonObject, modifier: str) -> JsonObject | None:
    """A CodeableConcept without ``modifier``; ``None`` when nothing of it is left. A concept
    with codings keeps its text unless the text names the modifier; a text-only concept is
    changed only when its text is a list of modifiers."""
    codings = concept.get("coding")
    if isinstance(codings, list):
        kept = [c for c in (_coding_without(c, modifier) for c in codings) if c is not None]
        removed = kept != codings
    else:
        kept, removed = [], False
    text = concept.get("text")
    listed = isinstance(text, str) and _names(text, modifier) and _modifier_list(text)
    if not removed and not listed:
        # no coding named it; only a text listing modifiers would be a trace an EHR shows
        return concept
    out = dict(concept)
    if isinstance(codings, list):
        if kept:
            out["coding"] = kept
        else:
            del out["coding"]
    if isinstance(text, str) and _names(text, modifier):
        rewritten = _text_without(text, modifier)
        if rewritten is None:
            del out["text"]
        else:
            out["text"] = rewritten
    if "coding" not in out and "text" not in out:
        return None
    return out


def _parameter_without(parameter: object, modifier: str) -> object | None:
    """An R5 ``orderDetail.parameter`` without ``modifier``; ``None`` when its value was that
    modifier only (its ``code`` says what the parameter is, never the modifier)."""
    if not isinstance(parameter, dict):
        return parameter
    concept = parameter.get("valueCodeableConcept")
    if isinstance(concept, dict):
        rest = _concept_without(concept, modifier)
        if rest is None:
            return None
        return parameter if rest is concept else {**parameter, "valueCodeableConcept": rest}
    value = parameter.get("valueString")
    if isinstance(value, str) and _names(value, modifier) and _modifier_list(value):
        rewritten = _text_without(value, modifier)
        return None if rewritten is None else {**parameter, "valueString": rewritten}
    return parameter


def _detail_without(detail: object, modifier: str) -> object | None:
    """One ``orderDetail`` entry (R4 CodeableConcept or R5 parameter group) without
    ``modifier``; ``None`` when nothing of it is left."""
    if not isinstance(detail, dict):
        return detail
    parameters = detail.get("parameter")
    if isinstance(parameters, list):  # R5
        kept = [p for p in (_parameter_without(p, modifier) for p in parameters) if p is not None]
        if len(kept) == len(parameters) and all(
            a is b for a, b in zip(kept, parameters, strict=True)
        ):
            return detail
        return {**detail, "parameter": kept} if kept else None
    return _concept_without(detail, modifier)


def _remove_modifier(resource: JsonObject, modifier: str) -> None:
    """Take every trace of ``modifier`` off a draft ServiceRequest (see above)."""
    modifier = modifier.strip().upper()
    details = resource.get("orderDetail")
    if isinstance(details, list):
        kept = [d for d in (_detail_without(d, modifier) for d in details) if d is not None]
        if kept:
            resource["orderDetail"] = kept
        else:
            del resource["orderDetail"]
    extensions = resource.get("extension")
    if isinstance(extensions, list):
        rest = []
        for ext in extensions:
            if isinstance(ext, dict) and ext.get("url") == EXT_BILLING_MODIFIER:
                value = _coding_without(ext.get("valueCoding"), modifier)
                if value is None:
                    continue
                if value is not ext.get("valueCoding"):
                    ext = {**ext, "valueCoding": value}
            rest.append(ext)
        if rest:
            resource["extension"] = rest
        else:
            del resource["extension"]


def _r5_details(resource: JsonObject) -> list[JsonObject]:
    details = resource.get("orderDetail")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and isinstance(d.get("parameter"), list)]


def _concepts(resource: JsonObject) -> list[JsonObject]:
    """Every modifier CodeableConcept of ``orderDetail`` (R4 entries and R5 parameter values)."""
    details = resource.get("orderDetail")
    found: list[JsonObject] = []
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        parameters = detail.get("parameter")
        if isinstance(parameters, list):
            found += [
                p["valueCodeableConcept"]
                for p in parameters
                if isinstance(p, dict) and isinstance(p.get("valueCodeableConcept"), dict)
            ]
        else:
            found.append(detail)
    return found


def _has_modifier(resource: JsonObject, modifier: str) -> bool:
    """True when the mapper reads ``modifier`` from the draft (orderDetail or extension)."""
    for concept in _concepts(resource):
        for coding in _codings_of(concept):
            if modifier in _coding_modifiers(coding, allow_none=False):
                return True
    extensions = resource.get("extension")
    return any(
        isinstance(e, dict)
        and e.get("url") == EXT_BILLING_MODIFIER
        and modifier in _coding_modifiers(e.get("valueCoding"), allow_none=True)
        for e in (extensions if isinstance(extensions, list) else ())
    )


def _is_modifier_parameter(parameter: object) -> bool:
    if not isinstance(parameter, dict):
        return False
    return any(
        _coding_modifiers(c, allow_none=False)
        for c in _codings_of(parameter.get("valueCodeableConcept"))
    )


def _add_modifier(resource: JsonObject, modifier: str, version: FhirVersion | None) -> None:
    """Add ``modifier`` where the draft keeps its modifiers, once: nothing is added when the
    mapper already reads it; a leftover trace the mapper does not read (a text "59", a coding
    without a system) is replaced by the one added."""
    modifier = modifier.strip().upper()
    if _has_modifier(resource, modifier):
        return
    _remove_modifier(resource, modifier)
    coding = {"system": _modifier_system(modifier), "code": modifier}
    r5_details = _r5_details(resource)
    for detail in r5_details:  # R5: a parameter like the draft's other modifier parameters
        siblings = [p for p in detail["parameter"] if _is_modifier_parameter(p)]
        if siblings and isinstance(siblings[0].get("code"), dict):
            concept: JsonObject = {"coding": [coding]}
            if "text" in siblings[0]["valueCodeableConcept"]:
                concept["text"] = modifier
            detail["parameter"].append(
                {"code": siblings[0]["code"], "valueCodeableConcept": concept}
            )
            return
    extensions = resource.get("extension")
    details = resource.get("orderDetail")
    uses_extension = isinstance(extensions, list) and any(
        isinstance(e, dict) and e.get("url") == EXT_BILLING_MODIFIER for e in extensions
    )
    uses_details = isinstance(details, list) and bool(details) and not r5_details
    item: JsonObject
    if version is FhirVersion.R5 or r5_details or (uses_extension and not uses_details):
        # R5 orderDetail is a parameter structure; the project extension is unambiguous there.
        member, item = "extension", {"url": EXT_BILLING_MODIFIER, "valueCoding": coding}
    else:
        member, item = "orderDetail", {"coding": [coding]}
        if isinstance(details, list) and any(isinstance(d, dict) and "text" in d for d in details):
            item["text"] = modifier  # as the draft's other details show theirs
    existing = resource.setdefault(member, [])
    if isinstance(existing, list):
        existing.append(item)
    # otherwise the draft's member is not a list: left as it is, sound_update refuses the draft


def _json_copy(resource: JsonObject) -> JsonObject:
    """A deep copy of parsed JSON. Drafts come from the JSON parser, so a round trip through
    orjson is exact and about ten times faster than ``copy.deepcopy``; anything orjson cannot
    write (a caller handing in non-JSON values) falls back to ``deepcopy``."""
    try:
        copied = orjson.loads(orjson.dumps(resource))
    except TypeError:
        return copy.deepcopy(resource)
    return cast(JsonObject, copied)


def apply_fixes(
    resource: JsonObject, fixes: Iterable[Fix], version: FhirVersion | None
) -> JsonObject:
    """A copy of a draft ServiceRequest with the fixes applied (units, modifiers, code)."""
    updated = _json_copy(resource)
    for fix in fixes:
        if fix.replace_code is not None:
            updated["code"] = {
                "coding": [{"system": CPT_SYSTEM, "code": fix.replace_code}],
            }
            if version is FhirVersion.R5:
                updated["code"] = {"concept": updated["code"]}
        if fix.set_units is not None:
            quantity = updated.get("quantityQuantity")
            quantity = dict(quantity) if isinstance(quantity, dict) else {}
            quantity["value"] = fix.set_units
            quantity.setdefault("unit", "unit")
            updated["quantityQuantity"] = quantity
        if fix.remove_modifier is not None:
            _remove_modifier(updated, fix.remove_modifier)
        if fix.add_modifier is not None:
            _add_modifier(updated, fix.add_modifier, version)
    return updated


def new_charge(template: JsonObject, fix: Fix, version: FhirVersion | None) -> JsonObject:
    """A new draft charge for ``fix.line_code`` (``fix.new_line``), modelled on the draft
    ``template``: the same patient, encounter, date and discipline modifier, its own id, no
    NCCI modifier (those were for the template's code) and ``fix.set_units`` units."""
    created = _json_copy(template)
    for member in ("identifier", "meta", "text"):
        created.pop(member, None)
    template_id = template.get("id") if isinstance(template.get("id"), str) else "charge"
    created["id"] = f"{template_id}-{fix.line_code}"[:64]
    created["status"] = "draft"
    for modifier in sorted(NCCI_MODIFIERS):
        _remove_modifier(created, modifier)
    return apply_fixes(
        created,
        (Fix(line_code=fix.line_code, replace_code=fix.line_code, set_units=fix.set_units),),
        version,
    )


def _probe(version: FhirVersion | None) -> JsonObject:
    coding = {"system": CPT_SYSTEM, "code": "97530", "display": "warm-up"}
    probe: JsonObject = {
        "resourceType": "ServiceRequest",
        "id": "warm-up",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/warm-up"},
        "quantityQuantity": {"value": 1, "unit": "unit"},
        "extension": [{"url": EXT_BILLING_MODIFIER, "valueCoding": coding}],
        "basedOn": [{"reference": "CarePlan/warm-up"}],
        "occurrencePeriod": {"start": "2025-01-01T09:00:00Z", "end": "2025-01-01T09:15:00Z"},
        "authoredOn": "2025-01-01",
    }
    if version is FhirVersion.R5:
        probe["reason"] = [{"concept": {"coding": [coding]}}]
        probe["code"] = {"concept": {"coding": [coding]}}
    else:
        probe["reasonCode"] = [{"coding": [coding], "text": "warm-up"}]
        probe["code"] = {"coding": [coding]}
        probe["orderDetail"] = [{"coding": [coding]}]
    return probe


#: One fix of every kind the rules emit; their results are validated once, at start-up.
_FIX_KINDS: tuple[Fix, ...] = (
    Fix(line_code="97530", set_units=2),
    Fix(line_code="97530", add_modifier="59"),
    Fix(line_code="97530", add_modifier="XU"),
    Fix(line_code="97530", remove_modifier="59"),
    Fix(line_code="97530", replace_code="97150", set_units=1),
)
#: A new charge modelled on a draft (:func:`new_charge`).
_NEW_LINE = Fix(line_code="97150", set_units=1, new_line=True)


def warm_up() -> None:
    """Prove at start-up, through the full FHIR models (R4B and R5), that every kind of change
    :func:`apply_fixes` makes yields a valid ServiceRequest (R-22). Per request only the draft's
    required members and the members a fix rewrites are checked (:func:`sound_update`): the
    full models cost milliseconds per resource, far too much for the hook's time budget."""
    for version in (None, FhirVersion.R5):
        probe = _probe(version)
        if not _valid_fhir(probe, version):
            raise RuntimeError("warm-up ServiceRequest is not valid FHIR")
        for fix in _FIX_KINDS:
            updated = apply_fixes(probe, (fix,), version)
            if not (_valid_fhir(updated, version) and sound_update(updated, version)):
                raise RuntimeError(f"a suggestion of kind {fix} would not be valid FHIR")
        created = new_charge(probe, _NEW_LINE, version)
        if not (_valid_fhir(created, version) and sound_update(created, version)):
            raise RuntimeError("a new charge would not be valid FHIR")


def _valid_fhir(resource: JsonObject, version: FhirVersion | None) -> bool:
    """The resource validated through the full fhir.resources models (start-up and tests)."""
    try:
        if version is FhirVersion.R5:
            from fhir.resources.servicerequest import ServiceRequest as R5ServiceRequest

            R5ServiceRequest.model_validate(resource)
        else:
            from fhir.resources.R4B.servicerequest import ServiceRequest as R4ServiceRequest

            R4ServiceRequest.model_validate(resource)
    except (ValidationError, ValueError, TypeError):
        return False
    return True


def _token(value: object) -> bool:
    return isinstance(value, str) and bool(value) and value == value.strip()


def _codeable_concept(value: object) -> bool:
    if not isinstance(value, dict) or not value:
        return False
    codings = value.get("coding", [])
    return isinstance(codings, list) and all(isinstance(c, dict) and c for c in codings)


def _objects(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) and item for item in value)


def sound_update(resource: JsonObject, version: FhirVersion | None) -> bool:
    """Per-request check of an updated draft ServiceRequest: the members FHIR requires
    (``status``, ``intent``, ``subject``) and every member a fix may rewrite have the shapes the
    models demand. The rest of the resource is the EHR's own draft, sent back unchanged."""
    if resource.get("resourceType") != "ServiceRequest":
        return False
    if not (_token(resource.get("status")) and _token(resource.get("intent"))):
        return False
    subject = resource.get("subject")
    if not isinstance(subject, dict) or not any(
        isinstance(subject.get(k), str | dict) and subject.get(k)
        for k in ("reference", "identifier", "display")
    ):
        return False
    code = resource.get("code")
    if code is not None:
        if version is FhirVersion.R5:
            if not isinstance(code, dict) or not _codeable_concept(code.get("concept", {"x": 1})):
                return False
        elif not _codeable_concept(code):
            return False
    quantity = resource.get("quantityQuantity")
    if quantity is not None and not (
        isinstance(quantity, dict)
        and isinstance(quantity.get("value"), int | float)
        and not isinstance(quantity.get("value"), bool)
    ):
        return False
    if "orderDetail" in resource and not _objects(resource["orderDetail"]):
        return False
    extensions = resource.get("extension")
    return extensions is None or (
        _objects(extensions) and all(_token(e.get("url")) for e in extensions)
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


@dataclass(frozen=True, slots=True)
class DraftOrders:
    """The draft ServiceRequests of the call, by reference, and their FHIR version."""

    resources: Mapping[str, JsonObject]
    version: FhirVersion | None


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
        created = new_charge(drafts.resources[template], fix, drafts.version)
        taken = created["id"] in {ref.rpartition("/")[2] for ref in drafts.resources}
        if taken or not sound_update(created, drafts.version):
            logger.info("suggestion skipped: no new charge can be modelled on %s", template)
            return None
        description = _describe(fix)
        actions.append(
            Action.model_construct(type="create", description=description, resource=created)
        )
        labels.append(description)
    for ref in sorted(by_ref):
        fixes = by_ref[ref]
        if _drops_line(fixes):
            code = quote_markdown(fixes[0].line_code)
            description = f"remove the draft {code} charge (no billable units)"
            actions.append(
                Action.model_construct(
                    type="delete",
                    description=f"{quote_markdown(ref)}: {description}",
                    resource_id=ref,
                )
            )
            labels.append(f"remove the {code} charge")
            continue
        updated = apply_fixes(drafts.resources[ref], fixes, drafts.version)
        if not sound_update(updated, drafts.version):
            logger.info("suggestion skipped: draft order %s is not valid FHIR", ref)
            return None
        description = "; ".join(_describe(f) for f in fixes)
        actions.append(
            Action.model_construct(
                type="update",
                description=f"{quote_markdown(ref)}: {description}",
                resource=updated,
            )
        )
        labels.append(description)
    label = "; ".join(dict.fromkeys(labels))
    # Built from this module's own typed values (and ``updated`` proven sound above), so the
    # models are constructed without re-validation; the Card that carries them is validated.
    return Suggestion.model_construct(
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


def _merged_fixes(group: Sequence[Finding]) -> tuple[Fix, ...]:
    """Every fix of the group, one charge each; where two change the same thing of a charge
    the first wins, code replacements before anything else (a replaced line is not re-sized,
    and a line billed under a new code is not added again)."""
    ordered = sorted(
        (fix for f in group for fix in f.fixes), key=lambda fix: fix.replace_code is None
    )
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
