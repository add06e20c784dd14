"""Suggestion write-back: proposed changes to draft charges, written as FHIR (R4, R4B, R5).

A card's suggestion says *what* to change of the charges being signed, in a small vocabulary:

- :class:`ChargeChange`: bill another code, set the units, add or remove a modifier, or
  delete the draft (:data:`DELETE`);
- :class:`NewCharge`: a new draft charge modelled on one of the drafts.

:class:`DraftOrders` holds the call's draft ServiceRequests and their FHIR version and writes
the changes: it answers the CDS Hooks action to send (:class:`DraftAction`: the updated or new
resource, or the reference of the draft to delete). Every kind of change is proven valid
through the full FHIR models at start-up (:func:`warm_up`); per call, each written resource is
checked for the members FHIR requires (:func:`sound_update`), as the full models cost
milliseconds per resource.

Where a modifier sits (read by :mod:`fhir_mappings.orders`): R4/R4B ``orderDetail[]`` (a
CodeableConcept), R5 ``orderDetail[].parameter[].valueCodeableConcept`` and the project
``billing-modifier`` extension; a coding's code may list several ("59,XU"). An EHR also shows
the concept's ``text`` and the codings' ``display``. Removing a modifier takes away every trace
of it there; anything else is left as it was. Adding one never duplicates one the mapper
already reads.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson
from pydantic import ValidationError

from fhir_mappings.codes import split_modifiers
from fhir_mappings.model import CPT_SYSTEM, EXT_BILLING_MODIFIER, HCPCS_SYSTEM, FhirVersion
from fhir_mappings.orders import (
    is_billing_system,
    is_modifier_extension,
    is_modifier_parameter,
    order_modifiers,
    parameter_groups,
)

JsonObject = dict[str, Any]


# ------------------------------------------------------------------------------ vocabulary


@dataclass(frozen=True, slots=True)
class ChargeChange:
    """One change of a draft charge. Its parts apply in this order: ``code`` (bill this CPT
    code instead), ``units`` (the quantity), ``remove_modifier`` (every trace of it),
    ``add_modifier`` (once, where the draft keeps its modifiers). ``delete``: the draft is
    removed instead (it has nothing left to bill); it goes with no other part."""

    code: str | None = None
    units: int | None = None
    remove_modifier: str | None = None
    add_modifier: str | None = None
    delete: bool = False

    def __post_init__(self) -> None:
        if self.delete and (
            self.code is not None
            or self.units is not None
            or self.remove_modifier is not None
            or self.add_modifier is not None
        ):
            raise ValueError("a deleted draft charge takes no other change")


#: Remove the draft charge.
DELETE = ChargeChange(delete=True)


@dataclass(frozen=True, slots=True)
class NewCharge:
    """A new draft charge billing ``code`` (``units``: its quantity, when known), modelled on
    a draft (same patient, encounter, date, discipline modifier) without the
    ``without_modifiers`` (those were for the model's code)."""

    code: str
    units: int | None = None
    without_modifiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DraftAction:
    """What accepting a suggestion does to one draft, as a CDS Hooks action: ``create`` or
    ``update`` with the ``resource``, ``delete`` of the draft ``resource_id`` names."""

    type: Literal["create", "update", "delete"]
    resource: JsonObject | None = None
    resource_id: str | None = None


# ------------------------------------------------------------------------ removing a modifier

#: Words that may stand beside modifier codes in a text ("Modifier 59", "mod. XU").
_MODIFIER_WORDS = frozenset({"MOD", "MODIFIER", "MODIFIERS", "CPT", "HCPCS"})
_WORD = re.compile(r"[A-Za-z0-9]+")


def _modifier_system(modifier: str) -> str:
    return CPT_SYSTEM if modifier.isdigit() else HCPCS_SYSTEM


def _modifier_list(text: str) -> list[str] | None:
    """The 2-character codes of a text that lists modifiers only ("59", "Modifier 59, GP");
    ``None`` for any other text (prose is never rewritten)."""
    words = [w for w in _WORD.findall(text) if w.upper() not in _MODIFIER_WORDS]
    return words if words and all(len(w) == 2 for w in words) else None


def _names(text: object, modifier: str) -> bool:
    """True when ``text`` mentions ``modifier`` as a word."""
    return isinstance(text, str) and modifier in (w.upper() for w in _WORD.findall(text))


def _text_without(text: str, modifier: str) -> str | None:
    """``text`` without ``modifier`` (a modifier list loses that entry; prose naming it goes);
    ``None`` when nothing is left."""
    listed = _modifier_list(text)
    if listed is None:
        return None
    rest = [w for w in listed if w.upper() != modifier]
    return ", ".join(rest) if rest else None


def _coding_without(coding: object, modifier: str) -> object | None:
    """``coding`` without ``modifier``: ``None`` when it named that modifier only (by code, or
    by display alone when it has no code), a copy with the other codes when it named several."""
    if not isinstance(coding, dict) or not is_billing_system(coding.get("system"), allow_none=True):
        return coding
    code = coding.get("code")
    if code is None:
        display = coding.get("display")
        listed = _modifier_list(display) if isinstance(display, str) else None
        named = listed is not None and [w.upper() for w in listed] == [modifier]
        return None if named else coding
    parts = split_modifiers(code) if isinstance(code, str) else []
    if modifier not in parts:
        return coding
    rest = [p for p in parts if p != modifier]
    if not rest:
        return None
    kept = {k: v for k, v in coding.items() if k != "display"}  # it described all the codes
    kept["code"] = ", ".join(rest)
    return kept


def _concept_without(concept: JsonObject, modifier: str) -> JsonObject | None:
    """A CodeableConcept without ``modifier``; ``None`` when nothing of it is left. A concept
    with codings keeps its text unless the text names the modifier; a text-only concept is
    changed only when its text is a list of modifiers."""
    codings = concept.get("coding")
    if isinstance(codings, list):
        kept = [c for c in (_coding_without(c, modifier) for c in codings) if c is not None]
        removed = kept != codings
    else:
        kept, removed = [], False
    text = concept.get("text")
    listed = isinstance(text, str) and _names(text, modifier) and _modifier_list(text)
    if not removed and not listed:
        # no coding named it; only a text listing modifiers would be a trace an EHR shows
        return concept
    out = dict(concept)
    if isinstance(codings, list):
        if kept:
            out["coding"] = kept
        else:
            del out["coding"]
    if isinstance(text, str) and _names(text, modifier):
        rewritten = _text_without(text, modifier)
        if rewritten is None:
            del out["text"]
        else:
            out["text"] = rewritten
    if "coding" not in out and "text" not in out:
        return None
    return out


def _parameter_without(parameter: object, modifier: str) -> object | None:
    """An R5 ``orderDetail.parameter`` without ``modifier``; ``None`` when its value was that
    modifier only (its ``code`` says what the parameter is, never the modifier)."""
    if not isinstance(parameter, dict):
        return parameter
    concept = parameter.get("valueCodeableConcept")
    if isinstance(concept, dict):
        rest = _concept_without(concept, modifier)
        if rest is None:
            return None
        return parameter if rest is concept else {**parameter, "valueCodeableConcept": rest}
    value = parameter.get("valueString")
    if isinstance(value, str) and _names(value, modifier) and _modifier_list(value):
        rewritten = _text_without(value, modifier)
        return None if rewritten is None else {**parameter, "valueString": rewritten}
    return parameter


def _detail_without(detail: object, modifier: str) -> object | None:
    """One ``orderDetail`` entry (R4 CodeableConcept or R5 parameter group) without
    ``modifier``; ``None`` when nothing of it is left."""
    if not isinstance(detail, dict):
        return detail
    parameters = detail.get("parameter")
    if isinstance(parameters, list):  # R5
        kept = [p for p in (_parameter_without(p, modifier) for p in parameters) if p is not None]
        if len(kept) == len(parameters) and all(
            a is b for a, b in zip(kept, parameters, strict=True)
        ):
            return detail
        return {**detail, "parameter": kept} if kept else None
    return _concept_without(detail, modifier)


def _remove_modifier(resource: JsonObject, modifier: str) -> None:
    """Take every trace of ``modifier`` off a draft ServiceRequest (see the module doc)."""
    modifier = modifier.strip().upper()
    details = resource.get("orderDetail")
    if isinstance(details, list):
        kept = [d for d in (_detail_without(d, modifier) for d in details) if d is not None]
        if kept:
            resource["orderDetail"] = kept
        else:
            del resource["orderDetail"]
    extensions = resource.get("extension")
    if isinstance(extensions, list):
        rest = []
        for ext in extensions:
            if is_modifier_extension(ext):
                value = _coding_without(ext.get("valueCoding"), modifier)
                if value is None:
                    continue
                if value is not ext.get("valueCoding"):
                    ext = {**ext, "valueCoding": value}
            rest.append(ext)
        if rest:
            resource["extension"] = rest
        else:
            del resource["extension"]


# -------------------------------------------------------------------------- adding a modifier


def _add_modifier(resource: JsonObject, modifier: str, version: FhirVersion | None) -> None:
    """Add ``modifier`` where the draft keeps its modifiers, once: nothing is added when the
    mapper already reads it; a leftover trace the mapper does not read (a text "59", a coding
    without a system) is replaced by the one added."""
    modifier = modifier.strip().upper()
    if modifier in order_modifiers(resource):
        return
    _remove_modifier(resource, modifier)
    coding = {"system": _modifier_system(modifier), "code": modifier}
    r5_details = parameter_groups(resource)
    for detail in r5_details:  # R5: a parameter like the draft's other modifier parameters
        siblings = [p for p in detail["parameter"] if is_modifier_parameter(p)]
        if siblings and isinstance(siblings[0].get("code"), dict):
            concept: JsonObject = {"coding": [coding]}
            if "text" in siblings[0]["valueCodeableConcept"]:
                concept["text"] = modifier
            detail["parameter"].append(
                {"code": siblings[0]["code"], "valueCodeableConcept": concept}
            )
            return
    extensions = resource.get("extension")
    details = resource.get("orderDetail")
    uses_extension = isinstance(extensions, list) and any(
        is_modifier_extension(e) for e in extensions
    )
    uses_details = isinstance(details, list) and bool(details) and not r5_details
    item: JsonObject
    if version is FhirVersion.R5 or r5_details or (uses_extension and not uses_details):
        # R5 orderDetail is a parameter structure; the project extension is unambiguous there.
        member, item = "extension", {"url": EXT_BILLING_MODIFIER, "valueCoding": coding}
    else:
        member, item = "orderDetail", {"coding": [coding]}
        if isinstance(details, list) and any(isinstance(d, dict) and "text" in d for d in details):
            item["text"] = modifier  # as the draft's other details show theirs
    existing = resource.setdefault(member, [])
    if isinstance(existing, list):
        existing.append(item)
    # otherwise the draft's member is not a list: left as it is, sound_update refuses the draft


# ---------------------------------------------------------------------------- writing changes


def _json_copy(resource: JsonObject) -> JsonObject:
    """A deep copy of parsed JSON. Drafts come from the JSON parser, so a round trip through
    orjson is exact and about ten times faster than ``copy.deepcopy``; anything orjson cannot
    write (a caller handing in non-JSON values) falls back to ``deepcopy``."""
    try:
        copied = orjson.loads(orjson.dumps(resource))
    except TypeError:
        return copy.deepcopy(resource)
    return cast(JsonObject, copied)


def apply_changes(
    resource: JsonObject, changes: Iterable[ChargeChange], version: FhirVersion | None
) -> JsonObject:
    """A copy of a draft ServiceRequest with ``changes`` applied (code, units, modifiers), in
    the shapes of ``version`` (``None``: R4/R4B). :data:`DELETE` has nothing to write here."""
    updated = _json_copy(resource)
    for change in changes:
        if change.code is not None:
            updated["code"] = {"coding": [{"system": CPT_SYSTEM, "code": change.code}]}
            if version is FhirVersion.R5:
                updated["code"] = {"concept": updated["code"]}
        if change.units is not None:
            quantity = updated.get("quantityQuantity")
            quantity = dict(quantity) if isinstance(quantity, dict) else {}
            quantity["value"] = change.units
            quantity.setdefault("unit", "unit")
            updated["quantityQuantity"] = quantity
        if change.remove_modifier is not None:
            _remove_modifier(updated, change.remove_modifier)
        if change.add_modifier is not None:
            _add_modifier(updated, change.add_modifier, version)
    return updated


def new_draft(template: JsonObject, new: NewCharge, version: FhirVersion | None) -> JsonObject:
    """A new draft charge for ``new.code`` modelled on the draft ``template``: the same
    patient, encounter, date and discipline modifier, its own id (``{template id}-{code}``), no
    identifier, meta or narrative of the template's, none of ``new.without_modifiers`` and
    ``new.units`` units."""
    created = _json_copy(template)
    for member in ("identifier", "meta", "text"):
        created.pop(member, None)
    template_id = template.get("id") if isinstance(template.get("id"), str) else "charge"
    created["id"] = f"{template_id}-{new.code}"[:64]
    created["status"] = "draft"
    for modifier in new.without_modifiers:
        _remove_modifier(created, modifier)
    return apply_changes(created, (ChargeChange(code=new.code, units=new.units),), version)


# ---------------------------------------------------------------------------- soundness


def _token(value: object) -> bool:
    return isinstance(value, str) and bool(value) and value == value.strip()


def _codeable_concept(value: object) -> bool:
    if not isinstance(value, dict) or not value:
        return False
    codings = value.get("coding", [])
    return isinstance(codings, list) and all(isinstance(c, dict) and c for c in codings)


def _objects(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) and item for item in value)


def sound_update(resource: JsonObject, version: FhirVersion | None) -> bool:
    """Per-call check of a written draft ServiceRequest: the members FHIR requires
    (``status``, ``intent``, ``subject``) and every member a change may rewrite have the shapes
    the models demand. The rest of the resource is the EHR's own draft, sent back unchanged."""
    if resource.get("resourceType") != "ServiceRequest":
        return False
    if not (_token(resource.get("status")) and _token(resource.get("intent"))):
        return False
    subject = resource.get("subject")
    if not isinstance(subject, dict) or not any(
        isinstance(subject.get(k), str | dict) and subject.get(k)
        for k in ("reference", "identifier", "display")
    ):
        return False
    code = resource.get("code")
    if code is not None:
        if version is FhirVersion.R5:
            if not isinstance(code, dict) or not _codeable_concept(code.get("concept", {"x": 1})):
                return False
        elif not _codeable_concept(code):
            return False
    quantity = resource.get("quantityQuantity")
    if quantity is not None and not (
        isinstance(quantity, dict)
        and isinstance(quantity.get("value"), int | float)
        and not isinstance(quantity.get("value"), bool)
    ):
        return False
    if "orderDetail" in resource and not _objects(resource["orderDetail"]):
        return False
    extensions = resource.get("extension")
    return extensions is None or (
        _objects(extensions) and all(_token(e.get("url")) for e in extensions)
    )


def valid_fhir(resource: JsonObject, version: FhirVersion | None) -> bool:
    """The resource validated through the full fhir.resources ServiceRequest model of
    ``version`` (``None``: R4B); start-up and tests only, it costs milliseconds."""
    try:
        if version is FhirVersion.R5:
            from fhir.resources.servicerequest import ServiceRequest as R5ServiceRequest

            R5ServiceRequest.model_validate(resource)
        else:
            from fhir.resources.R4B.servicerequest import ServiceRequest as R4ServiceRequest

            R4ServiceRequest.model_validate(resource)
    except (ValidationError, ValueError, TypeError):
        return False
    return True


# ---------------------------------------------------------------------------- the call's drafts


@dataclass(frozen=True, slots=True)
class DraftOrders:
    """The draft ServiceRequests of the call, by reference (``ServiceRequest/{id}``), and
    their FHIR version (``None``: R4/R4B); writes the changes a suggestion proposes."""

    resources: Mapping[str, JsonObject]
    version: FhirVersion | None

    def change(self, ref: str, changes: Iterable[ChargeChange]) -> DraftAction | None:
        """The action applying ``changes`` to the draft ``ref``: a ``delete`` when one of them
        is :data:`DELETE`, else an ``update`` with the changed copy; ``None`` when the copy
        would not be a sound ServiceRequest (:func:`sound_update`: the EHR's draft has
        members of the wrong shape), so no suggestion should carry it."""
        changes = tuple(changes)
        if any(change.delete for change in changes):
            return DraftAction(type="delete", resource_id=ref)
        updated = apply_changes(self.resources[ref], changes, self.version)
        if not sound_update(updated, self.version):
            return None
        return DraftAction(type="update", resource=updated)

    def create(self, template: str, new: NewCharge) -> DraftAction | None:
        """The action creating ``new`` modelled on the draft ``template``; ``None`` when its id
        is already a draft's or the result would not be a sound ServiceRequest."""
        created = new_draft(self.resources[template], new, self.version)
        taken = created["id"] in {ref.rpartition("/")[2] for ref in self.resources}
        if taken or not sound_update(created, self.version):
            return None
        return DraftAction(type="create", resource=created)


# ---------------------------------------------------------------------------- start-up proof


def _probe(version: FhirVersion | None) -> JsonObject:
    coding = {"system": CPT_SYSTEM, "code": "97530", "display": "warm-up"}
    probe: JsonObject = {
        "resourceType": "ServiceRequest",
        "id": "warm-up",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/warm-up"},
        "quantityQuantity": {"value": 1, "unit": "unit"},
        "extension": [{"url": EXT_BILLING_MODIFIER, "valueCoding": coding}],
        "basedOn": [{"reference": "CarePlan/warm-up"}],
        "occurrencePeriod": {"start": "2025-01-01T09:00:00Z", "end": "2025-01-01T09:15:00Z"},
        "authoredOn": "2025-01-01",
    }
    if version is FhirVersion.R5:
        probe["reason"] = [{"concept": {"coding": [coding]}}]
        probe["code"] = {"concept": {"coding": [coding]}}
    else:
        probe["reasonCode"] = [{"coding": [coding], "text": "warm-up"}]
        probe["code"] = {"coding": [coding]}
        probe["orderDetail"] = [{"coding": [coding]}]
    return probe


#: One change of every kind; their results are validated once, at start-up.
CHANGE_KINDS: tuple[ChargeChange, ...] = (
    ChargeChange(units=2),
    ChargeChange(add_modifier="59"),
    ChargeChange(add_modifier="XU"),
    ChargeChange(remove_modifier="59"),
    ChargeChange(code="97150", units=1),
)
#: A new charge modelled on a draft (:func:`new_draft`).
NEW_CHARGE_KIND = NewCharge(code="97150", units=1, without_modifiers=("59", "XU"))


def warm_up() -> None:
    """Prove at start-up, through the full FHIR models (R4B and R5), that every kind of change
    yields a valid ServiceRequest (R-22). Per call only the draft's required members and the
    members a change rewrites are checked (:func:`sound_update`): the full models cost
    milliseconds per resource, far too much for the hook's time budget."""
    for version in (None, FhirVersion.R5):
        probe = _probe(version)
        if not valid_fhir(probe, version):
            raise RuntimeError("warm-up ServiceRequest is not valid FHIR")
        for change in CHANGE_KINDS:
            updated = apply_changes(probe, (change,), version)
            if not (valid_fhir(updated, version) and sound_update(updated, version)):
                raise RuntimeError(f"a suggestion of kind {change} would not be valid FHIR")
        created = new_draft(probe, NEW_CHARGE_KIND, version)
        if not (valid_fhir(created, version) and sound_update(created, version)):
            raise RuntimeError("a new charge would not be valid FHIR")


__all__ = [
    "CHANGE_KINDS",
    "DELETE",
    "NEW_CHARGE_KIND",
    "ChargeChange",
    "DraftAction",
    "DraftOrders",
    "NewCharge",
    "apply_changes",
    "new_draft",
    "sound_update",
    "valid_fhir",
    "warm_up",
]
