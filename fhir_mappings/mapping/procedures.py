"""Procedure -> :class:`~fhir_mappings.model.TimedService` (R-H1, R-H2, R-H6, R-H8, I-2.2 .. I-2.4).

A Procedure coded in CPT or HCPCS is one documented service: its times (R4 ``performed[x]``,
R5 ``occurrence[x]``), patient, encounter, performers, body sites, delivery mode, plan links,
and what was billed for it -- a linked Claim line first, else the project's billed-units and
billing-modifier extensions (R-H7).
"""

from __future__ import annotations

from fhir_mappings import codes
from fhir_mappings.mapping.codings import (
    billing_coding,
    extension_codings_modifiers,
    modifier_extension_coding,
)
from fhir_mappings.mapping.context import (
    PERIOD,
    ClaimLine,
    Item,
    JsonObject,
    MappingContext,
    Span,
)
from fhir_mappings.model import (
    EXT_BILLED_UNITS,
    EXT_BILLING_MODIFIER,
    EXT_DELIVERY_MODE,
    DeliveryMode,
    IssueCode,
    TimedService,
    TimingKind,
)
from fhir_mappings.performers import service_role
from fhir_mappings.times import MAX_SERVICE_SPAN

_PERIOD_FIELDS = (
    ("performedPeriod", True),
    ("performedDateTime", False),
    ("occurrencePeriod", True),
    ("occurrenceDateTime", False),
)
# performed/occurrence String, Age, Range and Timing carry no usable time: TimingKind.NONE.
_DATETIME_FIELDS = frozenset({"performedDateTime", "occurrenceDateTime"})
_GROUP_CODES = frozenset(c for c in codes.CODE_LIST.codes if codes.is_group_code(c))
_INSTANT = TimingKind.INSTANT
_IMPLAUSIBLE = TimingKind.IMPLAUSIBLE
_INDIVIDUAL = DeliveryMode.INDIVIDUAL
_GROUP = DeliveryMode.GROUP


def note_based_on(ctx: MappingContext, item: Item) -> None:
    """Record what a Procedure is ``basedOn`` (even one that maps to nothing): a ServiceRequest
    a Procedure is based on is a plan of care, not a charge (R-H3)."""
    _, _, key, res = item
    based_on = res.get("basedOn")
    ctx.based_on[key] = () if based_on is None else ctx.refs(based_on, key)


def read_procedure(ctx: MappingContext, item: Item) -> TimedService | None:
    """One Procedure -> one :class:`TimedService` (R-H2, R-H6, R-H8, I-2.2 .. I-2.4).

    Modifiers and billed units: a linked ``Claim.item`` wins over the project extensions on
    the Procedure (R-H7 POLICY: Claim first, extension only when no claim line is present).
    """
    source, _, key, res = item
    loc = source.location
    note_based_on(ctx, item)
    code = res.get("code")
    if type(code) is not dict:
        if code is not None:
            ctx.issue(
                loc,
                "code is not a CodeableConcept; skipped",
                key,
                "code",
                IssueCode.UNUSABLE_RESOURCE,
            )
        ctx.out_of_scope += 1
        return None
    coding = billing_coding(ctx, code, loc, key, "code")
    if coding is None:
        ctx.out_of_scope += 1
        return None
    system, code_value, display = coding
    status = res.get("status")
    if type(status) is not str or not status:
        ctx.issue(
            loc,
            "Procedure has no status (required); skipped",
            key,
            "status",
            IssueCode.UNUSABLE_RESOURCE,
        )
        return None

    refused = ctx.refused_times
    kind, start_utc, end_utc, service_date, spans_midnight = _timing(ctx, res, loc, key)
    if start_utc is None or end_utc is None:
        if ctx.refused_times != refused:  # a recorded time no visit can have
            kind, start_utc, end_utc, spans_midnight = _IMPLAUSIBLE, None, None, False
    elif end_utc - start_utc > MAX_SERVICE_SPAN:
        ctx.issue(
            loc,
            f"the service lasts more than {MAX_SERVICE_SPAN.total_seconds() / 3600:g} hours,"
            " longer than one service can; its times are not used: correct them at the"
            " source",
            key,
            _timing_field(res),
        )
        kind, start_utc, end_utc, spans_midnight = _IMPLAUSIBLE, None, None, False

    index = ctx.index
    encounter = index.of(res.get("encounter"), key)
    if service_date is None and encounter is not None:
        info = ctx.encounters.get(encounter)
        if info is not None:
            service_date = info.service_date

    patient, subject_is_group = ctx.subject(res, "subject", loc, key)
    delivery = _GROUP if subject_is_group or code_value in _GROUP_CODES else _INDIVIDUAL
    billed_units: int | None = None
    modifiers: tuple[str, ...] = ()
    extensions = res.get("extension")
    if type(extensions) is list:
        modifier_codings: list[JsonObject] = []
        for ext in extensions:
            if type(ext) is not dict:
                continue
            url = ext.get("url")
            if url == EXT_BILLING_MODIFIER:
                value = modifier_extension_coding(ctx, ext, loc, key)
                if value is not None:
                    modifier_codings.append(value)
            elif url == EXT_DELIVERY_MODE:
                mode = ext.get("valueCode")
                if mode == "group":
                    delivery = _GROUP
                elif mode != "individual":
                    ctx.issue(
                        loc,
                        "therapy-delivery-mode must be 'individual' or 'group'; ignored",
                        key,
                        "extension(therapy-delivery-mode)",
                    )
            elif url == EXT_BILLED_UNITS:
                billed_units = ctx.units(
                    ext.get("valueInteger"), loc, key, "extension(billed-units)"
                )
        if modifier_codings:
            modifiers = tuple(extension_codings_modifiers(ctx, modifier_codings, loc, key))

    lines = ctx.claim_lines.get(key)
    if lines:
        modifiers, billed_units = _apply_claim_lines(
            ctx, lines, code_value, modifiers, billed_units, loc, key
        )

    performers: tuple[str, ...] = ()
    raw_performers = res.get("performer")
    if type(raw_performers) is list:
        actors: list[str] = []
        for performer in raw_performers:
            if type(performer) is dict:
                actor = index.of(performer.get("actor"), key)
                if actor is not None and actor not in actors:
                    actors.append(actor)
        performers = tuple(actors)

    raw_sites = res.get("bodySite")
    return TimedService(
        ref=key,
        code=code_value,
        system=system,
        status=status,
        timing=kind,
        start=start_utc,
        end=end_utc,
        service_date=service_date,
        spans_midnight=spans_midnight,
        patient=patient,
        encounter=encounter,
        performers=performers,
        body_sites=_body_sites(raw_sites) if type(raw_sites) is list else (),
        delivery_mode=delivery,
        subject_is_group=subject_is_group,
        modifiers=modifiers,
        billed_units=billed_units,
        plan_refs=ctx.based_on[key],
        has_reason=bool(res.get("reasonCode") or res.get("reasonReference") or res.get("reason")),
        display=display,
        location=index.of(res.get("location"), key) if "location" in res else None,
        performer_role=service_role(performers, ctx.roles),  # R-G3
    )


def _timing_field(res: JsonObject) -> str:
    """The performed[x] / occurrence[x] member a Procedure records its time in."""
    return next((field for field, _ in _PERIOD_FIELDS if field in res), "performed[x]")


def _timing(ctx: MappingContext, res: JsonObject, loc: str, key: str) -> Span:
    """A Procedure's performed[x] (R4) / occurrence[x] (R5) as a span (R-H2, I-2.3)."""
    start = end = None
    timing_field = "performed"
    for field, is_period in _PERIOD_FIELDS:
        if field in res:
            timing_field = field
            if is_period:
                start, end = ctx.period(res[field], loc, key, field, visit=True)
            else:
                start = ctx.point(res[field], loc, key, field, visit=True)
            break
    span = ctx.span(start, end, loc, key, timing_field)
    if span[0] is PERIOD and timing_field in _DATETIME_FIELDS:
        # a point in time, no duration (R-H2, W-NO-DURATION)
        return _INSTANT, span[1], span[2], span[3], span[4]
    return span


def _apply_claim_lines(
    ctx: MappingContext,
    lines: list[ClaimLine],
    code_value: str,
    modifiers: tuple[str, ...],
    billed_units: int | None,
    loc: str,
    key: str,
) -> tuple[tuple[str, ...], int | None]:
    """Claim lines billing this Procedure replace its extension modifiers/units (R-H7)."""
    matching = [line for line in lines if line.code == code_value]
    for line in lines:
        if line.code != code_value:
            ctx.issue(
                loc,
                f"{line.ref} bills {line.code} but this Procedure is coded {code_value}; "
                "that claim line is not applied to it",
                key,
                "code",
            )
    if not matching:
        return modifiers, billed_units
    chosen = matching[0]
    if len(matching) > 1:
        ctx.issue(
            loc, f"{len(matching)} claim lines bill this Procedure; {chosen.ref} is used", key
        )
    return chosen.modifiers, chosen.units


def _body_sites(raw_sites: list[object]) -> tuple[str, ...]:
    """``"system|code"`` of each bodySite's first coding, else ``"text:..."``."""
    out: list[str] = []
    for site in raw_sites:
        if type(site) is not dict:
            continue
        site_codings = site.get("coding")
        if type(site_codings) is list:
            named = next(
                (
                    f"{c.get('system', '')}|{c['code']}"
                    for c in site_codings
                    if type(c) is dict and type(c.get("code")) is str
                ),
                None,
            )
            if named is not None:
                out.append(named)
                continue
        text = site.get("text")
        if type(text) is str and text:
            out.append(f"text:{text}")
    return tuple(out)
