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
from dataclasses import dataclass
from typing import Any, cast

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
from plugin.rules import Analysis, Finding, Fix, VisitAnalysis
from plugin.rules.catalogue import CATALOGUE, RuleId, Severity

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
}

# ------------------------------------------------------------------------------- summaries

_TITLES: Mapping[RuleId, str] = {
    RuleId.E_PAIR_NO_MODIFIER: "97530 billed with 97140 but neither line has modifier 59/X{EPSU}",
    RuleId.W_MODIFIER_ON_COL1: "Modifier is on 97140; it belongs on the 97530 line",
    RuleId.E_PAIR_SAME_TIMEBLOCK: "97140 and 97530 overlap in time: 97530 is not billable for it",
    RuleId.W_OVERLAP: "One-on-one services overlap in time; shared minutes counted once",
    RuleId.W_MODIFIER_MISMATCH_XE: "XE used but both services are on the same encounter",
    RuleId.W_MODIFIER_MISMATCH_XP: "XP used but the same practitioner performed both services",
    RuleId.W_MODIFIER_MISMATCH_XS: "XS used but separate body sites are not documented",
    RuleId.W_59_WITH_X: "Modifier 59 and an X modifier on the same line; report only one",
    RuleId.W_CODE_ZERO_UNITS: "A documented code earns 0 units today; do not bill it",
    RuleId.W_MIN_UNDER_8: "Under 8 timed minutes: no timed units are billable",
    RuleId.E_UNITS_EXCEED: "Billed units exceed what the documented minutes support",
    RuleId.W_MISSING_END: "A timed service has no end time; its minutes cannot be counted",
    RuleId.W_MISSING_START: "A timed service has no start time; its minutes cannot be counted",
    RuleId.W_NO_DURATION: "A timed service has a time but no duration; minutes cannot be counted",
    RuleId.W_SPANS_MIDNIGHT: "A service crosses midnight; all of it counts on the start date",
    RuleId.E_GROUP_NOT_ONE_ON_ONE: "One-on-one code delivered to a group: bill 97150 instead",
    RuleId.W_NO_PLAN_OF_CARE: "Services are not linked to a plan of care",
    RuleId.E_PLAN_NOT_ACTIVE: "The linked plan of care is not active",
    RuleId.E_PLAN_PERIOD: "The date of service is outside the plan of care's period",
    RuleId.W_RECERT_DUE: "Plan of care recertification is due (over 90 days)",
    RuleId.W_NO_REASON: "Services have no diagnosis or reason linked",
    RuleId.W_DISCIPLINE_MODIFIER_MISSING: "Timed line without GP/GO/GN discipline modifier",
}


def _summary(finding: Finding, visit: VisitAnalysis | None) -> str:
    title = _TITLES.get(finding.rule) or CATALOGUE[finding.rule].meaning
    if visit is not None:
        candidate = f"{title} ({visit.date.isoformat()})"
        if len(candidate) < 140:
            return candidate
    return title if len(title) < 140 else title[:136] + "..."


# ---------------------------------------------------------------------------------- detail


def _units_table(visit: VisitAnalysis) -> str:
    """The visit's units table (markdown); :func:`cards_for` builds it once per visit."""
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
    rule = "CMS 8-minute rule (pooled)" if visit.payer_rule == "cms" else "AMA per-code rule"
    rows.append("")
    rows.append(
        f"Total timed minutes: **{visit.total_timed_minutes}** · units allowed: "
        f"**{visit.units_allowed_total}** ({rule})"
    )
    return "\n".join(rows)


def _source_line(finding: Finding) -> str:
    entry = CATALOGUE[finding.rule]
    implements = ", ".join(entry.implements)
    return f"*Rule {finding.rule.value} ({implements}): {entry.document}.*"


def _documentation(resources: Sequence[str]) -> str:
    """The resources a finding is about, as code spans; at most :data:`LISTED_RESOURCES`, and the
    count of the others."""
    listed = ", ".join(quote_markdown(ref, code=True) for ref in resources[:LISTED_RESOURCES])
    left_out = len(resources) - LISTED_RESOURCES
    return f"Documentation: {listed}" + (
        f", and {left_out} more not listed" if left_out > 0 else ""
    )


def _detail(finding: Finding, units_table: str | None) -> str:
    parts = [quote_markdown(finding.message)]
    if finding.resources:
        parts.append(_documentation(finding.resources))
    if finding.facts.pair_rule and finding.rule.value.startswith(("E-PAIR", "W-MODIFIER")):
        reading = (
            "CMS reading: distinct, non-overlapping time blocks (split blocks allowed)"
            if finding.facts.pair_rule == "cms"
            else "strict reading: each code needs 15 minutes of its own distinct time"
        )
        parts.append(f"Pair rule applied: {reading}.")
    if units_table is not None:
        parts.append(units_table)
    parts.append(_source_line(finding))
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
    for fix in finding.fixes:
        for ref in fix.charge_refs:
            if ref in drafts.resources and ref not in claimed:
                by_ref.setdefault(ref, []).append(fix)
    if not by_ref:
        return None
    actions = []
    labels = []
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
    """Per-call inputs to card building."""

    hook_instance: str
    drafts: DraftOrders | None = None
    links: tuple[Link, ...] = ()
    notes: tuple[str, ...] = ()  # one-line caveats every visit's summary card ends with


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


def finding_card(
    finding: Finding,
    visit: VisitAnalysis | None,
    options: CardOptions,
    claimed: frozenset[str] = frozenset(),
    units_table: str | None = None,
) -> Card:
    """The card for one error or warning finding (``claimed``: drafts another card replaces;
    ``units_table``: the visit's table, built by the caller once for all the visit's cards)."""
    visit_key = f"{visit.patient}|{visit.date}|{visit.discipline.value}" if visit else "-"
    make_uuid = _uuid_factory(
        options.hook_instance,
        visit_key,
        finding.rule.value,
        ",".join(finding.resources),
        ",".join(finding.codes),
    )
    suggestion = (
        _suggestion(finding, options.drafts, make_uuid, claimed)
        if options.drafts is not None
        else None
    )
    entry = CATALOGUE[finding.rule]
    return Card(
        uuid=make_uuid("card"),
        summary=_summary(finding, visit),
        indicator="critical" if finding.severity is Severity.ERROR else "warning",
        detail=_detail(finding, units_table),
        source=_source(finding.rule.value, _TITLES.get(finding.rule) or entry.meaning),
        suggestions=(suggestion,) if suggestion else (),
        selection_behavior="at-most-one" if suggestion else None,
        override_reasons=OVERRIDE_REASONS.get(finding.rule, (WILL_CORRECT,)),
        links=options.links,
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
    return text if len(text) < 140 else text[:136] + "..."


def summary_card(visit: VisitAnalysis, options: CardOptions, units_table: str) -> Card:
    """The per-visit ``info`` card: units per code (``units_table``), pair status and every
    informational finding."""
    make_uuid = _uuid_factory(
        options.hook_instance, f"{visit.patient}|{visit.date}|{visit.discipline.value}", "summary"
    )
    lines = [units_table]
    if len(visit.allocations) > 1:
        options_text = " **or** ".join(
            ", ".join(f"{quote_markdown(c)}×{n}" for c, n in allocation.items())
            for allocation in visit.allocations
        )
        lines.append(f"Acceptable allocations (any may be billed): {options_text}")
    lines.append(f"97140/97530 pair: **{visit.pair.status.value}**")
    infos = [f for f in visit.findings if f.severity is Severity.INFO]
    if infos:
        lines.append("\n".join(f"- **{f.rule.value}**: {quote_markdown(f.message)}" for f in infos))
    lines.extend(options.notes)
    topic = infos[0].rule.value if len(infos) == 1 else "units-summary"
    return Card(
        uuid=make_uuid("card"),
        summary=_units_summary(visit),
        indicator="info",
        detail="\n\n".join(lines),
        source=_source(topic, "Units per code for the visit"),
        links=options.links,
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


def cards_for(analysis: Analysis, options: CardOptions) -> tuple[Card, ...]:
    """Every card for an analysis: per visit, its error and warning cards then its summary;
    findings outside any visit (e.g. a Procedure ignored for its status) in one info card."""
    cards: list[Card] = []
    for visit in analysis.visits:
        table = _units_table(visit)
        replaced = frozenset(
            ref
            for f in visit.findings
            for fix in f.fixes
            if fix.replace_code
            for ref in fix.charge_refs
        )
        for finding in visit.findings:
            if finding.severity is not Severity.INFO:
                replaces = any(fix.replace_code for fix in finding.fixes)
                claimed = frozenset() if replaces else replaced
                cards.append(finding_card(finding, visit, options, claimed, table))
        cards.append(summary_card(visit, options, table))
    loose: Sequence[Finding] = analysis.findings
    for finding in (f for f in loose if f.severity is not Severity.INFO):
        cards.append(finding_card(finding, None, options))
    infos = [f for f in loose if f.severity is Severity.INFO]
    if infos:
        make_uuid = _uuid_factory(options.hook_instance, "outside-visits")
        cards.append(
            Card(
                uuid=make_uuid("card"),
                summary=f"{len(infos)} service(s) not counted toward any visit",
                indicator="info",
                detail="\n".join(
                    f"- **{f.rule.value}**: {quote_markdown(f.message)}" for f in infos
                ),
                source=_source(infos[0].rule.value, None),
            )
        )
    return tuple(cards)
