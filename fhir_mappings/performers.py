"""Who furnished a service: therapist assistants (PTA/OTA) for the CQ/CO modifiers (R-G3).

Medicare requires modifier CQ on outpatient physical therapy "furnished in whole or in part by a
physical therapist assistant" and CO on occupational therapy furnished in whole or in part by an
occupational therapy assistant (dates of service on and after 1 January 2020; see
``docs/sources.md`` S40a). The checker can only apply that when the record says who the
performer is, so this module reads, from the resources present in the input:

- ``Practitioner.qualification[].code.coding[]`` and
- ``PractitionerRole.code[].coding[]`` (and, for a PractitionerRole, the qualifications of the
  Practitioner it points to, when that Practitioner is present too),

and recognises exactly the codes of :data:`ASSISTANT_CODES`: the NUCC Health Care Provider
Taxonomy classifications for the two assistants and their specialisations (S40e, read
2026-12-02). Nothing else -- no free text, no display, no other code system -- makes a
performer an assistant: a SNOMED CT or local code for the same occupation is not recognised,
because none was confirmed from a public source.

A Procedure's role (:class:`~fhir_mappings.model.PerformerRole`) follows from its performers:

- a performer that is a Practitioner or PractitionerRole present in the input without an
  assistant code is a therapist, and a service a therapist furnishes together with an assistant
  counts as the therapist's (CMS: minutes the assistant furnishes with the therapist are the
  therapist's; S40b/S40c) -> ``OTHER``;
- all performers assistants of one kind -> ``PTA`` / ``OTA``;
- no performer, a performer whose resource is not in the input (or is an Organization, a
  Device ...), or assistants of both kinds -> ``UNKNOWN``: the rules then say nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from fhir_mappings.model import PerformerRole

NUCC_TAXONOMY = "http://nucc.org/provider-taxonomy"
#: The NUCC taxonomy's OID (HL7 Terminology), the form some EHRs send.
NUCC_TAXONOMY_OID = "urn:oid:2.16.840.1.113883.6.101"

_NUCC_SYSTEMS = frozenset({NUCC_TAXONOMY, NUCC_TAXONOMY_OID})

#: NUCC Health Care Provider Taxonomy codes of the two assistants (S40e, read 2026-12-02):
#: 225200000X Physical Therapy Assistant; 224Z00000X Occupational Therapy Assistant and its
#: specialisations 224ZE0001X Environmental Modification, 224ZF0002X Feeding, Eating &
#: Swallowing, 224ZL0004X Low Vision, 224ZR0403X Driving and Community Mobility.
ASSISTANT_CODES: Mapping[str, PerformerRole] = MappingProxyType(
    {
        "225200000X": PerformerRole.PTA,
        "224Z00000X": PerformerRole.OTA,
        "224ZE0001X": PerformerRole.OTA,
        "224ZF0002X": PerformerRole.OTA,
        "224ZL0004X": PerformerRole.OTA,
        "224ZR0403X": PerformerRole.OTA,
    }
)

_ASSISTANTS = frozenset({PerformerRole.PTA, PerformerRole.OTA})


def _concepts(value: object) -> Iterable[object]:
    return value if type(value) is list else ()


def _assistant_in(concepts: Iterable[object]) -> PerformerRole | None:
    """The assistant a list of CodeableConcepts names (by :data:`ASSISTANT_CODES`), if any."""
    for concept in concepts:
        codings = concept.get("coding") if type(concept) is dict else None
        for coding in codings if type(codings) is list else ():
            if type(coding) is not dict or coding.get("system") not in _NUCC_SYSTEMS:
                continue
            code = coding.get("code")
            role = ASSISTANT_CODES.get(code.strip().upper()) if type(code) is str else None
            if role is not None:
                return role
    return None


def practitioner_role(resource: Mapping[str, Any]) -> PerformerRole:
    """A Practitioner's role from its qualifications: an assistant, else ``OTHER``."""
    concepts = [q.get("code") for q in _concepts(resource.get("qualification")) if type(q) is dict]
    return _assistant_in(concepts) or PerformerRole.OTHER


def party_roles(
    practitioners: Iterable[tuple[str, Mapping[str, Any]]],
    practitioner_roles: Iterable[tuple[str, Mapping[str, Any], str | None]],
) -> dict[str, PerformerRole]:
    """The role of every Practitioner and PractitionerRole present, by key.

    ``practitioners``: (key, resource); ``practitioner_roles``: (key, resource, the key of the
    Practitioner it references or ``None``). A PractitionerRole is an assistant when its own
    ``code`` says so, else when its Practitioner (present in the input) is one.
    """
    roles: dict[str, PerformerRole] = {}
    for key, resource in practitioners:
        roles[key] = practitioner_role(resource)
    for key, resource, practitioner in practitioner_roles:
        own = _assistant_in(_concepts(resource.get("code")))
        if own is None and practitioner is not None:
            own = roles.get(practitioner)
        roles[key] = own if own in _ASSISTANTS else PerformerRole.OTHER
    return roles


def service_role(performers: Sequence[str], roles: Mapping[str, PerformerRole]) -> PerformerRole:
    """The role of a service performed by ``performers`` (keys), per the module docstring."""
    if not performers:
        return PerformerRole.UNKNOWN
    found = {roles.get(actor, PerformerRole.UNKNOWN) for actor in performers}
    if PerformerRole.OTHER in found:
        return PerformerRole.OTHER
    if len(found) == 1:
        return found.pop()
    return PerformerRole.UNKNOWN


__all__ = [
    "ASSISTANT_CODES",
    "NUCC_TAXONOMY",
    "NUCC_TAXONOMY_OID",
    "party_roles",
    "practitioner_role",
    "service_role",
]
