"""Plans of care -> :class:`~fhir_mappings.model.PlanOfCare`: CarePlans (R-H9), ServiceRequests
a Procedure is ``basedOn`` (R-H3), and plans contained in a Procedure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from fhir_mappings.mapping.codings import discipline, extensions
from fhir_mappings.mapping.context import Item, JsonObject, MappingContext
from fhir_mappings.model import EXT_PLAN_CERTIFICATION, PlanOfCare
from fhir_mappings.references import find_contained


def read_care_plan(ctx: MappingContext, res: JsonObject, key: str, loc: str) -> None:
    """One CarePlan into ``ctx.plans``: status, period, certification dates, discipline."""
    status = res.get("status")
    start = end = None
    if "period" in res:
        start, end = ctx.period(res["period"], loc, key, "period")
    certifications: list[date] = []
    for ext in extensions(res):
        if ext.get("url") == EXT_PLAN_CERTIFICATION:
            raw = ext.get("valueDateTime", ext.get("valueDate"))
            point = ctx.point(raw, loc, key, "extension(plan-certification)")
            if point is not None and point[1] is not None:
                certifications.append(point[1])
            elif point is not None or raw is None:
                ctx.issue(
                    loc,
                    "plan-certification extension without a full date; not used",
                    key,
                    "extension(plan-certification)",
                )
    category = res.get("category")
    patient, _ = ctx.subject(res, "subject", loc, key)
    ctx.plans[key] = PlanOfCare(
        ref=key,
        kind="CarePlan",
        status=status if isinstance(status, str) else None,
        start=start[1] if start is not None else None,
        end=end[1] if end is not None else None,
        certifications=tuple(certifications),
        discipline=discipline(category if isinstance(category, list) else ()),
        patient=patient,
    )


def read_request_as_plan(ctx: MappingContext, res: JsonObject, key: str, loc: str) -> None:
    """A ServiceRequest used as the treatment plan into ``ctx.plans`` (R-H3)."""
    status = res.get("status")
    start = end = None
    if "occurrencePeriod" in res:
        start, end = ctx.period(res["occurrencePeriod"], loc, key, "occurrencePeriod")
    category = res.get("category")
    concepts: list[object] = list(category) if isinstance(category, list) else []
    code = res.get("code")
    if isinstance(code, dict):
        concepts.append(code.get("concept", code))  # R5 CodeableReference, R4 CodeableConcept
    patient, _ = ctx.subject(res, "subject", loc, key)
    ctx.plans[key] = PlanOfCare(
        ref=key,
        kind="ServiceRequest",
        status=status if isinstance(status, str) else None,
        start=start[1] if start is not None else None,
        end=end[1] if end is not None else None,
        discipline=discipline(concepts),
        patient=patient,
    )


def read_contained_plans(ctx: MappingContext, procedures: Sequence[Item]) -> None:
    """Plans contained in a Procedure (``basedOn: #plan``) get ``<Procedure key>#plan``."""
    for source, _, key, resource in procedures:
        if "contained" not in resource:
            continue
        for target in ctx.based_on.get(key, ()):
            if not target.startswith(key + "#") or target in ctx.plans:
                continue
            inner = find_contained(resource, target[len(key) + 1 :])
            if inner is None:
                continue
            inner_type = inner.get("resourceType")
            if inner_type == "CarePlan":
                read_care_plan(ctx, inner, target, source.location)
            elif inner_type == "ServiceRequest":
                read_request_as_plan(ctx, inner, target, source.location)
