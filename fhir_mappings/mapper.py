"""FHIR R4 / R4B / R5 JSON -> :class:`~fhir_mappings.model.TherapyRecord`: the entry points.

Hand-written, typed extraction from the JSON objects: it checks what the rules depend on (types,
codes, times, references) and nothing else, so a whole visit maps in a fraction of a millisecond.
Strict mode (``strict=True``) first validates every resource with the full ``fhir.resources``
models (:mod:`fhir_mappings.strict`).

What becomes what:

* ``Procedure`` coded in CPT or HCPCS -> :class:`TimedService` (R-H1, R-H2, I-2.2, I-2.3, I-2.4).
* ``ServiceRequest`` coded in CPT or HCPCS -> :class:`Charge` (``DRAFT_ORDER``); a ServiceRequest
  that a Procedure is ``basedOn`` is the plan of care -> :class:`PlanOfCare` (R-H3). A draft order
  (``context.draftOrders``) is always a charge, and also a plan when a Procedure points at it.
* ``Claim.item`` coded in CPT or HCPCS -> :class:`Charge` (``CLAIM``), linked to Procedures
  through ``Claim.procedure[].procedureReference`` + ``item.procedureSequence`` (R-H7).
  ``ExplanationOfBenefit.item`` is read the same way (I-1 "Claim/EOB items"), unless the Claim
  it adjudicates (``ExplanationOfBenefit.claim``) is in the input too: then only the Claim counts.
* ``CarePlan`` -> :class:`PlanOfCare` (R-H9); ``Encounter`` -> :class:`EncounterInfo` (R-H5).
* ``Coverage`` -> :class:`CoverageInfo` (issue 15): status, beneficiary, period, order, type
  codings and payer parties (R4 ``payor``, R5 ``insurer`` / ``paymentBy.party``), from which the
  plugin chooses each visit's payer rule.
* Everything else (and Procedures / ServiceRequests / Claims coded only in other systems) is
  counted in ``resources_out_of_scope``.

Per-resource problems become :class:`MappingIssue` values (entry, field, why). A resource whose
structure makes it unusable (no code object, no status) is skipped; a bad *value* (an unreadable
time, a fractional unit count) is reported and that value alone is dropped, so the rules still
see the service and can flag it (W-MISSING-START, ...). Nothing here raises on bad input.

The readers live in :mod:`fhir_mappings.mapping`, one module per resource type.

Version-free values: ``Encounter.status`` is given in R5 codes (R4 ``finished`` -> ``completed``);
R4 ``performed[x]`` and R5 ``occurrence[x]``, R4 ``reasonCode``/``reasonReference`` and R5
``reason``, R4 and R5 ``ServiceRequest.code``/``orderDetail`` shapes all land on the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fhir_mappings.mapping import (
    MAPPED_TYPES,
    PARTY_TYPES,
    PATIENT_FIELDS,
    map_collected,
    party_name,
    patient_reference,
)
from fhir_mappings.model import TherapyRecord
from fhir_mappings.sources import (
    Collected,
    collect_bundle,
    collect_cds_hooks,
    collect_cds_request,
    collect_resources,
)

__all__ = [
    "MAPPED_TYPES",
    "PARTY_TYPES",
    "PATIENT_FIELDS",
    "map_bundle",
    "map_cds_hooks",
    "map_cds_request",
    "map_collected",
    "map_resources",
    "party_name",
    "patient_reference",
]

JsonObject = Mapping[str, Any]


# ------------------------------------------------------------------------- public entry points


def map_bundle(bundle: JsonObject, *, strict: bool = False) -> TherapyRecord:
    """Map a parsed Bundle (any type, or none) to a :class:`TherapyRecord`."""
    found = Collected()
    collect_bundle(bundle, found)
    return map_collected(found, strict=strict)


def map_resources(
    items: Iterable[tuple[str, JsonObject]], *, strict: bool = False
) -> TherapyRecord:
    """Map already-parsed resources, each given with its location (``"line 3"``, ``"entry[0]"``).

    A Bundle among them contributes its entries.
    """
    found = Collected()
    collect_resources(items, found)
    return map_collected(found, strict=strict)


def map_cds_hooks(
    draft_orders: object,
    prefetch: Mapping[str, object] | None,
    *,
    patient_id: str | None = None,
    strict: bool = False,
) -> TherapyRecord:
    """Map what a CDS Hooks call supplied: ``context.draftOrders`` and the resolved prefetch.

    ``draft_orders`` is the ``context.draftOrders`` value (a Bundle, normally without ``type``);
    its ServiceRequests are the charges being signed. ``prefetch`` maps each key to its resolved
    value (a Bundle, a single resource, an OperationOutcome, or ``None`` for "no data");
    ``patient_id`` is ``context.patientId`` and becomes ``TherapyRecord.context_patient``; the
    resources not shown to be about that patient are left out and only counted
    (``TherapyRecord.other_patient_resources``; see
    :func:`~fhir_mappings.mapping.patients.keep_expected_patient`).
    """
    found = Collected()
    collect_cds_hooks(draft_orders, prefetch, found, patient_id=patient_id)
    return map_collected(found, strict=strict)


def map_cds_request(body: JsonObject, *, strict: bool = False) -> TherapyRecord:
    """Map a whole CDS Hooks request body (``context.draftOrders`` + every ``prefetch`` value)."""
    found = Collected()
    collect_cds_request(body, found)
    return map_collected(found, strict=strict)
