"""ServiceRequest -> :class:`~fhir_mappings.model.Charge` (``DRAFT_ORDER``) or plan of care.

A ServiceRequest coded in CPT or HCPCS is a charge; one a Procedure is ``basedOn`` is the plan
of care instead (R-H3). A draft order (``context.draftOrders``) is always a charge, and also a
plan when a Procedure points at it. R4 and R5 shapes of ``code`` (CodeableConcept /
CodeableReference) and ``orderDetail`` land on the same fields.
"""

from __future__ import annotations

from fhir_mappings.mapping.codings import (
    billing_coding,
    extension_modifiers,
    extensions,
    modifier_codes,
)
from fhir_mappings.mapping.context import Item, MappingContext
from fhir_mappings.mapping.plans import read_request_as_plan
from fhir_mappings.model import Charge, ChargeSource

_DRAFT_ORDER = ChargeSource.DRAFT_ORDER


def read_service_request(ctx: MappingContext, item: Item, plan_targets: set[str]) -> None:
    """One ServiceRequest into ``ctx.charges`` and/or ``ctx.plans`` (``plan_targets``: the keys
    Procedures are based on)."""
    source, _, key, res = item
    loc = source.location
    is_plan = key in plan_targets
    if is_plan:
        read_request_as_plan(ctx, res, key, loc)
        if not source.draft_order:
            return
    code = res.get("code")
    concept = code.get("concept", code) if isinstance(code, dict) else None
    coding = billing_coding(ctx, concept, loc, key, "code")
    if coding is None:
        if not is_plan:
            ctx.out_of_scope += 1
        return
    system, code_value, _ = coding
    quantity = res.get("quantityQuantity")
    units = None
    if isinstance(quantity, dict):
        units = ctx.units(quantity.get("value"), loc, key, "quantityQuantity.value")
    elif quantity is not None:
        ctx.issue(loc, "quantityQuantity is not a Quantity; not used", key, "quantityQuantity")
    details = res.get("orderDetail")
    modifiers = [] if details is None else _order_detail_modifiers(ctx, details, loc, key)
    if "extension" in res:
        for extra in extension_modifiers(ctx, extensions(res), loc, key):
            if extra not in modifiers:
                modifiers.append(extra)
    service_date = None
    if "occurrenceDateTime" in res:
        point = ctx.point(res["occurrenceDateTime"], loc, key, "occurrenceDateTime")
        service_date = point[1] if point is not None else None
    elif "occurrencePeriod" in res:
        start, _ = ctx.period(res["occurrencePeriod"], loc, key, "occurrencePeriod")
        service_date = start[1] if start is not None else None
    status = res.get("status")
    patient, _ = ctx.subject(res, "subject", loc, key)
    based_on = res.get("basedOn")
    ctx.charges.append(
        Charge(
            ref=key,
            source=_DRAFT_ORDER,
            code=code_value,
            system=system,
            units=units,
            modifiers=tuple(modifiers),
            patient=patient,
            service_date=service_date,
            status=status if isinstance(status, str) else None,
            plan_refs=() if based_on is None else ctx.refs(based_on, key),
        )
    )


def _order_detail_modifiers(ctx: MappingContext, details: object, loc: str, key: str) -> list[str]:
    """Modifier codings of ``orderDetail``.

    R4 has CodeableConcept[]; R5 has ``[{parameter: [{valueCodeableConcept}]}]``.
    """
    if not isinstance(details, list):
        return []
    codings: list[object] = []
    for detail in details:
        if not isinstance(detail, dict):
            continue
        parameters = detail.get("parameter")
        if isinstance(parameters, list):  # R5
            for parameter in parameters:
                if isinstance(parameter, dict):
                    concept = parameter.get("valueCodeableConcept")
                    if isinstance(concept, dict):
                        inner = concept.get("coding")
                        if isinstance(inner, list):
                            codings.extend(inner)
        else:  # R4: the detail is the CodeableConcept
            inner = detail.get("coding")
            if isinstance(inner, list):
                codings.extend(inner)
    return modifier_codes(ctx, codings, loc, key, "orderDetail", allow_no_system=False)
