"""plugin.cards.apply_fixes: adding and removing a modifier on a draft ServiceRequest.

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
from plugin import cards
from plugin.rules import Fix

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
    updated = cards.apply_fixes(resource, [Fix("97530", remove_modifier=modifier)], version)
    assert cards.sound_update(updated, version)
    assert cards._valid_fhir(updated, version)
    return updated


def add(resource: Json, modifier: str, version: FhirVersion | None = None) -> Json:
    updated = cards.apply_fixes(resource, [Fix("97530", add_modifier=modifier)], version)
    assert cards.sound_update(updated, version)
    assert cards._valid_fhir(updated, version)
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
    fixes = [Fix("97530", remove_modifier="59"), Fix("97530", add_modifier="XU")]
    after = cards.apply_fixes(before, fixes, None)
    assert read(after) == ("GP", "XU")
    assert "59" not in str(after["orderDetail"])
