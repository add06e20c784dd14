"""Prefetch states (P-7..P-10) and template rendering (P-4, P-5)."""

from __future__ import annotations

from typing import Any

import pytest
from cdsh_support import spec_json

from cds_hooks import Prefetch, PrefetchState, PrefetchUnavailable, render_template
from cds_hooks.prefetch import (
    classify_prefetch_value,
    initial_entries,
    template_tokens,
    validate_template,
)

CONTEXT = {
    "userId": "PractitionerRole/123",
    "patientId": "1288992",
    "encounterId": "89284",
    "draftOrders": {"resourceType": "Bundle"},
}


@pytest.mark.parametrize(
    ("template", "context", "expected"),
    [
        ("Patient/{{context.patientId}}", CONTEXT, "Patient/1288992"),
        ("{{context.userId}}", CONTEXT, "PractitionerRole/123"),  # spec user-read template
        (
            "PractitionerRole?_id={{userPractitionerRoleId}}&_include=PractitionerRole:practitioner",
            CONTEXT,
            "PractitionerRole?_id=123&_include=PractitionerRole:practitioner",
        ),
        (
            "Procedure?patient={{ context.patientId }}&encounter={{context.encounterId}}",
            CONTEXT,
            "Procedure?patient=1288992&encounter=89284",
        ),
        # values are percent-encoded, so they cannot add query parameters
        ("Observation?patient={{context.patientId}}", {"patientId": "1&_x=y"}, None),
    ],
)
def test_render(template: str, context: dict[str, Any], expected: str | None) -> None:
    url, token = render_template(template, context)
    if expected is None:
        assert url == "Observation?patient=1%26_x%3Dy"
    else:
        assert (url, token) == (expected, None)


@pytest.mark.parametrize(
    ("template", "context", "token"),
    [
        ("Encounter/{{context.encounterId}}", {"patientId": "1"}, "context.encounterId"),
        ("Practitioner/{{userPractitionerId}}", CONTEXT, "userPractitionerId"),  # userId is a Role
        ("Bundle/{{context.draftOrders}}", CONTEXT, "context.draftOrders"),  # not tokenizable (P-5)
        ("Patient/{{context.patientId}}", {"patientId": "../../admin"}, "context.patientId"),
        ("Patient/{{context.patientId}}", {"patientId": ""}, "context.patientId"),
    ],
)
def test_unresolvable_token_skips_the_template(
    template: str, context: dict[str, Any], token: str
) -> None:
    assert render_template(template, context) == (None, token)


def test_spec_templates_validate() -> None:
    for name in (
        "spec-2.0/spec2.0-prefetch-templates.json",
        "spec-2.0/spec2.0-prefetch-template-hba1c.json",
        "spec-2.0/spec2.0-prefetch-template-user-read.json",
        "spec-2.0/spec2.0-prefetch-template-user-search.json",
    ):
        for key, template in spec_json(name)["prefetch"].items():
            validate_template(key, template)
            assert template_tokens(template)


@pytest.mark.parametrize(
    "template",
    [
        "Patient/{{user}}",  # pre-1.0 token
        "Observation?date={{today()}}",  # 3.0-ballot FHIRPath token, not 2.0
        "https://evil.example/Patient/{{context.patientId}}",
        "/Patient/1",
        "Patient/{{context.patientId}",
    ],
)
def test_templates_outside_2_0_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="prefetch"):
        validate_template("k", template)


def test_classification() -> None:
    """P-7..P-10 on the spec's own prefetch data example (the bare-string 'user' is not data)."""
    data = spec_json("spec-2.0/spec2.0-prefetch-data.json")["prefetch"]
    states = {k: classify_prefetch_value(k, v).state for k, v in data.items()}
    assert states == {
        "patient": PrefetchState.PRESENT,
        "hemoglobin-a1c": PrefetchState.PRESENT,
        "user": PrefetchState.MISSING,
    }


def test_paginated_prefetch_is_incomplete() -> None:
    body = spec_json("spec-3.0.0-ballot/spec3.0ballot-request-order-sign-paginated-prefetch.json")
    entry = classify_prefetch_value("orders", body["prefetch"]["orders"])
    assert entry.state is PrefetchState.PRESENT
    assert not entry.complete
    prefetch = Prefetch({"orders": entry})
    assert prefetch.get("orders") is not None  # lenient read sees the first page
    with pytest.raises(PrefetchUnavailable, match="'orders'"):
        prefetch.require("orders")
    assert len(prefetch.resources("orders", required=False)) == 1


def test_bundle_with_error_outcome_is_missing_but_warnings_are_fine() -> None:
    error = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}
    warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning"}]}
    procedure = {"resourceType": "Procedure", "id": "p1"}
    bad = {"resourceType": "Bundle", "entry": [{"resource": procedure}, {"resource": error}]}
    ok = {"resourceType": "Bundle", "entry": [{"resource": procedure}, {"resource": warning}]}
    assert classify_prefetch_value("p", bad).state is PrefetchState.MISSING
    entry = classify_prefetch_value("p", ok)
    assert Prefetch({"p": entry}).resources("p") == [procedure]


def test_absent_null_and_present_are_told_apart() -> None:
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "encounter": "Encounter/{{context.encounterId}}",
        "procedures": "Procedure?patient={{context.patientId}}",
    }
    context = {"userId": "Practitioner/1", "patientId": "1"}
    prefetch = Prefetch(
        initial_entries(
            templates, {"patient": {"resourceType": "Patient"}, "procedures": None}, context
        )
    )
    assert prefetch.is_present("patient")
    assert prefetch.is_null("procedures")
    assert prefetch.is_missing("encounter")
    assert prefetch.require("procedures") is None
    assert prefetch.resources("procedures") == []
    assert prefetch.get("encounter") is None
    with pytest.raises(PrefetchUnavailable) as caught:
        prefetch.require("encounter")
    assert caught.value.key == "encounter"
    assert "context.encounterId" in caught.value.diagnostics
    assert prefetch.is_missing("never-declared")
    assert "Patient" not in repr(prefetch)  # reprs carry states, not data


def test_request_repr_hides_patient_data_and_token() -> None:
    from cds_hooks import CdsRequest

    request = CdsRequest.model_validate(
        {
            "hook": "order-sign",
            "hookInstance": "h",
            "context": {"patientId": "SECRET-PATIENT"},
            "fhirAuthorization": {"access_token": "SECRET-TOKEN", "token_type": "Bearer"},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "SECRET-PATIENT"}},
        }
    )
    for text in (repr(request), str(request), f"{request}"):
        assert "SECRET" not in text
