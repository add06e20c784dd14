"""FHIR R4 / R4B / R5 resources -> :class:`~fhir_mappings.model.TherapyRecord`, one module per
resource type around a shared per-call :class:`~fhir_mappings.mapping.context.MappingContext`.

* :mod:`.context` -- the per-call state and the value types every resource uses (times,
  periods, subjects, references, units); :mod:`.codings` -- CPT/HCPCS codings, modifiers,
  extensions and disciplines;
* :mod:`.procedures` (Procedure), :mod:`.charges` (ServiceRequest), :mod:`.claims` (Claim,
  ExplanationOfBenefit), :mod:`.plans` (CarePlan, plan ServiceRequests), :mod:`.encounter`,
  :mod:`.reports` (DocumentReference), :mod:`.coverage`, :mod:`.parties` (Practitioner,
  PractitionerRole, Location, Organization), :mod:`.patients` (whose resource it is);
* :mod:`.record` -- the order the readers run in, and the record they make.

The public entry points are in :mod:`fhir_mappings.mapper`.
"""

from fhir_mappings.mapping.parties import PARTY_TYPES, party_name
from fhir_mappings.mapping.patients import PATIENT_FIELDS, patient_reference
from fhir_mappings.mapping.record import MAPPED_TYPES, map_collected

__all__ = [
    "MAPPED_TYPES",
    "PARTY_TYPES",
    "PATIENT_FIELDS",
    "map_collected",
    "party_name",
    "patient_reference",
]
