"""Strict mode: validate every resource with the full ``fhir.resources`` models.

R5 resources are checked with the default ``fhir.resources`` package, R4/R4B ones with
``fhir.resources.R4B`` (fhir.resources 8 has no separate R4 package; every R4 shape this product
reads is unchanged in R4B). A resource that fails is reported as issues (entry + field + message)
and not mapped. A resource that passes is mapped from the model's own JSON dump, through the
same extraction as the fast path, so both paths apply one set of rules; the agreement test runs
both over every fixture and compares the domain records.

Messages never contain input values: only pydantic's error location and message text
(``include_input=False``), which name types and patterns, not data.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from fhir_mappings.model import FhirVersion

_MAX_ERRORS_PER_RESOURCE = 5


@cache
def _model_class(version: FhirVersion, resource_type: str) -> Any:
    if version is FhirVersion.R5:
        from fhir.resources import get_fhir_model_class
    else:
        from fhir.resources.R4B import get_fhir_model_class
    return get_fhir_model_class(resource_type)


def validate_resource(
    resource: Mapping[str, Any], version: FhirVersion, *, normalise: bool = True
) -> tuple[dict[str, Any] | None, list[tuple[str | None, str]]]:
    """Validate one resource; return (JSON, []) or (None, [(field, message), ...]).

    With ``normalise`` the JSON is the model's own dump (what the full models understood);
    without it, the resource as given (for resource types nothing is mapped from).
    """
    from pydantic import ValidationError

    resource_type = resource.get("resourceType")
    try:
        model_class = _model_class(version, str(resource_type))
    except (KeyError, ValueError, LookupError):
        return None, [
            (
                "resourceType",
                f"{resource_type} is not a FHIR {version.value} resource type",
            )
        ]
    try:
        model = model_class.model_validate(dict(resource))
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False, include_context=False)
        found: list[tuple[str | None, str]] = []
        for error in errors[:_MAX_ERRORS_PER_RESOURCE]:
            location = ".".join(str(part) for part in error.get("loc", ())) or None
            found.append((location, f"{version.value} validation: {error.get('msg', 'invalid')}"))
        if len(errors) > _MAX_ERRORS_PER_RESOURCE:
            found.append((None, f"... and {len(errors) - _MAX_ERRORS_PER_RESOURCE} more errors"))
        return None, found
    except (TypeError, ValueError) as exc:  # fhir_core raises these for some primitive shapes
        return None, [(None, f"{version.value} validation: {type(exc).__name__}")]
    if not normalise:
        return dict(resource), []
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped, []
