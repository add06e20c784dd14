"""fhir_mappings.writeback: the changes a suggestion makes to a draft ServiceRequest.

A modifier sits where the mapper reads it (R4/R4B ``orderDetail`` CodeableConcepts, R5
``orderDetail.parameter`` values, the project ``billing-modifier`` extension) and where an EHR
shows it (the concept's ``text``, a coding's ``display``). Removing it leaves no trace there and
touches nothing else; adding it never duplicates one already there.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mappings import map_bundle
from fhir_mappings.model import CPT_SYSTEM, EXT_BILLING_MODIFIER, HCPCS_SYSTEM, FhirVersion
from fhir_mappings.writeback import (
    DELETE,
    ChargeChange,
    DraftAction,
    DraftOrders,
    NewCharge,
    apply_changes,
    sound_update,
    valid_fhir,
)

Json = dict[str, Any]
GP = {"system": HCPCS_SYSTEM, "code": "GP", "display": "Services under a PT plan of care"}
C59 = {"system": CPT_SYSTEM, "code": "59", "display": "Distinct procedural service"}
XU = {"system": HCPCS_SYSTEM, "code": "XU"}


def draft(**members: Any) -> Json:
    return {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": CPT_SYSTEM, "code": "97530"}]},
        "quantityQuantity": {"value": 1, "unit": "unit"},
        **members,
    }


def r5(*parameters: Json) -> Json:
    resource = draft(orderDetail=[{"parameter": list(parameters)}])
    resource["code"] = {"concept": resource["code"]}
    return resource


def parameter(*codings: Json, text: str | None = None) -> Json:
    concept: Json = {"coding": list(codings)}
    if text is not None:
        concept["text"] = text
    return {"code": {"text": "billing modifier"}, "valueCodeableConcept": concept}


def extension(coding: Json) -> Json:
    return {"url": EXT_BILLING_MODIFIER, "valueCoding": coding}


def read(resource: Json) -> tuple[str, ...]:
    """The modifiers the mapper reads."""
    record = map_bundle(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}
    )
    (charge,) = record.charges
    return charge.modifiers


def remove(resource: Json, modifier: str, version: FhirVersion | None = None) -> Json:
    updated = apply_changes(resource, [ChargeChange(remove_modifier=modifier)], version)
    assert sound_update(updated, version)
    assert valid_fhir(updated, version)
    return updated


def add(resource: Json, modifier: str, version: FhirVersion | None = None) -> Json:
    updated = apply_changes(resource, [ChargeChange(add_modifier=modifier)], version)
    assert sound_update(updated, version)
    assert valid_fhir(updated, version)
    return updated


# ------------------------------------------------------------------------------ removing


def test_r4_detail_goes_with_its_text() -> None:
    """The issue's case: the coding went, ``{"text": "59"}`` stayed and the EHR showed 59."""
    before = draft(
        orderDetail=[{"coding": [GP], "text": "GP"}, {"coding": [C59], "text": "59"}],
    )
    after = remove(before, "59")
    assert after["orderDetail"] == [{"coding": [GP], "text": "GP"}]
    assert read(after) == ("GP",)
    assert before["orderDetail"][1] == {"coding": [C59], "text": "59"}, "input left as it was"


def test_r4_concept_with_several_codings_keeps_the_others() -> None:
    after = remove(draft(orderDetail=[{"coding": [GP, C59], "text": "GP, modifier 59"}]), "59")
    assert after["orderDetail"] == [{"coding": [GP], "text": "GP"}]


def test_prose_naming_the_modifier_goes_with_its_coding() -> None:
    text = "Distinct procedural service (59)"
    after = remove(draft(orderDetail=[{"coding": [GP]}, {"coding": [C59], "text": text}]), "59")
    assert after["orderDetail"] == [{"coding": [GP]}]


def test_text_only_traces_are_removed_unrelated_text_is_kept() -> None:
    before = draft(
        orderDetail=[
            {"coding": [GP]},
            {"text": "Modifier 59"},
            {"text": "59, XU"},
            {"text": "Treat 59 minutes"},  # prose: not a modifier, never rewritten
            {"coding": [{"code": "59", "display": "59"}]},  # no system: not read, but shown
            {"coding": [{"system": HCPCS_SYSTEM, "display": "59"}]},  # display only
            {"coding": [{"system": "urn:local", "code": "59"}]},  # another code system
        ],
    )
    after = remove(before, "59")
    assert after["orderDetail"] == [
        {"coding": [GP]},
        {"text": "XU"},
        {"text": "Treat 59 minutes"},
        {"coding": [{"system": "urn:local", "code": "59"}]},
    ]


def test_a_code_naming_several_modifiers_keeps_the_others() -> None:
    before = draft(orderDetail=[{"coding": [{**XU, "code": "59,xu", "display": "59 + XU"}]}])
    assert read(before) == ("59", "XU")
    after = remove(before, "59")
    assert after["orderDetail"] == [{"coding": [{"system": HCPCS_SYSTEM, "code": "XU"}]}]
    assert read(after) == ("XU",)


def test_lower_case_and_blanks_are_the_same_modifier() -> None:
    after = remove(draft(orderDetail=[{"coding": [GP]}, {"coding": [{**XU, "code": " xu"}]}]), "XU")
    assert read(after) == ("GP",)
    assert after["orderDetail"] == [{"coding": [GP]}]


def test_extension_goes_other_extensions_stay() -> None:
    other = {"url": "https://example.org/x", "valueString": "59"}
    after = remove(draft(extension=[extension(C59), other, extension(GP)]), "59")
    assert after["extension"] == [other, extension(GP)]
    assert read(after) == ("GP",)
    after = remove(draft(extension=[extension(C59)]), "59")
    assert "extension" not in after


def test_every_place_at_once() -> None:
    before = draft(
        orderDetail=[{"coding": [C59], "text": "59"}], extension=[extension({"code": "59"})]
    )
    assert read(before) == ("59",)
    after = remove(before, "59")
    assert "orderDetail" not in after
    assert "extension" not in after
    assert read(after) == ()


def test_r5_parameter_goes_and_the_detail_when_empty() -> None:
    before = r5(parameter(GP, text="GP"), parameter(C59, text="59"))
    after = remove(before, "59", FhirVersion.R5)
    assert after["orderDetail"] == [{"parameter": [parameter(GP, text="GP")]}]
    assert read(after) == ("GP",)
    only = r5(parameter(C59, text="59"))
    assert "orderDetail" not in remove(only, "59", FhirVersion.R5)


def test_r5_string_value_listing_the_modifier() -> None:
    before = r5(parameter(GP), {"code": {"text": "billing modifier"}, "valueString": "59"})
    after = remove(before, "59", FhirVersion.R5)
    assert after["orderDetail"] == [{"parameter": [parameter(GP)]}]


def test_nothing_to_remove_changes_nothing() -> None:
    before = draft(orderDetail=[{"coding": [GP], "text": "GP"}], extension=[extension(XU)])
    assert remove(before, "59") == before


# -------------------------------------------------------------------------------- adding


def test_r4_added_like_the_other_details() -> None:
    after = add(draft(orderDetail=[{"coding": [GP], "text": "GP"}]), "59")
    assert after["orderDetail"] == [
        {"coding": [GP], "text": "GP"},
        {"coding": [{"system": CPT_SYSTEM, "code": "59"}], "text": "59"},
    ]
    assert read(after) == ("GP", "59")
    bare = add(draft(), "XU")
    assert bare["orderDetail"] == [{"coding": [{"system": HCPCS_SYSTEM, "code": "XU"}]}]


def test_added_to_the_extension_when_the_draft_keeps_modifiers_there() -> None:
    after = add(draft(extension=[extension(GP)]), "59")
    assert after["extension"] == [extension(GP), extension({"system": CPT_SYSTEM, "code": "59"})]
    assert "orderDetail" not in after


def test_r5_added_as_a_parameter_like_the_others() -> None:
    after = add(r5(parameter(GP, text="GP")), "59", FhirVersion.R5)
    assert after["orderDetail"] == [
        {
            "parameter": [
                parameter(GP, text="GP"),
                parameter({"system": CPT_SYSTEM, "code": "59"}, text="59"),
            ]
        }
    ]
    assert read(after) == ("GP", "59")
    bare = r5()
    del bare["orderDetail"]
    after = add(bare, "59", FhirVersion.R5)
    assert after["extension"] == [extension({"system": CPT_SYSTEM, "code": "59"})]


@pytest.mark.parametrize(
    "resource",
    [
        draft(orderDetail=[{"coding": [C59]}]),
        draft(orderDetail=[{"coding": [{**XU, "code": "XU, 59"}]}]),
        draft(extension=[extension({"code": "59"})]),
        r5(parameter(C59)),
    ],
    ids=["orderDetail", "combined-code", "extension", "r5-parameter"],
)
def test_never_added_twice(resource: Json) -> None:
    version = FhirVersion.R5 if "concept" in resource["code"] else None
    assert add(resource, "59", version) == resource


def test_a_trace_the_mapper_does_not_read_is_replaced() -> None:
    before = draft(orderDetail=[{"coding": [GP]}, {"text": "59"}])
    after = add(before, "59")
    assert after["orderDetail"] == [
        {"coding": [GP]},
        {"coding": [{"system": CPT_SYSTEM, "code": "59"}]},
    ]


def test_moving_a_modifier_between_lines_round_trips() -> None:
    before = draft(orderDetail=[{"coding": [GP], "text": "GP"}, {"coding": [C59], "text": "59"}])
    changes = [ChargeChange(remove_modifier="59"), ChargeChange(add_modifier="XU")]
    after = apply_changes(before, changes, None)
    assert read(after) == ("GP", "XU")
    assert "59" not in str(after["orderDetail"])


# ------------------------------------------------------------------ the call's drafts


def orders(*resources: Json, version: FhirVersion | None = None) -> DraftOrders:
    return DraftOrders({f"ServiceRequest/{r['id']}": r for r in resources}, version)


def test_units_and_code_are_written_in_the_request_version() -> None:
    r4 = orders(draft(quantityQuantity={"value": 3, "unit": "u", "code": "1"}))
    action = r4.change("ServiceRequest/sr-1", [ChargeChange(units=2)])
    assert action is not None
    assert action.type == "update"
    assert action.resource is not None
    assert action.resource["quantityQuantity"] == {"value": 2, "unit": "u", "code": "1"}
    replaced = r4.change("ServiceRequest/sr-1", [ChargeChange(code="97150", units=1)])
    assert replaced is not None
    assert replaced.resource is not None
    assert replaced.resource["code"] == {"coding": [{"system": CPT_SYSTEM, "code": "97150"}]}
    in_r5 = orders(r5(), version=FhirVersion.R5)
    action = in_r5.change("ServiceRequest/sr-1", [ChargeChange(code="97150")])
    assert action is not None
    assert action.resource is not None
    assert action.resource["code"] == {
        "concept": {"coding": [{"system": CPT_SYSTEM, "code": "97150"}]}
    }
    assert valid_fhir(action.resource, FhirVersion.R5)


def test_delete_names_the_draft_and_writes_nothing() -> None:
    before = draft()
    action = orders(before).change("ServiceRequest/sr-1", [DELETE])
    assert action == DraftAction(type="delete", resource_id="ServiceRequest/sr-1")
    assert before == draft(), "input left as it was"
    with pytest.raises(ValueError, match="no other change"):
        ChargeChange(units=0, delete=True)


def test_an_unsound_draft_gets_no_action() -> None:
    broken = draft(orderDetail=["59"])
    assert orders(broken).change("ServiceRequest/sr-1", [ChargeChange(units=1)]) is None
    assert orders(broken).create("ServiceRequest/sr-1", NewCharge("97150", 1)) is None


def test_a_new_charge_is_modelled_on_the_draft_without_the_dropped_modifiers() -> None:
    template = draft(
        identifier=[{"value": "line-7"}],
        meta={"versionId": "3"},
        status="active",
        orderDetail=[{"coding": [GP], "text": "GP"}, {"coding": [C59], "text": "59"}],
        extension=[extension(XU)],
    )
    action = orders(template).create(
        "ServiceRequest/sr-1", NewCharge("97150", 1, without_modifiers=("59", "XU"))
    )
    assert action is not None
    assert action.type == "create"
    assert action.resource is not None
    created = action.resource
    assert created["id"] == "sr-1-97150"
    assert created["status"] == "draft"
    assert "identifier" not in created
    assert "meta" not in created
    assert created["code"] == {"coding": [{"system": CPT_SYSTEM, "code": "97150"}]}
    assert created["quantityQuantity"]["value"] == 1
    assert read(created) == ("GP",)
    assert valid_fhir(created, None)


def test_a_new_charge_never_takes_the_id_of_another_draft() -> None:
    taken = draft(id="sr-1-97150")
    assert orders(draft(), taken).create("ServiceRequest/sr-1", NewCharge("97150", 1)) is None


def test_a_coding_whose_system_is_not_a_string_is_no_modifier() -> None:
    """A JSON array or object as a coding's system is no CPT/HCPCS modifier, as the mapper
    reads it: it is left alone, and the modifier is added beside it."""
    odd = {"system": ["x"], "code": "59"}
    before = draft(orderDetail=[{"coding": [odd]}])
    after = apply_changes(before, [ChargeChange(add_modifier="59")], None)
    assert after["orderDetail"] == [
        {"coding": [odd]},
        {"coding": [{"system": CPT_SYSTEM, "code": "59"}]},
    ]
    assert sound_update(after, None)
    kept = apply_changes(before, [ChargeChange(remove_modifier="59")], None)
    assert kept["orderDetail"] == [{"coding": [odd]}]
