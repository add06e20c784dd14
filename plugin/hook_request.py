"""Build a CDS Hooks 2.0 request from a FHIR Bundle of one visit (for ``invoke`` and the demos).

A scenario bundle (``sample_bundles/``) holds everything an EHR knows when the therapist signs the
visit's charges. This module splits it the way an EHR would send it: the draft charges go in the
context, the documentation goes in prefetch under the keys the service declares (product
contract, "CDS Hooks surface").

Mapping (bundle -> request):

============================  ==============================================================
request member                from the bundle
============================  ==============================================================
``hookInstance``              a fresh uuid4
``hook``                      ``order-sign`` (default) or ``encounter-discharge``
``fhirServer``                only when the caller passes one (never invented)
``context.userId``            ``Practitioner/{id}`` of the first Procedure performer (or a
                              draft charge's requester, or the first Practitioner in the
                              bundle); ``Practitioner/example`` when there is none
``context.patientId``         the bare id of the Patient (the first Patient entry, else the
                              subject of the first Procedure)
``context.encounterId``       the bare id of the visit's Encounter: the one the draft charges
                              reference, else the latest-starting Encounter. Absent when the
                              bundle has no Encounter (``encounter-discharge`` requires one)
``context.draftOrders``       order-sign only: a ``collection`` Bundle of the ServiceRequests
                              with ``status: draft`` (the charges being signed)
``prefetch.patient``          the Patient resource (``null`` when the bundle has none)
``prefetch.encounter``        the context Encounter (``null`` when there is none)
``prefetch.procedures``       ``searchset`` Bundle: every Procedure as ``search.mode: match``;
                              then, as ``search.mode: include``, the other resources the rules
                              read: non-draft ServiceRequests (a plan of care), Claims,
                              Conditions, the other Encounters of the day, and the
                              Practitioners / PractitionerRoles that are Procedure performers
                              (what ``_include=Procedure:performer`` returns; their
                              qualifications and role codes name therapist assistants, R-G3)
``prefetch.carePlans``        ``searchset`` Bundle of the CarePlans (``match``)
``prefetch.therapyHistory``   ``searchset`` Bundle of every Encounter (the visit history)
``prefetch.progressReports``  ``searchset`` Bundle of the DocumentReferences typed with a
                              LOINC progress-note code (what the declared template returns)
``prefetch.coverage``         ``searchset`` Bundle of the active Coverages (``match``), as the
                              ``Coverage?patient=..&status=active`` search returns them
============================  ==============================================================

Entries keep their ``fullUrl`` when the bundle has one. Resources of other types (Organization,
Practitioners no Procedure names as performer, ...) are not sent. For ``encounter-discharge``
draft ServiceRequests are not part of the hook's context, so they are left out altogether.

The function is pure: no I/O, no clock (apart from the uuid), and the input is not modified.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from fhir_mappings.codes import LOINC_SYSTEM, PROGRESS_NOTE_TYPES

JsonObject = dict[str, Any]
Hook = Literal["order-sign", "encounter-discharge"]

HOOKS: Final[tuple[Hook, ...]] = ("order-sign", "encounter-discharge")
DEFAULT_USER_ID: Final = "Practitioner/example"
# Non-draft resources the rules read besides Procedures and CarePlans (plan-of-care
# ServiceRequests, Claim items with modifiers/units, diagnoses, other encounters of the day).
INCLUDED_TYPES: Final = frozenset({"ServiceRequest", "Claim", "Condition", "Encounter"})


class BundleError(ValueError):
    """The input is not a Bundle this module can turn into a request; the message says why."""


def build_hook_request(
    bundle: Mapping[str, Any],
    hook: Hook = "order-sign",
    *,
    fhir_server: str | None = None,
    hook_instance: str | None = None,
) -> JsonObject:
    """Return the CDS Hooks 2.0 request for ``hook`` built from ``bundle`` (see module doc)."""
    if hook not in HOOKS:
        raise BundleError(f"unsupported hook {hook!r}; expected one of {', '.join(HOOKS)}")
    entries = _entries(bundle)

    patients = _of_type(entries, "Patient")
    procedures = _of_type(entries, "Procedure")
    encounters = _of_type(entries, "Encounter")
    care_plans = _of_type(entries, "CarePlan")
    requests = _of_type(entries, "ServiceRequest")
    drafts = [e for e in requests if e["resource"].get("status") == "draft"]

    patient_id = _patient_id(patients, procedures)
    if patient_id is None:
        raise BundleError(
            "the bundle has no Patient and no Procedure subject to take a patientId from"
        )
    encounter = _context_encounter(encounters, drafts)
    if hook == "encounter-discharge" and encounter is None:
        raise BundleError("encounter-discharge needs an Encounter, and the bundle has none")

    context: JsonObject = {
        "userId": _user_id(entries, procedures, drafts),
        "patientId": patient_id,
    }
    if encounter is not None:
        context["encounterId"] = encounter["resource"]["id"]
    if hook == "order-sign":
        draft_orders: JsonObject = {"resourceType": "Bundle", "type": "collection"}
        if drafts:  # FHIR JSON has no empty arrays
            draft_orders["entry"] = [_copy_entry(e) for e in drafts]
        context["draftOrders"] = draft_orders

    sent_elsewhere = {id(e) for e in drafts} | {id(encounter)}
    included = [
        e
        for e in entries
        if e["resource"].get("resourceType") in INCLUDED_TYPES and id(e) not in sent_elsewhere
    ] + _performers(entries, procedures)
    prefetch: JsonObject = {
        "patient": copy.deepcopy(patients[0]["resource"]) if patients else None,
        "encounter": copy.deepcopy(encounter["resource"]) if encounter is not None else None,
        "procedures": _searchset(
            [(e, "match") for e in procedures] + [(e, "include") for e in included]
        ),
        "carePlans": _searchset([(e, "match") for e in care_plans]),
        "therapyHistory": _searchset([(e, "match") for e in encounters]),
        "progressReports": _searchset(
            [(e, "match") for e in _of_type(entries, "DocumentReference") if _progress_note(e)]
        ),
        "coverage": _searchset(
            [(e, "match") for e in _of_type(entries, "Coverage") if _active(e["resource"])]
        ),
    }

    request: JsonObject = {
        "hookInstance": hook_instance or str(uuid.uuid4()),
        "hook": hook,
    }
    if fhir_server:
        request["fhirServer"] = fhir_server
    request["context"] = context
    request["prefetch"] = prefetch
    return request


def _entries(bundle: Mapping[str, Any]) -> list[JsonObject]:
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        raise BundleError("expected a FHIR Bundle (resourceType 'Bundle')")
    raw = bundle.get("entry")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise BundleError("Bundle.entry is not a list")
    entries: list[JsonObject] = []
    for index, item in enumerate(raw):
        resource = item.get("resource") if isinstance(item, Mapping) else None
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            raise BundleError(f"Bundle.entry[{index}] has no resource with a resourceType")
        entries.append(dict(item))
    return entries


def _progress_note(entry: JsonObject) -> bool:
    """A DocumentReference typed with a LOINC progress-note code (``PROGRESS_NOTE_TYPES``)."""
    doc_type = entry["resource"].get("type")
    codings = doc_type.get("coding") if isinstance(doc_type, Mapping) else None
    return any(
        isinstance(c, Mapping)
        and c.get("system") == LOINC_SYSTEM
        and c.get("code") in PROGRESS_NOTE_TYPES
        for c in (codings if isinstance(codings, list) else ())
    )


def _active(resource: Mapping[str, Any]) -> bool:
    return resource.get("status") == "active"


def _of_type(entries: Sequence[JsonObject], resource_type: str) -> list[JsonObject]:
    return [e for e in entries if e["resource"].get("resourceType") == resource_type]


def _bare_id(reference: object, resource_type: str) -> str | None:
    """``"Patient/p1"`` (or an absolute URL ending so) -> ``"p1"``; anything else -> None."""
    if not isinstance(reference, str):
        return None
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
        return parts[-1]
    return None


def _reference(resource: Mapping[str, Any], member: str) -> object:
    value = resource.get(member)
    return value.get("reference") if isinstance(value, Mapping) else None


def _patient_id(patients: Sequence[JsonObject], procedures: Sequence[JsonObject]) -> str | None:
    for entry in patients:
        rid = entry["resource"].get("id")
        if isinstance(rid, str) and rid:
            return rid
    for entry in procedures:
        found = _bare_id(_reference(entry["resource"], "subject"), "Patient")
        if found:
            return found
    return None


def _start(encounter: Mapping[str, Any]) -> str:
    period = encounter.get("period") or encounter.get("actualPeriod") or {}
    start = period.get("start") if isinstance(period, Mapping) else None
    return start if isinstance(start, str) else ""


def _context_encounter(
    encounters: Sequence[JsonObject], drafts: Sequence[JsonObject]
) -> JsonObject | None:
    with_id = [e for e in encounters if isinstance(e["resource"].get("id"), str)]
    if not with_id:
        return None
    by_id = {e["resource"]["id"]: e for e in with_id}
    for draft in drafts:
        found = _bare_id(_reference(draft["resource"], "encounter"), "Encounter")
        if found in by_id:
            return by_id[found]
    # The latest-starting encounter is the one being signed or closed now. Comparing the raw
    # strings is enough to pick the latest within one day's bundle; ties keep bundle order.
    return max(with_id, key=lambda e: _start(e["resource"]))


def _user_id(
    entries: Sequence[JsonObject], procedures: Sequence[JsonObject], drafts: Sequence[JsonObject]
) -> str:
    for entry in procedures:
        for performer in entry["resource"].get("performer") or []:
            actor = performer.get("actor") if isinstance(performer, Mapping) else None
            ref = actor.get("reference") if isinstance(actor, Mapping) else None
            for kind in ("Practitioner", "PractitionerRole"):
                found = _bare_id(ref, kind)
                if found:
                    return f"{kind}/{found}"
    for entry in drafts:
        for kind in ("Practitioner", "PractitionerRole"):
            found = _bare_id(_reference(entry["resource"], "requester"), kind)
            if found:
                return f"{kind}/{found}"
    for entry in _of_type(entries, "Practitioner"):
        rid = entry["resource"].get("id")
        if isinstance(rid, str) and rid:
            return f"Practitioner/{rid}"
    return DEFAULT_USER_ID


def _performers(
    entries: Sequence[JsonObject], procedures: Sequence[JsonObject]
) -> list[JsonObject]:
    """The Practitioners and PractitionerRoles the Procedures name as performers, and the
    Practitioners those roles point to, in bundle order (issue 15, R-G3)."""
    wanted: set[str] = set()
    for entry in procedures:
        for performer in entry["resource"].get("performer") or []:
            actor = performer.get("actor") if isinstance(performer, Mapping) else None
            ref = actor.get("reference") if isinstance(actor, Mapping) else None
            if isinstance(ref, str):
                wanted.add(ref)
    roles = [
        e
        for e in _of_type(entries, "PractitionerRole")
        if f"PractitionerRole/{e['resource'].get('id')}" in wanted
    ]
    for entry in roles:
        ref = _reference(entry["resource"], "practitioner")
        if isinstance(ref, str):
            wanted.add(ref)
    return [
        e
        for e in (*_of_type(entries, "PractitionerRole"), *_of_type(entries, "Practitioner"))
        if f"{e['resource']['resourceType']}/{e['resource'].get('id')}" in wanted
    ]


def _copy_entry(entry: Mapping[str, Any]) -> JsonObject:
    out: JsonObject = {}
    if isinstance(entry.get("fullUrl"), str):
        out["fullUrl"] = entry["fullUrl"]
    out["resource"] = copy.deepcopy(entry["resource"])
    return out


def _searchset(items: Sequence[tuple[JsonObject, str]]) -> JsonObject:
    entries = []
    for entry, mode in items:
        out = _copy_entry(entry)
        out["search"] = {"mode": mode}
        entries.append(out)
    bundle: JsonObject = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": sum(1 for _, mode in items if mode == "match"),
    }
    if entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = entries
    return bundle
