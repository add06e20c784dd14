"""Draft orders: reading the ServiceRequests of ``context.draftOrders`` (R4, R4B and R5).

The charges being signed are draft ServiceRequests. What the services and the suggestion
write-back (:mod:`fhir_mappings.writeback`) need of them is read here, once:

- the drafts of a ``draftOrders`` Bundle, by ``ServiceRequest/{id}``
  (:func:`draft_service_requests`);
- the billing code: the codings of ``code`` (R4/R4B a CodeableConcept, R5 a CodeableReference
  whose ``concept`` holds it) in the CPT or HCPCS system, read as the mapper reads a charge's
  code (:func:`billing_codes`);
- the dates the order was written for (``occurrenceDateTime``, ``authoredOn``: :func:`order_dates`);
- the modifiers (:func:`order_modifiers`), read by the mapper's own reading
  (:func:`fhir_mappings.mapping.charges.request_modifiers`): R4/R4B ``orderDetail[]``
  CodeableConcepts, R5 ``orderDetail[].parameter[].valueCodeableConcept``, and the project
  ``billing-modifier`` extension, whose coding may have no system. A coding's code may name
  several modifiers, split on commas and blanks in any case
  (:func:`fhir_mappings.codes.split_modifiers`).

Everything is lenient: members of the wrong JSON type are passed over, never an error (the
mapper reports them when it maps the same resources).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fhir_mappings.mapping.charges import code_concept, request_modifiers
from fhir_mappings.mapping.codings import (
    billing_code,
    billing_system,
    coding_modifiers,
    is_modifier_extension,
)

JsonObject = dict[str, Any]


def draft_service_requests(draft_orders: object) -> dict[str, JsonObject]:
    """The draft ServiceRequests of ``context.draftOrders``, by ``ServiceRequest/{id}``.

    Lenient (checklist A-5): a Bundle with or without ``type``; entries that are not objects or
    not ServiceRequests are passed over.
    """
    found: dict[str, JsonObject] = {}
    if not isinstance(draft_orders, dict):
        return found
    for entry in draft_orders.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "ServiceRequest":
            ident = resource.get("id")
            if isinstance(ident, str) and ident:
                found[f"ServiceRequest/{ident}"] = resource
    return found


def codings_of(concept: object) -> list[JsonObject]:
    """The codings of a CodeableConcept (those that are objects)."""
    if isinstance(concept, dict):
        codings = concept.get("coding")
        if isinstance(codings, list):
            return [c for c in codings if isinstance(c, dict)]
    return []


def billing_codes(order: Mapping[str, Any]) -> Iterator[str]:
    """The codes of the order's ``code`` codings in the CPT or HCPCS system (any of their
    spellings), in order, read as the mapper reads a charge's code (the same concept, trimmed
    and upper case), so that whether a request bills therapy and what the mapper finds agree."""
    concept = code_concept(order)
    for coding in codings_of(concept):
        code = billing_code(coding.get("code"))
        if code is not None and billing_system(coding.get("system")) is not None:
            yield code


def order_dates(order: Mapping[str, Any]) -> Iterator[str]:
    """The calendar dates (``YYYY-MM-DD``) the order names: ``occurrenceDateTime``, then
    ``authoredOn``, each when it is a string long enough to hold a date."""
    for value in (order.get("occurrenceDateTime"), order.get("authoredOn")):
        if isinstance(value, str) and len(value) >= 10:
            yield value[:10]


def is_billing_system(system: object, *, allow_none: bool) -> bool:
    """True for the CPT and HCPCS systems (``allow_none``: also for a coding without one, as
    the ``billing-modifier`` extension is read)."""
    if system is None:
        return allow_none
    return billing_system(system) is not None


def parameter_groups(order: Mapping[str, Any]) -> list[JsonObject]:
    """The R5 ``orderDetail`` entries (those holding a ``parameter`` list)."""
    details = order.get("orderDetail")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and isinstance(d.get("parameter"), list)]


def is_modifier_parameter(parameter: object) -> bool:
    """True when an R5 ``orderDetail.parameter`` holds a modifier the mapper reads."""
    if not isinstance(parameter, dict):
        return False
    return any(
        coding_modifiers(c, allow_no_system=False)[0]
        for c in codings_of(parameter.get("valueCodeableConcept"))
    )


def order_modifiers(order: Mapping[str, Any]) -> list[str]:
    """The distinct modifiers the mapper reads from the order, in its order: ``orderDetail``
    first, then the ``billing-modifier`` extension (the problems it reports are left to it)."""
    return request_modifiers(order)[0]


__all__ = [
    "billing_codes",
    "codings_of",
    "draft_service_requests",
    "is_billing_system",
    "is_modifier_extension",
    "is_modifier_parameter",
    "order_dates",
    "order_modifiers",
    "parameter_groups",
]
