"""ServiceRequest -> :class:`~fhir_mappings.model.Charge` (``DRAFT_ORDER``) or plan of care.

A ServiceRequest coded in CPT or HCPCS is a charge; one a Procedure is ``basedOn`` is the plan
of care instead (R-H3). A draft order (``context.draftOrders``) is always a charge, and also a
plan when a Procedure points at it. R4 and R5 shapes of ``code`` (CodeableConcept /
CodeableReference) and ``orderDetail`` land on the same fields.

The modifiers of a ServiceRequest are read once, by :func:`request_modifiers`, for the mapper
and for the draft orders' readers (:mod:`fhir_mappings.orders`, the suggestion write-back).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_mappings.mapping.codings import (
    EXTENSION_WITHOUT_CODING,
    MODIFIER_EXTENSION_FIELD,
    billing_coding,
    coding_modifiers,
    is_modifier_extension,
)
from fhir_mappings.mapping.context import Item, MappingContext
from fhir_mappings.mapping.plans import read_request_as_plan
from fhir_mappings.model import Charge, ChargeSource

_DRAFT_ORDER = ChargeSource.DRAFT_ORDER


def code_concept(request: Mapping[str, Any]) -> object:
    """The CodeableConcept a ServiceRequest's ``code`` holds: R5's CodeableReference is read
    through its ``concept`` (when it has one), R4's ``code`` is the concept itself."""
    code = request.get("code")
    return code.get("concept", code) if isinstance(code, dict) else None


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
    coding = billing_coding(ctx, code_concept(res), loc, key, "code")
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
    modifiers, problems = request_modifiers(res)
    for problem, field in problems:
        ctx.issue(loc, problem, key, field)
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


def order_detail_codings(details: object) -> list[object]:
    """The codings of a ServiceRequest's ``orderDetail`` that may name modifiers: R4/R4B
    entries are CodeableConcepts, R5 entries hold them as ``parameter[].valueCodeableConcept``
    (an entry with a ``parameter`` list is read as R5). Members of another JSON type hold none."""
    codings: list[object] = []
    if not isinstance(details, list):
        return codings
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
    return codings


def request_modifiers(res: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """The distinct billing modifiers of a ServiceRequest, in order, and the problems to report
    as (message, field).

    ``orderDetail`` codings come first (:func:`order_detail_codings`; a coding without a system
    is no modifier there), then the ``valueCoding`` of each billing-modifier extension (where a
    coding without a system is one); each coding is read by
    :func:`~fhir_mappings.mapping.codings.coding_modifiers`. An extension without a
    ``valueCoding`` is reported before the problems of the extensions' codings.
    """
    modifiers: list[str] = []
    problems: list[tuple[str, str]] = []
    for coding in order_detail_codings(res.get("orderDetail")):
        found, problem = coding_modifiers(coding, allow_no_system=False)
        if problem is not None:
            problems.append((problem, "orderDetail"))
        _add_new(modifiers, found)
    extensions = res.get("extension")
    if not isinstance(extensions, list):
        return modifiers, problems
    codings: list[object] = []
    for extension in extensions:
        if is_modifier_extension(extension):
            value = extension.get("valueCoding")
            if isinstance(value, dict):
                codings.append(value)
            else:
                problems.append((EXTENSION_WITHOUT_CODING, "extension"))
    for coding in codings:
        found, problem = coding_modifiers(coding, allow_no_system=True)
        if problem is not None:
            problems.append((problem, MODIFIER_EXTENSION_FIELD))
        _add_new(modifiers, found)
    return modifiers, problems


def _add_new(into: list[str], found: list[str]) -> None:
    """Append each of ``found`` that ``into`` does not hold yet."""
    for value in found:
        if value not in into:
            into.append(value)
