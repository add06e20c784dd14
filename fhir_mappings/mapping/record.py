"""One input's resources -> :class:`~fhir_mappings.model.TherapyRecord`.

Keys every resource (the first copy of a key wins), leaves out what is not about the call's
patient, decides the FHIR version, validates in strict mode, then hands each resource type to
its reader in the order they depend on one another.
"""

from __future__ import annotations

from fhir_mappings.mapping.charges import read_service_request
from fhir_mappings.mapping.claims import read_claim
from fhir_mappings.mapping.context import Item, JsonObject, MappingContext
from fhir_mappings.mapping.coverage import read_coverage
from fhir_mappings.mapping.encounter import read_encounter
from fhir_mappings.mapping.parties import read_party_names, read_party_roles
from fhir_mappings.mapping.patients import keep_expected_patient
from fhir_mappings.mapping.plans import read_care_plan, read_contained_plans
from fhir_mappings.mapping.procedures import read_procedure
from fhir_mappings.mapping.reports import read_progress_report
from fhir_mappings.model import FhirVersion, IssueCode, TherapyRecord, TimedService
from fhir_mappings.references import resource_key
from fhir_mappings.sources import Collected
from fhir_mappings.strict import validate_resource
from fhir_mappings.version import decide, shape_version

MAPPED_TYPES = frozenset(
    {
        "Procedure",
        "ServiceRequest",
        "Claim",
        "ExplanationOfBenefit",
        "CarePlan",
        "Encounter",
        "DocumentReference",
        "Coverage",
    }
)
"""The resource types read for therapy data; every other type is out of scope (Patient and the
:data:`~fhir_mappings.mapping.parties.PARTY_TYPES` are read for keys and names only)."""

_R4 = FhirVersion.R4


def map_collected(found: Collected, *, strict: bool = False) -> TherapyRecord:
    """Map resources gathered by :mod:`fhir_mappings.sources`."""
    ctx = MappingContext(found)
    items = _index(ctx)
    if found.context_patient is not None:
        items = keep_expected_patient(ctx, items, found.context_patient)
    version = ctx.version = _decide_version(ctx)
    by_type = ctx.by_type
    if strict:
        items = _validate(ctx, items, version)
        by_type.clear()
        for item in items:
            by_type.setdefault(item[1], []).append(item)
    patients = [key for _, _, key, _ in by_type.get("Patient", ())]
    ctx.out_of_scope += sum(
        len(group) for rtype, group in by_type.items() if rtype not in MAPPED_TYPES
    )
    # Order matters: Encounters give Procedures their fallback date, Claims their lines;
    # Procedures' basedOn decides which ServiceRequests are plans rather than charges.
    for item in by_type.get("Encounter", ()):
        read_encounter(ctx, item)
    for source, _, key, resource in by_type.get("CarePlan", ()):
        read_care_plan(ctx, resource, key, source.location)
    coverages = [read_coverage(ctx, item) for item in by_type.get("Coverage", ())]
    claims = by_type.get("Claim", [])
    for item in claims:
        read_claim(ctx, item)
    claim_keys = {key for _, _, key, _ in claims}
    for item in by_type.get("ExplanationOfBenefit", ()):
        # an EOB adjudicates a Claim: when that Claim is here too, its lines are already read
        if ctx.index.of(item[3].get("claim"), item[2]) in claim_keys:
            ctx.out_of_scope += 1
            continue
        read_claim(ctx, item)
    ctx.roles = read_party_roles(ctx)
    procedures = by_type.get("Procedure", [])
    services: list[TimedService] = []
    for item in procedures:
        service = read_procedure(ctx, item)
        if service is not None:
            services.append(service)
    plan_targets: set[str] = set()
    for refs in ctx.based_on.values():
        plan_targets.update(refs)
    for item in by_type.get("ServiceRequest", ()):
        read_service_request(ctx, item, plan_targets)
    read_contained_plans(ctx, procedures)
    reports = [
        report
        for item in by_type.get("DocumentReference", ())
        if (report := read_progress_report(ctx, item)) is not None
    ]
    return TherapyRecord(
        fhir_version=version,
        services=tuple(services),
        charges=tuple(ctx.charges),
        plans=ctx.plans,
        encounters=ctx.encounters,
        issues=tuple(ctx.issues),
        resources_read=len(items),
        resources_out_of_scope=ctx.out_of_scope,
        next_links=tuple(found.next_links),
        context_patient=found.context_patient,
        patients=tuple(patients),
        other_patient_resources=ctx.other_patient,
        parties=read_party_names(ctx),
        coverages=tuple(coverages),
        progress_reports=tuple(reports),
    )


def _index(ctx: MappingContext) -> list[Item]:
    """Key every resource (the first copy of a key wins), group by type, note its shape."""
    items: list[Item] = []
    seen: dict[str, JsonObject] = {}
    full_urls: list[tuple[str, str]] = []
    by_type = ctx.by_type
    shapes = ctx.shapes
    for source in ctx.found.resources:
        location, resource, full_url, _ = source
        rtype = resource["resourceType"]  # guaranteed by sources
        key = resource_key(rtype, resource.get("id"), full_url, location)
        first = seen.get(key)
        if first is not None:
            # the same resource fetched twice (prefetch + draftOrders, _include) is no news
            if first != resource:
                ctx.issue(
                    location,
                    "two different copies of the same resource; the first copy is used",
                    key,
                    code=IssueCode.DIFFERENT_COPY,
                )
            continue
        seen[key] = resource
        if full_url:
            full_urls.append((full_url, key))
        item = (source, rtype, key, resource)
        items.append(item)
        by_type.setdefault(rtype, []).append(item)
        if rtype in MAPPED_TYPES:
            shown = shape_version(rtype, resource)
            if shown is not None:
                shapes.append((item, shown[0], shown[1]))
    ctx.index.add_full_urls(full_urls)
    return items


def _decide_version(ctx: MappingContext) -> FhirVersion | None:
    """The majority release of the shapes :func:`_index` noted; the minority is reported."""
    shapes = ctx.shapes
    r4 = sum(1 for _, shown_version, _ in shapes if shown_version is _R4)
    r5 = len(shapes) - r4
    version = decide(r4, r5)
    if r4 and r5:
        for (source, _, key, _), shown_version, marker in shapes:
            if shown_version is not version:
                ctx.issue(
                    source.location,
                    f"{shown_version.value} shape in an input read as {version}: one request "
                    f"carries one FHIR version; read anyway",
                    key,
                    marker,
                )
    return version


def _validate(ctx: MappingContext, items: list[Item], version: FhirVersion | None) -> list[Item]:
    """Strict mode: only resources the full ``fhir.resources`` models accept, as they dump them."""
    target = version or FhirVersion.R4
    valid: list[Item] = []
    for source, rtype, key, resource in items:
        dumped, errors = validate_resource(resource, target, normalise=rtype in MAPPED_TYPES)
        if dumped is None:
            for field, message in errors:
                ctx.issue(source.location, message, key, field, IssueCode.UNUSABLE_RESOURCE)
            continue
        valid.append((source, rtype, key, dumped))
    return valid
