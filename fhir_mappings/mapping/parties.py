"""Practitioner, PractitionerRole, Location and Organization: read for their names (the audit's
by-practitioner and by-site tables, issue 18) and for whether a performer is an assistant (R-G3).
Names of people who provide care only, never of patients."""

from __future__ import annotations

from collections.abc import Mapping

from fhir_mappings.mapping.context import JsonObject, MappingContext
from fhir_mappings.model import PerformerRole
from fhir_mappings.performers import party_roles
from fhir_mappings.references import ReferenceIndex

PARTY_TYPES = frozenset({"Practitioner", "PractitionerRole", "Location", "Organization"})
"""Resource types read for their names only (:attr:`TherapyRecord.parties`, issue 18)."""

_MAX_NAME = 120


def party_name(
    res: JsonObject,
    known: Mapping[str, str] | None = None,
    index: ReferenceIndex | None = None,
    key: str = "",
) -> str:
    """The display name of a Practitioner (HumanName), PractitionerRole (its practitioner's
    name from ``known``, else the reference's display, else its code's text), Location or
    Organization (``name``); "" when none can be read. At most 120 characters."""
    return _party_name(res, known or {}, index, key)[:_MAX_NAME]


def _party_name(
    res: JsonObject, known: Mapping[str, str], index: ReferenceIndex | None, key: str
) -> str:
    rtype = res.get("resourceType")
    if rtype == "Practitioner":
        return _human_name(res.get("name"))
    if rtype == "PractitionerRole":
        practitioner = res.get("practitioner")
        target = index.of(practitioner, key) if index and practitioner is not None else None
        if target is not None and known.get(target):
            return known[target]
        if type(practitioner) is dict and type(practitioner.get("display")) is str:
            return str(practitioner["display"]).strip()
        for concept in res.get("code") or ():
            if type(concept) is dict and type(concept.get("text")) is str:
                return str(concept["text"]).strip()
        return ""
    name = res.get("name")
    return name.strip() if type(name) is str else ""


def _human_name(value: object) -> str:
    """The first readable HumanName: ``text``, else given names and family."""
    if type(value) is not list:
        return ""
    for item in value:
        if type(item) is not dict:
            continue
        if type(item.get("text")) is str and item["text"].strip():
            return str(item["text"]).strip()
        given = item.get("given")
        parts = [g for g in given if type(g) is str] if type(given) is list else []
        if type(item.get("family")) is str:
            parts.append(item["family"])
        if parts:
            return " ".join(p.strip() for p in parts if p.strip())
    return ""


def read_party_roles(ctx: MappingContext) -> dict[str, PerformerRole]:
    """Assistant or not, for each Practitioner and PractitionerRole present (R-G3)."""
    index = ctx.index
    return party_roles(
        ((key, res) for _, _, key, res in ctx.by_type.get("Practitioner", ())),
        (
            (key, res, index.of(res.get("practitioner"), key))
            for _, _, key, res in ctx.by_type.get("PractitionerRole", ())
        ),
    )


def read_party_names(ctx: MappingContext) -> dict[str, str]:
    """Display names of the care providers and places present (issue 18): Practitioner
    and PractitionerRole (its practitioner's name, else its code), Location and
    Organization (``name``); "" when a resource names nothing readable."""
    names: dict[str, str] = {}
    for rtype in ("Practitioner", "Location", "Organization", "PractitionerRole"):  # roles last
        for _, _, key, res in ctx.by_type.get(rtype, ()):
            names[key] = party_name(res, names, ctx.index, key)
    return names
