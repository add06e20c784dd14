"""Which patient a resource is about: the element naming the patient per resource type, and the
filter that leaves out what is not shown to be about a CDS Hooks call's patient (issue 14)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fhir_mappings.mapping.context import Item, JsonObject, MappingContext
from fhir_mappings.references import ReferenceIndex, find_contained, reference_type

PATIENT_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "Procedure": "subject",
        "ServiceRequest": "subject",
        "CarePlan": "subject",
        "Encounter": "subject",
        "Claim": "patient",
        "ExplanationOfBenefit": "patient",
        "DocumentReference": "subject",
        "Coverage": "beneficiary",
    }
)
"""The element naming the patient, per resource type the mapper reads for therapy data."""


def patient_reference(resource: JsonObject, index: ReferenceIndex) -> str | None:
    """The key of the patient ``resource`` names in its :data:`PATIENT_FIELDS` element,
    normalised with ``index``; ``None`` when its type has no such element, or the element is
    absent, not a literal reference, or a contained (``#``) reference."""
    rtype = resource.get("resourceType")
    field = PATIENT_FIELDS.get(rtype) if type(rtype) is str else None
    value = resource.get(field) if field is not None else None
    if type(value) is not dict:
        return None
    reference = value.get("reference")
    if type(reference) is not str or not reference.strip() or reference.strip()[0] == "#":
        return None
    return index.normalise(reference, "") or None


def keep_expected_patient(ctx: MappingContext, items: list[Item], expected: str) -> list[Item]:
    """Leave out every resource not shown to be about ``expected`` (issue 14).

    A Patient other than ``expected``, and a Procedure, ServiceRequest, CarePlan, Encounter,
    Claim or ExplanationOfBenefit whose subject/patient names another patient -- or names
    one that cannot be resolved (identifier- or display-only, an unresolved ``urn:``, a
    conditional reference, a non-Patient type) -- is dropped before anything is read from
    it: only the count is kept (:attr:`TherapyRecord.other_patient_resources`), never its
    key or content, and no issue mentions it. A resource with no subject at all, or with a
    Group subject (group delivery, R-H8), stays: it came in the request of ``expected``.
    """
    dropped: set[str] = set()
    kept: list[Item] = []
    for item in items:
        _, rtype, key, res = item
        if rtype == "Patient":
            about_other = key != expected
        else:
            field = PATIENT_FIELDS.get(rtype)
            about_other = field is not None and not _names(ctx, res, field, key, expected)
        if about_other:
            dropped.add(key)
        else:
            kept.append(item)
    if dropped:
        ctx.other_patient = len(dropped)
        for rtype, group in list(ctx.by_type.items()):
            ctx.by_type[rtype] = [item for item in group if item[2] not in dropped]
        ctx.shapes = [shape for shape in ctx.shapes if shape[0][2] not in dropped]
        ctx.issues = [i for i in ctx.issues if i.resource not in dropped]
    return kept


def _names(ctx: MappingContext, res: JsonObject, field: str, key: str, expected: str) -> bool:
    """Does ``res[field]`` name the patient ``expected`` (see keep_expected_patient)?"""
    value = res.get(field)
    if value is None:
        return True
    ref = ctx.index.of(value, key)
    if ref is None:
        return False
    if ref.startswith(key + "#"):
        inner = find_contained(res, ref[len(key) + 1 :])
        return inner is not None and inner.get("resourceType") == "Group"
    return ref == expected or reference_type(ref) == "Group"
