"""Decide R4 (incl. R4B) vs R5 for one input from the shapes of its resources.

Validation alone cannot tell the releases apart (many resources are valid in both), so the
decision is made from fields that exist in only one release, on the resource types this product
reads (R-H2, R-H4, R-H5). R4 / R4B shape -> R5 shape:

* Procedure: ``performed[x]``, ``reasonCode``, ``reasonReference`` -> ``occurrence[x]``,
  ``reason``.
* Encounter: ``period``, ``class`` object, ``hospitalization``, ``reasonCode`` ->
  ``actualPeriod``, ``class`` list, ``admission``, ``reason``, ``plannedStartDate``.
* ServiceRequest: ``code.coding``, ``orderDetail[].coding``, ``reasonCode`` ->
  ``code.concept``, ``orderDetail[].parameter``, ``reason``.
* CarePlan: ``activity[].detail`` -> ``activity[].performedActivity`` /
  ``plannedActivityReference``.

One version per input (product contract): the majority wins; resources of the other release are
still read (the fast path understands both shapes) but each is reported as an issue. When no
resource shows a release-specific field the version is ``None`` (the strict mode then validates
against R4B, the release US Core and most EHRs use).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_mappings.model import FhirVersion

R4 = FhirVersion.R4
R5 = FhirVersion.R5

_PROCEDURE = (
    ("performedPeriod", R4),
    ("performedDateTime", R4),
    ("performedString", R4),
    ("performedAge", R4),
    ("performedRange", R4),
    ("occurrencePeriod", R5),
    ("occurrenceDateTime", R5),
    ("occurrenceString", R5),
    ("occurrenceAge", R5),
    ("occurrenceRange", R5),
    ("occurrenceTiming", R5),
    ("reasonCode", R4),
    ("reasonReference", R4),
    ("reason", R5),
)
_ENCOUNTER = (
    ("period", R4),
    ("actualPeriod", R5),
    ("hospitalization", R4),
    ("admission", R5),
    ("plannedStartDate", R5),
    ("plannedEndDate", R5),
    ("reasonCode", R4),
    ("reasonReference", R4),
    ("reason", R5),
)
_SERVICE_REQUEST = (
    ("reasonCode", R4),
    ("reasonReference", R4),
    ("reason", R5),
)


# (field, (release, field)): the answers are built once, not per resource
_PROCEDURE_ANSWERS = tuple((name, (version, name)) for name, version in _PROCEDURE)


def shape_version(
    resource_type: str, resource: Mapping[str, Any]
) -> tuple[FhirVersion, str] | None:
    """The release a resource's shape shows, with the field that shows it; ``None`` if neutral."""
    if resource_type == "Procedure":  # most resources of a visit: no helper call
        for name, answer in _PROCEDURE_ANSWERS:
            if name in resource:
                return answer
        return None
    if resource_type == "Encounter":
        found = _first_marker(resource, _ENCOUNTER)
        if found is not None:
            return found
        cls = resource.get("class")
        if isinstance(cls, list):
            return R5, "class"
        if isinstance(cls, dict):
            return R4, "class"
        return None
    if resource_type == "ServiceRequest":
        code = resource.get("code")
        if isinstance(code, dict):
            if "concept" in code or "reference" in code:
                return R5, "code.concept"
            if "coding" in code or "text" in code:
                return R4, "code.coding"
        details = resource.get("orderDetail")
        if isinstance(details, list):
            for detail in details:
                if isinstance(detail, dict):
                    if "parameter" in detail or "parameterFocus" in detail:
                        return R5, "orderDetail.parameter"
                    if "coding" in detail or "text" in detail:
                        return R4, "orderDetail.coding"
        return _first_marker(resource, _SERVICE_REQUEST)
    if resource_type == "CarePlan":
        activities = resource.get("activity")
        if isinstance(activities, list):
            for activity in activities:
                if isinstance(activity, dict):
                    if "detail" in activity:
                        return R4, "activity.detail"
                    if "performedActivity" in activity or "plannedActivityReference" in activity:
                        return R5, "activity.plannedActivityReference"
        return None
    return None


def _first_marker(
    resource: Mapping[str, Any], markers: tuple[tuple[str, FhirVersion], ...]
) -> tuple[FhirVersion, str] | None:
    for name, version in markers:
        if name in resource:
            return version, name
    return None


def decide(votes_r4: int, votes_r5: int) -> FhirVersion | None:
    """Majority of release-specific shapes; a tie goes to R4 (the release most EHRs send)."""
    if votes_r4 == 0 and votes_r5 == 0:
        return None
    return R5 if votes_r5 > votes_r4 else R4
