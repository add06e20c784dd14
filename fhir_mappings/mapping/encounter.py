"""Encounter -> :class:`~fhir_mappings.model.EncounterInfo` (R-H5)."""

from __future__ import annotations

from fhir_mappings.mapping.codings import discipline
from fhir_mappings.mapping.context import Item, JsonObject, MappingContext
from fhir_mappings.model import Discipline, EncounterInfo

# Encounter.status is version-free in the domain model: R4 codes are read as their R5
# equivalents (R4 "finished" == R5 "completed", per the R4 -> R5 Encounter status map).
_R4_ENCOUNTER_STATUS = {
    "finished": "completed",
    "onleave": "on-hold",
    "arrived": "in-progress",
    "triaged": "in-progress",
}


def read_encounter(ctx: MappingContext, item: Item) -> None:
    """One Encounter into ``ctx.encounters``: status (R5 codes), period, patient, locations,
    service provider and discipline."""
    source, _, key, res = item
    loc = source.location
    status = res.get("status")
    start = end = None
    for field in ("actualPeriod", "period"):  # R5 actualPeriod, R4 period
        if field in res:
            start, end = ctx.period(res[field], loc, key, field, visit=True)
            break
    _, start_utc, end_utc, day, _ = ctx.span(start, end, loc, key, "period")
    patient, _ = ctx.subject(res, "subject", loc, key)
    if type(status) is str:
        status = _R4_ENCOUNTER_STATUS.get(status, status)
    locations: list[str] = []
    raw_locations = res.get("location")
    if type(raw_locations) is list:
        for entry in raw_locations:
            if type(entry) is dict:
                found = ctx.index.of(entry.get("location"), key)
                if found is not None and found not in locations:
                    locations.append(found)
    provider = res.get("serviceProvider")
    ctx.encounters[key] = EncounterInfo(
        ref=key,
        status=status if isinstance(status, str) else None,
        start=start_utc,
        end=end_utc,
        service_date=day,
        patient=patient,
        locations=tuple(locations),
        service_provider=ctx.index.of(provider, key) if provider is not None else None,
        discipline=_encounter_discipline(res),
    )


def _encounter_discipline(res: JsonObject) -> Discipline:
    """The discipline Encounter.serviceType (R4 CodeableConcept, R5 CodeableReference list)
    or Encounter.type names (R-E6 treatment days); UNKNOWN when neither names one."""
    concepts: list[object] = []
    service_type = res.get("serviceType")
    for item in service_type if type(service_type) is list else [service_type]:
        if type(item) is dict:
            concept = item.get("concept")
            concepts.append(concept if type(concept) is dict else item)
    kinds = res.get("type")
    if type(kinds) is list:
        concepts.extend(kinds)
    return discipline(concepts) if concepts else Discipline.UNKNOWN
