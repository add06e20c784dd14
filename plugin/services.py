"""The two therapy services of the product contract, declared on the protocol layer.

- ``therapy-timed-codes`` on ``order-sign``: the charges being signed (``context.draftOrders``)
  against the visit's documentation;
- ``therapy-timed-codes-discharge`` on ``encounter-discharge``: the encounter's documentation and
  whatever billed lines it carries (Claim items, project extensions).

Both run the same pipeline as ``therapy-cds check``: FHIR -> visits -> rules -> cards.

Two duties on top of it (issue 14):

- **The patient in context is the patient analysed.** The mapping takes ``context.patientId``
  and leaves out every resource not shown to be about that patient (counted, never echoed or
  logged by id); the answer carries one warning card saying how many were left out, or is a
  400 OperationOutcome when none of the patient's services remain.
- **Same-day pooling.** The CMS 8-minute rule counts a date of service's timed minutes across
  encounters (R-B2b), while the ``procedures`` prefetch holds one encounter's. With FHIR access
  the services also search ``Procedure?patient=X&date=YYYY-MM-DD`` for each date of service
  (at most :data:`SAME_DAY_MAX_DATES`, through the request's allow-listed FHIR session, its
  page, size and deadline limits) and pool what they find, as ``check`` does over a bundle.
  Without access, or when that search fails, each visit's summary card says in one line that
  its count covers this encounter only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import quote

import orjson

from cds_hooks import (
    CdsResponse,
    InvalidRequest,
    Invocation,
    Link,
    PayloadTooLarge,
    ServiceRegistry,
)
from cds_hooks.errors import PrefetchUnavailable
from cds_hooks.prefetch import Prefetch, PrefetchState
from cds_hooks.service import FhirAccess
from fhir_mappings import CODE_LIST, map_cds_hooks
from fhir_mappings.codes import PROGRESS_NOTE_TYPES
from fhir_mappings.model import TherapyRecord
from fhir_mappings.orders import billing_codes, draft_service_requests, order_dates
from fhir_mappings.writeback import DraftOrders
from plugin.cards import CardOptions, cards_for, other_patient_card
from plugin.pipeline import TooManyProceduresError, check_record, require_procedures_within
from plugin.rules import Analysis, Finding
from plugin.rules.pair import FOCUS_PAIR
from plugin.rules.payer import PayerChoice, PayerMapping
from plugin.rules.progress import HISTORY_NOT_CHECKED
from plugin.rules.vocabulary import (
    CHOICES,
    CardPolicy,
    PairRule,
    PayerRule,
    Vocabulary,
    VocabularyError,
    parse,
)
from plugin.settings import MAX_PROCEDURES_PER_VISIT

ORDER_SIGN_SERVICE = "therapy-timed-codes"
DISCHARGE_SERVICE = "therapy-timed-codes-discharge"

#: Per-call rule overrides travel in a namespaced request extension (checklist X-1).
EXTENSION_KEY = "io.github.therapy-cds"

PREFETCH: Mapping[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "encounter": "Encounter/{{context.encounterId}}",
    "procedures": "Procedure?patient={{context.patientId}}&encounter={{context.encounterId}}",
    "carePlans": "CarePlan?patient={{context.patientId}}",
    # issue 15: optional -- the payer rule comes from it; absent or failed, the default applies
    "coverage": "Coverage?patient={{context.patientId}}&status=active",
    # issue 15, the progress-report interval (R-E6): the patient's encounters (treatment days)
    # and progress reports (the LOINC progress-note types of fhir_mappings.codes)
    "therapyHistory": "Encounter?patient={{context.patientId}}",
    # (codes without their system: a 2.0 template is a relative URL with no "://" in it)
    "progressReports": "DocumentReference?patient={{context.patientId}}&type="
    + ",".join(PROGRESS_NOTE_TYPES),
}
#: The prefetch keys of the visit history (R-E6): both must be had, or it is not checked.
HISTORY_KEYS = ("therapyHistory", "progressReports")

#: encounter-discharge also reads the encounter's Claims (their items are the billed lines,
#: R-H7): optional, a failed or unsupported search leaves the visit's charges "not available"
#: (I-CHARGES-NOT-AVAILABLE) and the log line says why. One key, Claim only: at discharge the
#: claim is what exists, its ExplanationOfBenefit comes from the payer weeks later; an EHR that
#: has EOBs may prefetch them in this key's Bundle too, and the mapper reads them the same way.
CLAIMS_KEY = "claims"
DISCHARGE_PREFETCH: Mapping[str, str] = {
    **PREFETCH,
    CLAIMS_KEY: "Claim?patient={{context.patientId}}&encounter={{context.encounterId}}",
}

_USAGE = (
    "Needs the visit's Procedures with performedPeriod (R4/R4B) or occurrencePeriod (R5), coded "
    "in CPT; charges as draft ServiceRequests (quantityQuantity = units, modifiers in orderDetail)."
    " Rule overrides per call: request extension "
    f'"{EXTENSION_KEY}": {{'
    + ", ".join(f'"{c.member}": "{"|".join(kind)}"' for kind, c in CHOICES.items())
    + "}."
)

#: The prefetch-like key the same-day search is read under (never declared in discovery: a CDS
#: Hooks 2.0 template has no token for the visit's date, see the README).
SAME_DAY_KEY = "sameDayProcedures"
#: At most this many dates of service are searched per call (a visit has one; a service that
#: crosses midnight belongs to its start date, so two is already unusual).
SAME_DAY_MAX_DATES = 2
_NOT_POOLED = {
    "no-fhir": "no FHIR access was given",
    "failed": "the FHIR search for them failed",
    "too-many-dates": f"the request spans more than {SAME_DAY_MAX_DATES} dates of service",
}


@dataclass(frozen=True, slots=True)
class RuleChoice:
    payer_rule: PayerRule
    pair_rule: PairRule
    card_policy: CardPolicy = CardPolicy.PROBLEMS
    # issue 15: the payer mapping (None: the shipped one) and, when the call chose the payer
    # rule itself, why (then Coverage is not consulted)
    payer_mapping: PayerMapping | None = None
    payer_override: str | None = None


def _rule_choice(invocation: Invocation, defaults: RuleChoice) -> RuleChoice:
    """Settings, overridden by the request's ``io.github.therapy-cds`` extension when present."""
    extension = invocation.request.extension or {}
    ours = extension.get(EXTENSION_KEY)
    if ours is None:
        return defaults
    if not isinstance(ours, dict):
        raise InvalidRequest(f"extension '{EXTENSION_KEY}' must be an object")
    try:
        payer = _member(ours, PayerRule, defaults.payer_rule)
        pair = _member(ours, PairRule, defaults.pair_rule)
        policy = _member(ours, CardPolicy, defaults.card_policy)
    except VocabularyError as exc:  # names the member and the accepted values, not the value
        raise InvalidRequest(str(exc)) from None
    return replace(
        defaults,
        payer_rule=payer,
        pair_rule=pair,
        card_policy=policy,
        payer_override="request extension" if "payerRule" in ours else defaults.payer_override,
    )


_Rule = TypeVar("_Rule", bound=Vocabulary)


def _member(ours: Mapping[str, object], kind: type[_Rule], default: _Rule) -> _Rule:
    """The extension's member for ``kind`` (``payerRule``, ...), or ``default`` when absent."""
    name = CHOICES[kind].member
    if name not in ours:
        return default
    return parse(kind, ours[name], f"extension '{EXTENSION_KEY}'.{name}")


def coverage_of(invocation: Invocation) -> tuple[object, str | None]:
    """The ``coverage`` key's value, or ``(None, why)`` when no Coverage could be read: the key
    is optional, so an absent, failed or partial answer never fails the call (issue 15)."""
    prefetch = invocation.prefetch
    entry = prefetch.entry("coverage")
    if entry.state is PrefetchState.MISSING:
        if invocation.fhir is None:
            return None, "coverage not prefetched (and no FHIR access)"
        return None, "coverage could not be read (the FHIR search failed)"
    if not entry.complete:
        return None, "coverage could not be read in full (paging failed)"
    return entry.value, None


def bills_therapy(draft_requests: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when any draft order is a therapy code this product knows (timed or untimed)."""
    return any(
        code in CODE_LIST.codes
        for resource in draft_requests.values()
        for code in billing_codes(resource)
    )


async def _procedures(
    invocation: Invocation, drafts: Mapping[str, Mapping[str, Any]]
) -> tuple[object, bool]:
    """The ``procedures`` key, or -- when the client could not fill it because there is no
    ``encounterId`` (the CDS Hooks Sandbox never sends one) -- a search by patient and the
    date of the draft orders, when the request gives FHIR access. Otherwise 412 (P-13).

    The flag is True when the value is that search, which already holds the whole day."""
    prefetch = invocation.prefetch
    if not prefetch.is_missing("procedures"):
        return prefetch.require("procedures"), False
    context = invocation.context
    patient = context.get("patientId")
    if invocation.fhir is not None and not context.get("encounterId") and isinstance(patient, str):
        dates = sorted(day for request in drafts.values() for day in order_dates(request))
        if dates:
            found = await invocation.fhir.fetch(
                f"Procedure?patient={patient}&date={dates[-1]}", key="procedures"
            )
            return found, True
    return prefetch.require("procedures"), False


async def same_day_procedures(
    fhir: FhirAccess | None, patient_id: str, record: TherapyRecord
) -> tuple[dict[str, Any] | None, str]:
    """The patient's Procedures of the dates of service in ``record``, from the FHIR server.

    Returns ``(searchset, "pooled")``, or ``(None, why)`` with ``why`` one of ``no-dates``,
    ``no-fhir``, ``too-many-dates``, ``failed``. One search per date (R4 ``date`` covers
    ``performed[x]``, R5 ``occurrence[x]``); the session bounds pages, bytes and time.
    """
    dates = sorted({s.service_date for s in record.services if s.service_date is not None})
    if not dates:
        return None, "no-dates"
    if fhir is None:
        return None, "no-fhir"
    if len(dates) > SAME_DAY_MAX_DATES:
        return None, "too-many-dates"
    entries: list[object] = []
    for day in dates:
        query = f"Procedure?patient={quote(patient_id, safe='')}&date={day.isoformat()}"
        try:
            found = await fhir.fetch(query, key=SAME_DAY_KEY)
        except PrefetchUnavailable:
            return None, "failed"
        if not isinstance(found, dict) or found.get("resourceType") != "Bundle":
            return None, "failed"
        entry = found.get("entry")
        if isinstance(entry, list):
            entries.extend(entry)
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}, "pooled"


def on_dates_of(record: TherapyRecord, pooled: TherapyRecord) -> TherapyRecord:
    """``pooled`` keeping only the services of ``record`` and those on its dates of service
    (a server may read ``date=`` in its own time zone; I-2.4 dates come from the start)."""
    own = {s.ref for s in record.services}
    dates = {s.service_date for s in record.services}
    return replace(
        pooled,
        services=tuple(s for s in pooled.services if s.ref in own or s.service_date in dates),
    )


def history_available(prefetch: Prefetch) -> bool:
    """True when every :data:`HISTORY_KEYS` key was had in full: sent or fetched (``null``:
    none exist), all pages. Otherwise the progress-report interval is not checked (R-E6)."""
    return all(
        prefetch.is_null(key) or (prefetch.is_present(key) and prefetch.entry(key).complete)
        for key in HISTORY_KEYS
    )


def history_note(checked: bool) -> str | None:
    """The line a visit's summary ends with when the progress-report interval was not checked."""
    return None if checked else HISTORY_NOT_CHECKED


def not_pooled_note(same_day: str, analysis: Analysis | None = None) -> str | None:
    """The line a visit's summary ends with when its count covers this encounter only.

    With ``analysis``: when a visit bills 97140 or 97530 (a unit) without the other, whether another
    discipline holds the other code that day (co-treatment, checked like a visit's own pair)
    is not known, and the line says that pair was not checked rather than guess."""
    why = _NOT_POOLED.get(same_day)
    if why is None:
        return None
    unchecked = analysis is not None and any(
        visit.pair.reason == "absent"
        and len(lone := set(visit.raw_minutes) & set(FOCUS_PAIR)) == 1
        and any(a.get(code, 0) >= 1 for a in visit.allocations for code in lone)
        for visit in analysis.visits
    )
    return (
        "Count covers this encounter only: the patient's other visits of the same day were not"
        f" read ({why})"
        + ("; a 97140/97530 pair with another discipline was not checked." if unchecked else ".")
    )


async def pooled_record(
    draft_orders: object,
    resolved: Mapping[str, object],
    *,
    patient_id: str | None,
    fhir: FhirAccess | None,
    whole_day: bool = False,
    more: Callable[[dict[str, Any]], Awaitable[Mapping[str, object]]] | None = None,
) -> tuple[TherapyRecord, str]:
    """The record every entry point with a patient in context analyses: ``draft_orders`` and
    ``resolved`` mapped for ``patient_id`` (another patient's resources left out and counted),
    then pooled with the patient's Procedures of the same dates of service from ``fhir``.

    Returns the record and how the day was covered: ``pooled``, ``whole-day`` (``resolved``
    already holds the day), or a reason from :func:`same_day_procedures`. Not pooled when
    nothing of the patient's remains (the caller refuses that). ``more(searchset)`` may read
    what goes with the day's other Procedures (the SMART app: their encounters' charges)."""
    record = map_cds_hooks(draft_orders, resolved, patient_id=patient_id)
    if whole_day:
        return record, "whole-day"
    if patient_id is None or (record.other_patient_resources and not record.services):
        return record, "no-dates"
    searched, same_day = await same_day_procedures(fhir, patient_id, record)
    if searched is not None:
        extra = await more(searched) if more is not None else {}
        pooled = map_cds_hooks(
            draft_orders, {**resolved, **extra, SAME_DAY_KEY: searched}, patient_id=patient_id
        )
        record = on_dates_of(record, pooled)
    return record, same_day


def build_registry(
    defaults: RuleChoice,
    *,
    smart_launch_url: str | None = None,
    rules_url: str | None = None,
    on_findings: Callable[[str, Sequence[Finding]], None] | None = None,
    max_procedures_per_visit: int = MAX_PROCEDURES_PER_VISIT,
) -> ServiceRegistry:
    """The registry with both services, using ``defaults`` unless a call overrides them.

    ``rules_url``: the absolute URL of the finding catalogue page (``/rules``); each card links
    to its findings' entries there. ``None`` (no public base URL configured): no such link, as
    CDS Hooks links must be absolute.
    ``on_findings(service_id, findings)`` is told every finding of each analysis (metrics).
    A call is one visit: one carrying more than ``max_procedures_per_visit`` therapy Procedures
    (in all, or on one visit) is answered 413 before any rule runs.
    """
    registry = ServiceRegistry()

    def links_for(invocation: Invocation) -> tuple[Link, ...]:
        if smart_launch_url is None:
            return ()
        encounter = invocation.context.get("encounterId")
        app_context = (
            orjson.dumps({"encounter": encounter}).decode() if isinstance(encounter, str) else None
        )
        return (
            Link(
                label="Open the visit timeline",
                url=smart_launch_url,
                type="smart",
                app_context=app_context,
            ),
        )

    async def analyse(
        invocation: Invocation, draft_orders: object, drafts: dict[str, dict[str, Any]]
    ) -> CdsResponse:
        started = time.perf_counter()
        choice = _rule_choice(invocation, defaults)
        procedures, whole_day = await _procedures(invocation, drafts)
        prefetch = invocation.prefetch
        resolved: dict[str, object] = {
            "procedures": procedures,
            "patient": prefetch.get("patient"),
            "encounter": prefetch.get("encounter"),
            "carePlans": prefetch.get("carePlans"),
        }
        with_history = history_available(prefetch)
        if with_history:
            resolved.update({key: prefetch.get(key) for key in HISTORY_KEYS})
        if CLAIMS_KEY in invocation.service.prefetch:  # optional: never a 412
            resolved[CLAIMS_KEY] = prefetch.get(CLAIMS_KEY)
            entry = prefetch.entry(CLAIMS_KEY)
            if entry.state is PrefetchState.MISSING or not entry.complete:
                # why, in one token (a reason never holds a request value)
                why = re.sub(r"[^A-Za-z0-9]+", "-", entry.reason or "not prefetched").strip("-")
                invocation.log.update(claims_not_read=why)
        coverage, coverage_unread = coverage_of(invocation)
        resolved["coverage"] = coverage
        patient = invocation.context.get("patientId")
        patient_id = patient if isinstance(patient, str) else None
        record, same_day = await pooled_record(
            draft_orders, resolved, patient_id=patient_id, fhir=invocation.fhir, whole_day=whole_day
        )
        if record.other_patient_resources and not record.services:
            # counted, never named: the log line and the answer carry the number only
            invocation.log.update(other_patient_resources=record.other_patient_resources)
            raise InvalidRequest(
                f"the request's data is about another patient than context.patientId:"
                f" {record.other_patient_resources} resource(s) were left out and none of the"
                " patient's own services remain to analyse; send the prefetch and"
                " draftOrders of the patient in context"
            )
        invocation.log.update(
            same_day=same_day, other_patient_resources=record.other_patient_resources
        )
        try:
            require_procedures_within(len(record.services), max_procedures_per_visit, "the request")
            result = check_record(
                record,
                payer_rule=choice.payer_rule,
                pair_rule=choice.pair_rule,
                max_procedures_per_visit=max_procedures_per_visit,
                visit_history=with_history,
                payer=PayerChoice(
                    mapping=choice.payer_mapping,
                    override=choice.payer_override,
                    unread=coverage_unread,
                ),
            )
        except TooManyProceduresError as exc:
            raise PayloadTooLarge(
                f"{exc}. Send one visit per call: the Procedures of one encounter and date"
                " (prefetch 'procedures' for the visit's encounter); if real visits are this"
                " large, raise THERAPY_CDS_MAX_PROCEDURES_PER_VISIT."
            ) from None
        if on_findings is not None:
            on_findings(
                invocation.service.id,
                [f for v in result.analysis.visits for f in v.findings]
                + list(result.analysis.findings),
            )
        options = CardOptions(
            hook_instance=invocation.hook_instance,
            drafts=DraftOrders(drafts, record.fhir_version),
            links=links_for(invocation),
            notes=tuple(
                n
                for n in (
                    not_pooled_note(same_day, result.analysis),
                    history_note(with_history),
                )
                if n is not None
            ),
            policy=choice.card_policy,
            rules_url=rules_url,
        )
        cards = cards_for(result.analysis, options)
        if record.other_patient_resources:
            cards = (other_patient_card(record.other_patient_resources, options), *cards)
        # Onto the call's one log line: ids, counts and rule ids only, never resource
        # content, patient identifiers or tokens.
        rules = sorted({f.rule.value for v in result.analysis.visits for f in v.findings})
        invocation.log.update(
            visits=len(result.analysis.visits),
            rules=",".join(rules) or "-",
            mapping_issues=len(record.issues),
            payer_rule=choice.payer_rule,
            pair_rule=choice.pair_rule,
            card_policy=choice.card_policy,
            analysis_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return CdsResponse(cards=cards)

    @registry.service(
        id=ORDER_SIGN_SERVICE,
        hook="order-sign",
        title="Therapy timed-code billing check",
        description=(
            "Checks PT/OT charges being signed against the visit's documented times: units under "
            "the CMS 8-minute rule (or AMA), the 97140/97530 NCCI pair and its modifier, overlaps,"
            " group delivery, and the plan-of-care link."
        ),
        prefetch=PREFETCH,
        usage_requirements=_USAGE,
        # Lenient on what the analysis does not use (checklist A-5): real order-sign requests
        # from other implementers omit userId.
        required_context=("patientId", "draftOrders"),
    )
    async def order_sign(invocation: Invocation) -> CdsResponse:
        draft_orders = invocation.context.get("draftOrders")
        if not isinstance(draft_orders, dict):
            raise InvalidRequest("context.draftOrders must be a FHIR Bundle object")
        drafts = draft_service_requests(draft_orders)
        if not bills_therapy(drafts):
            return CdsResponse(cards=())  # nothing of ours is being signed: no guidance
        return await analyse(invocation, draft_orders, drafts)

    @registry.service(
        id=DISCHARGE_SERVICE,
        hook="encounter-discharge",
        title="Therapy visit documentation check at discharge",
        description=(
            "When a therapy encounter is closed, checks its documented times and billed lines: "
            "units, the 97140/97530 pair, overlaps, group delivery, and the plan-of-care link."
        ),
        prefetch=DISCHARGE_PREFETCH,
        usage_requirements=_USAGE,
        required_context=("patientId",),
    )
    async def discharge(invocation: Invocation) -> CdsResponse:
        return await analyse(invocation, None, {})

    return registry


__all__ = [
    "CLAIMS_KEY",
    "DISCHARGE_PREFETCH",
    "DISCHARGE_SERVICE",
    "EXTENSION_KEY",
    "HISTORY_KEYS",
    "ORDER_SIGN_SERVICE",
    "PREFETCH",
    "SAME_DAY_KEY",
    "SAME_DAY_MAX_DATES",
    "RuleChoice",
    "bills_therapy",
    "build_registry",
    "coverage_of",
    "history_available",
    "history_note",
    "not_pooled_note",
    "on_dates_of",
    "pooled_record",
    "same_day_procedures",
]
