"""fhir_mappings.orders: what the services and the write-back read of draft ServiceRequests."""

from __future__ import annotations

from typing import Any

import pytest
from fhir_builders import service_request

from fhir_mappings import map_bundle
from fhir_mappings.mapping.charges import request_modifiers
from fhir_mappings.mapping.codings import coding_modifiers
from fhir_mappings.model import CPT_SYSTEM, EXT_BILLING_MODIFIER, HCPCS_SYSTEM
from fhir_mappings.orders import (
    billing_codes,
    draft_service_requests,
    order_dates,
    order_modifiers,
)

Json = dict[str, Any]
CPT_OID = "urn:oid:2.16.840.1.113883.6.12"


def draft(**members: Any) -> Json:
    """A draft 97530 charge without units or modifiers (``fhir_builders.service_request``)."""
    return {
        **service_request(id="sr-1", patient="Patient/p1", units=None, modifiers=()),
        **members,
    }


def coding(code: object, system: object = HCPCS_SYSTEM) -> Json:
    return {"system": system, "code": code}


def test_draft_service_requests_by_reference_leniently() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": draft()},
            {"resource": {"resourceType": "Procedure", "id": "p"}},
            {"resource": {**draft(), "id": ""}},
            "not an entry",
            {"resource": draft(id="sr-2")},
        ],
    }
    assert list(draft_service_requests(bundle)) == ["ServiceRequest/sr-1", "ServiceRequest/sr-2"]
    assert draft_service_requests(None) == {}
    assert draft_service_requests({"resourceType": "Bundle"}) == {}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ({"coding": [coding("97530", CPT_SYSTEM)]}, ["97530"]),
        ({"coding": [coding("97530", CPT_OID)]}, ["97530"]),  # CPT's HL7 OID
        ({"concept": {"coding": [coding("97150", CPT_SYSTEM)]}}, ["97150"]),  # R5
        ({"concept": "x", "coding": [coding("97110", CPT_SYSTEM)]}, []),  # concept not one
        ({"coding": [coding(" 97110 ", CPT_SYSTEM)]}, ["97110"]),  # billed as the mapper bills
        ({"coding": [coding("g0283", HCPCS_SYSTEM)]}, ["G0283"]),
        ({"coding": [coding("  ", CPT_SYSTEM), coding("97112", CPT_SYSTEM)]}, ["97112"]),
        ({"coding": [coding("97530", "http://snomed.info/sct")]}, []),
        ({"coding": [coding(["97530"], CPT_SYSTEM), coding("97530", [CPT_SYSTEM])]}, []),
        ({"coding": "97530"}, []),
        ("97530", []),
    ],
)
def test_billing_codes(code: object, expected: list[str]) -> None:
    """What the services read to decide whether a request bills therapy is what the mapper
    makes the charge's code of."""
    resource = draft(code=code)
    assert list(billing_codes(resource)) == expected
    record = map_bundle(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}
    )
    assert [charge.code for charge in record.charges] == expected[:1]


def test_order_dates() -> None:
    both = draft(occurrenceDateTime="2025-03-04T09:00:00Z", authoredOn="2025-03-03")
    assert list(order_dates(both)) == ["2025-03-04", "2025-03-03"]
    assert list(order_dates(draft(occurrenceDateTime="2025-03", authoredOn=20250303))) == []


def parameter(*codings: Json) -> Json:
    return {"code": {"text": "billing modifier"}, "valueCodeableConcept": {"coding": [*codings]}}


def extension(value: Json) -> Json:
    return {"url": EXT_BILLING_MODIFIER, "valueCoding": value}


NO_SYSTEM = "modifier coding not in the CPT or HCPCS system; ignored"
NO_CODE = "modifier coding without a code; ignored"
NO_VALUE = "billing-modifier extension without valueCoding"
AT_EXTENSION = "extension(billing-modifier)"


@pytest.mark.parametrize(
    ("members", "modifiers", "problems"),
    [
        (
            {"orderDetail": [{"coding": [coding("GP")]}, {"coding": [coding("59", CPT_SYSTEM)]}]},
            ["GP", "59"],
            [],
        ),
        ({"orderDetail": [{"coding": [coding("59, xu")]}, {"text": "XE"}]}, ["59", "XU"], []),
        ({"orderDetail": [{"coding": [coding("59,59"), coding("xu 59")]}]}, ["59", "XU"], []),
        # orderDetail carries other codings: no system, or another one, is no modifier there
        ({"orderDetail": [{"coding": [{"code": "59"}]}]}, [], []),
        ({"orderDetail": [{"coding": [coding("59", ["x"])]}]}, [], []),
        ({"orderDetail": [{"coding": [coding("59", "urn:local")]}]}, [], []),
        (
            {"orderDetail": [{"coding": [coding(" "), coding(59)]}]},
            [],
            [(NO_CODE, "orderDetail")] * 2,
        ),
        (
            {"orderDetail": [{"parameter": [parameter(coding("GP")), parameter(coding("XU"))]}]},
            ["GP", "XU"],
            [],
        ),
        ({"orderDetail": [{"parameter": [{"valueString": "59"}]}]}, [], []),
        # in the extension a coding without a system is a modifier; another system is reported
        ({"extension": [extension({"code": "59"}), extension(coding("GP"))]}, ["59", "GP"], []),
        ({"extension": [{"url": "https://example.org/x", "valueCoding": coding("59")}]}, [], []),
        (
            {"extension": [extension(coding("59", "urn:local")), {"url": EXT_BILLING_MODIFIER}]},
            [],
            [(NO_VALUE, "extension"), (NO_SYSTEM, AT_EXTENSION)],  # a missing value first
        ),
        (
            {
                "orderDetail": [{"coding": [coding("GP"), coding("XU")]}],
                "extension": [extension(coding("XU")), extension(coding("59", CPT_SYSTEM))],
            },
            ["GP", "XU", "59"],
            [],
        ),
        (
            {"orderDetail": [{"coding": [coding("")]}], "extension": [extension({"system": None})]},
            [],
            [(NO_CODE, "orderDetail"), (NO_CODE, AT_EXTENSION)],
        ),
        ({"orderDetail": "59", "extension": {"url": EXT_BILLING_MODIFIER}}, [], []),
    ],
)
def test_one_reading_of_an_orders_modifiers(
    members: Json, modifiers: list[str], problems: list[tuple[str, str]]
) -> None:
    """request_modifiers is the one reading: the services' and write-back's view
    (order_modifiers) is its modifiers, the mapper's charge carries them and reports its
    problems, in order."""
    resource = draft(**members)
    assert request_modifiers(resource) == (modifiers, problems)
    assert order_modifiers(resource) == modifiers
    record = map_bundle(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}
    )
    (charge,) = record.charges
    assert charge.modifiers == tuple(modifiers)
    assert [(i.message, i.field, i.resource) for i in record.issues] == [
        (message, field, "ServiceRequest/sr-1") for message, field in problems
    ]


@pytest.mark.parametrize(
    ("value", "allow_no_system", "expected"),
    [
        (coding("59, xu"), False, (["59", "XU"], None)),
        (coding("GP", "urn:oid:2.16.840.1.113883.6.285"), False, (["GP"], None)),  # HCPCS OID
        ({"code": "59"}, False, ([], None)),
        ({"code": "59"}, True, (["59"], None)),
        (coding("59", "urn:local"), False, ([], None)),
        (coding("59", "urn:local"), True, ([], NO_SYSTEM)),
        (coding("59", 12), True, ([], NO_SYSTEM)),
        (coding(None), False, ([], NO_CODE)),
        ({"system": None, "code": "\t"}, True, ([], NO_CODE)),
        ("59", True, ([], None)),
    ],
)
def test_what_one_coding_says_about_modifiers(
    value: object, allow_no_system: bool, expected: tuple[list[str], str | None]
) -> None:
    assert coding_modifiers(value, allow_no_system=allow_no_system) == expected
