"""fhir_mappings.orders: what the services and the write-back read of draft ServiceRequests."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mappings import map_bundle
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
    return {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": CPT_SYSTEM, "code": "97530"}]},
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
        ({"concept": "x", "coding": [coding("97110", CPT_SYSTEM)]}, ["97110"]),
        ({"coding": [coding("97530", "http://snomed.info/sct")]}, []),
        ({"coding": [coding(["97530"], CPT_SYSTEM), coding("97530", [CPT_SYSTEM])]}, []),
        ({"coding": "97530"}, []),
        ("97530", []),
    ],
)
def test_billing_codes(code: object, expected: list[str]) -> None:
    assert list(billing_codes(draft(code=code))) == expected


def test_order_dates() -> None:
    both = draft(occurrenceDateTime="2025-03-04T09:00:00Z", authoredOn="2025-03-03")
    assert list(order_dates(both)) == ["2025-03-04", "2025-03-03"]
    assert list(order_dates(draft(occurrenceDateTime="2025-03", authoredOn=20250303))) == []


def parameter(*codings: Json) -> Json:
    return {"code": {"text": "billing modifier"}, "valueCodeableConcept": {"coding": [*codings]}}


def extension(value: Json) -> Json:
    return {"url": EXT_BILLING_MODIFIER, "valueCoding": value}


@pytest.mark.parametrize(
    "members",
    [
        {"orderDetail": [{"coding": [coding("GP")]}, {"coding": [coding("59", CPT_SYSTEM)]}]},
        {"orderDetail": [{"coding": [coding("59, xu")]}, {"text": "XE"}]},
        {"orderDetail": [{"coding": [{"code": "59"}]}]},  # no system: not read in orderDetail
        {"orderDetail": [{"coding": [coding("59", ["x"])]}]},  # a system that is no string
        {"orderDetail": [{"coding": [coding("59", "urn:local")]}]},
        {"orderDetail": [{"parameter": [parameter(coding("GP")), parameter(coding("XU"))]}]},
        {"orderDetail": [{"parameter": [{"valueString": "59"}]}]},
        {"extension": [extension({"code": "59"}), extension(coding("GP"))]},  # no system: read
        {"extension": [{"url": "https://example.org/x", "valueCoding": coding("59")}]},
        {
            "orderDetail": [{"coding": [coding("GP"), coding("XU")]}],
            "extension": [extension(coding("XU")), extension(coding("59", CPT_SYSTEM))],
        },
        {"orderDetail": "59", "extension": {"url": EXT_BILLING_MODIFIER}},
    ],
)
def test_order_modifiers_are_the_ones_the_mapper_reads(members: Json) -> None:
    resource = draft(**members)
    record = map_bundle(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}
    )
    (charge,) = record.charges
    assert tuple(dict.fromkeys(order_modifiers(resource))) == charge.modifiers
