"""Codings, CodeableConcepts and extensions as every resource type reads them.

The CPT/HCPCS code of a service or charge, billing modifiers (from codings, the project's
billing-modifier extension, Claim item modifiers, ServiceRequest order details), the discipline
a set of concepts names, and short display texts: read here once for every resource type.
"""

from __future__ import annotations

from collections.abc import Iterable

from fhir_mappings import codes
from fhir_mappings.mapping.context import JsonObject, MappingContext
from fhir_mappings.model import BILLING_SYSTEMS, EXT_BILLING_MODIFIER, Discipline

_UNKNOWN_DISCIPLINE = Discipline.UNKNOWN
#: A display or name is cut to this many characters (Coverage text ends up in reasons).
MAX_NAME = 80


def short_name(value: object) -> str:
    """A display or name as text: stripped, cut to :data:`MAX_NAME` characters."""
    return value.strip()[:MAX_NAME] if type(value) is str else ""


def billing_coding(
    ctx: MappingContext, concept: object, location: str, key: str, field: str
) -> tuple[str, str, str | None] | None:
    """The CPT/HCPCS coding of a CodeableConcept: (canonical system, code, display).

    The first CPT/HCPCS coding wins; a second, different code is reported, as is a CPT/HCPCS
    coding without a code. The display falls back to the concept's ``text``.
    """
    if not isinstance(concept, dict):
        return None
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return None
    chosen: tuple[str, str, str | None] | None = None
    for coding in codings:
        if not isinstance(coding, dict):
            continue
        system = coding.get("system")
        if not isinstance(system, str) or system not in BILLING_SYSTEMS:
            continue
        code = coding.get("code")
        if not isinstance(code, str) or not code.strip():
            ctx.issue(location, "CPT/HCPCS coding without a code", key, field)
            continue
        code = code.strip().upper()
        if chosen is None:
            display = coding.get("display")
            if not isinstance(display, str):
                text = concept.get("text")
                display = text if isinstance(text, str) else None
            chosen = (BILLING_SYSTEMS[system], code, display)
        elif chosen[1] != code:
            ctx.issue(
                location,
                f"more than one CPT/HCPCS code ({chosen[1]}, {code}); the first is used, "
                "record one service per resource",
                key,
                field,
            )
    return chosen


def modifier_codes(
    ctx: MappingContext,
    codings: Iterable[object],
    location: str,
    key: str,
    field: str,
    *,
    allow_no_system: bool,
) -> list[str]:
    """The distinct billing modifiers of CPT/HCPCS ``codings``, in order.

    ``allow_no_system``: a coding without a system is read as a modifier too, and one in another
    system is reported (extensions, Claim items); otherwise both are skipped silently (order
    details carry other codings beside modifiers). One code may name several modifiers
    (:func:`~fhir_mappings.codes.split_modifiers`).
    """
    out: list[str] = []
    for coding in codings:
        if not isinstance(coding, dict):
            continue
        system = coding.get("system")
        code = coding.get("code")
        if system is None and not allow_no_system:
            continue
        if system is not None and (not isinstance(system, str) or system not in BILLING_SYSTEMS):
            if allow_no_system:
                ctx.issue(
                    location,
                    "modifier coding not in the CPT or HCPCS system; ignored",
                    key,
                    field,
                )
            continue
        if not isinstance(code, str) or not code.strip():
            ctx.issue(location, "modifier coding without a code; ignored", key, field)
            continue
        for value in codes.split_modifiers(code):
            if value not in out:
                out.append(value)
    return out


def extensions(resource: JsonObject) -> list[JsonObject]:
    """The extension objects of ``resource`` (anything else in the list is skipped)."""
    found = resource.get("extension")
    if not isinstance(found, list):
        return []
    return [e for e in found if isinstance(e, dict)]


def modifier_extension_coding(
    ctx: MappingContext, extension: JsonObject, location: str, key: str
) -> JsonObject | None:
    """The ``valueCoding`` of one billing-modifier extension; reported when it has none."""
    value = extension.get("valueCoding")
    if isinstance(value, dict):
        return value
    ctx.issue(location, "billing-modifier extension without valueCoding", key, "extension")
    return None


def extension_codings_modifiers(
    ctx: MappingContext, codings: list[JsonObject], location: str, key: str
) -> list[str]:
    """The modifiers of billing-modifier extensions' codings (:func:`modifier_codes`)."""
    return modifier_codes(
        ctx, codings, location, key, "extension(billing-modifier)", allow_no_system=True
    )


def extension_modifiers(
    ctx: MappingContext, found: list[JsonObject], location: str, key: str
) -> list[str]:
    """The modifiers of the billing-modifier extensions among ``found``, in order."""
    codings: list[JsonObject] = []
    for extension in found:
        if extension.get("url") == EXT_BILLING_MODIFIER:
            coding = modifier_extension_coding(ctx, extension, location, key)
            if coding is not None:
                codings.append(coding)
    return extension_codings_modifiers(ctx, codings, location, key)


def discipline(concepts: Iterable[object]) -> Discipline:
    """The first discipline the concepts name: a coding's system and code, else its display,
    else the concept's text (I-2.5); UNKNOWN when none names one."""
    for concept in concepts:
        if not isinstance(concept, dict):
            continue
        codings = concept.get("coding")
        if isinstance(codings, list):
            for coding in codings:
                if isinstance(coding, dict):
                    code = coding.get("code")
                    system = coding.get("system")
                    found = codes.discipline_of_concept(
                        system if isinstance(system, str) else None,
                        code if isinstance(code, str) else None,
                        None,
                    )
                    if found is not _UNKNOWN_DISCIPLINE:
                        return found
                    display = coding.get("display")
                    if isinstance(display, str):
                        found = codes.discipline_of_concept(None, None, display)
                        if found is not _UNKNOWN_DISCIPLINE:
                            return found
        text = concept.get("text")
        if isinstance(text, str):
            found = codes.discipline_of_concept(None, None, text)
            if found is not _UNKNOWN_DISCIPLINE:
                return found
    return _UNKNOWN_DISCIPLINE
