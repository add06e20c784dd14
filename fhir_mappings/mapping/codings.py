"""Codings, CodeableConcepts and extensions as every resource type reads them.

The CPT/HCPCS code of a service or charge, billing modifiers (from codings, the project's
billing-modifier extension, Claim item modifiers, ServiceRequest order details), the discipline
a set of concepts names, and short display texts: read here once for every resource type.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeGuard

from fhir_mappings import codes
from fhir_mappings.mapping.context import JsonObject, MappingContext
from fhir_mappings.model import BILLING_SYSTEMS, EXT_BILLING_MODIFIER, Discipline

_UNKNOWN_DISCIPLINE = Discipline.UNKNOWN
#: A display or name is cut to this many characters (Coverage text ends up in reasons).
MAX_NAME = 80

#: The problems a modifier coding or a billing-modifier extension can have (as reported).
MODIFIER_NOT_BILLING = "modifier coding not in the CPT or HCPCS system; ignored"
MODIFIER_WITHOUT_CODE = "modifier coding without a code; ignored"
EXTENSION_WITHOUT_CODING = "billing-modifier extension without valueCoding"
#: The field a billing-modifier extension's coding problems are reported at.
MODIFIER_EXTENSION_FIELD = "extension(billing-modifier)"


def billing_system(system: object) -> str | None:
    """The canonical CPT/HCPCS system a coding's ``system`` names (any of its spellings);
    ``None`` for another system, none, or a value that is not a string."""
    return BILLING_SYSTEMS.get(system) if isinstance(system, str) else None


def billing_code(code: object) -> str | None:
    """A CPT/HCPCS coding's ``code`` as billed (trimmed, upper case); ``None`` when it is not a
    string or blank."""
    return code.strip().upper() if isinstance(code, str) and code.strip() else None


def coding_modifiers(coding: object, *, allow_no_system: bool) -> tuple[list[str], str | None]:
    """What one coding says about billing modifiers: the modifiers it names, and the problem to
    report when it is a modifier coding that cannot be read (else ``None``).

    A coding in the CPT or HCPCS system is a modifier coding. ``allow_no_system`` (extensions,
    Claim items): so is a coding without a system, and one in another system is a problem;
    otherwise (order details carry other codings beside modifiers) neither is a modifier coding.
    A modifier coding without a code, or with a blank one, is a problem. One code may name
    several modifiers (:func:`~fhir_mappings.codes.split_modifiers`). Anything that is not an
    object names none.
    """
    if not isinstance(coding, dict):
        return [], None
    system = coding.get("system")
    if system is None:
        if not allow_no_system:
            return [], None
    elif billing_system(system) is None:
        return [], MODIFIER_NOT_BILLING if allow_no_system else None
    code = coding.get("code")
    if not isinstance(code, str) or not code.strip():
        return [], MODIFIER_WITHOUT_CODE
    return codes.split_modifiers(code), None


def is_modifier_extension(extension: object) -> TypeGuard[JsonObject]:
    """True for the project's billing-modifier extension (its ``valueCoding`` names modifiers)."""
    return isinstance(extension, dict) and extension.get("url") == EXT_BILLING_MODIFIER


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
        system = billing_system(coding.get("system"))
        if system is None:
            continue
        code = billing_code(coding.get("code"))
        if code is None:
            ctx.issue(location, "CPT/HCPCS coding without a code", key, field)
            continue
        if chosen is None:
            display = coding.get("display")
            if not isinstance(display, str):
                text = concept.get("text")
                display = text if isinstance(text, str) else None
            chosen = (system, code, display)
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
    """The distinct billing modifiers of ``codings``, in order, each coding read by
    :func:`coding_modifiers`; its problems are reported at ``field``."""
    out: list[str] = []
    for coding in codings:
        found, problem = coding_modifiers(coding, allow_no_system=allow_no_system)
        if problem is not None:
            ctx.issue(location, problem, key, field)
        for value in found:
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
    ctx.issue(location, EXTENSION_WITHOUT_CODING, key, "extension")
    return None


def extension_codings_modifiers(
    ctx: MappingContext, codings: list[JsonObject], location: str, key: str
) -> list[str]:
    """The modifiers of billing-modifier extensions' codings (:func:`modifier_codes`)."""
    return modifier_codes(
        ctx, codings, location, key, MODIFIER_EXTENSION_FIELD, allow_no_system=True
    )


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
