"""Every spec example request, re-targeted at a probe service, gives 200/400/412 (never 5xx);
the spec's response examples round-trip through the wire models with nothing null or empty.

Fixtures are read in place from the shared reference folder (skipped when absent).
"""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import anyio
import httpx
import orjson
import pytest
from cdsh_support import make_app, spec_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from cds_hooks import (
    Action,
    CdsResponse,
    Coding,
    DiscoveryResponse,
    ServiceDescriptor,
    Source,
)
from cds_hooks.models import Card, Link, Suggestion, WireModel, prune

HOOK_INSTANCE = "3c6c4e1a-0a41-4a4b-9f6b-7f1a8f0a2b11"


def wrap(hook: str, fragment: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"hook": hook, "hookInstance": HOOK_INSTANCE, **fragment, **extra}


def context_of(name: str) -> dict[str, Any]:
    return dict(spec_json(name)["context"])


# (example id, builder, expected status). Builders run inside the test so a missing fixture
# folder skips rather than errors at collection.
REQUESTS: list[tuple[str, Any, int]] = [
    ("spec2.0 patient-view", lambda: spec_json("spec-2.0/spec2.0-request-patient-view.json"), 200),
    (
        "spec2.0 request with extension (no patientId)",
        lambda: spec_json("spec-2.0/spec2.0-request-with-extension.json"),
        400,
    ),
    (
        "docs order-select radiology",
        lambda: spec_json("cds-hooks-docs/docs-request-order-select-radiology.json"),
        200,
    ),
    (
        "docs quickstart patient-view",
        lambda: spec_json("cds-hooks-docs/quickstart-request-patient-view.json"),
        200,
    ),
    (
        "3.0-ballot order-sign paginated prefetch (no patient key)",
        lambda: spec_json(
            "spec-3.0.0-ballot/spec3.0ballot-request-order-sign-paginated-prefetch.json"
        ),
        412,
    ),
    (
        "legacy order-sign without draftOrders",
        lambda: spec_json("legacy-nonconformant/legacy-request-order-sign-opioid.json"),
        400,
    ),
    (
        "library order-sign R4 context, nothing prefetched",
        lambda: wrap("order-sign", spec_json("hooks/order-sign-context-R4.json")),
        412,
    ),
    (
        "library order-sign R4 context, patient null",
        lambda: wrap(
            "order-sign", spec_json("hooks/order-sign-context-R4.json"), prefetch={"patient": None}
        ),
        200,
    ),
    (
        "library order-sign STU3 context + spec prefetch data",
        lambda: wrap(
            "order-sign",
            spec_json("hooks/order-sign-context-STU3.json"),
            **spec_json("spec-2.0/spec2.0-prefetch-data.json"),
        ),
        200,
    ),
    (
        "library order-sign DSTU2 fragment + 3.0 user-bundle prefetch",
        lambda: wrap(
            "order-sign",
            spec_json("hooks/order-sign-context-DSTU2.fragment.txt"),
            **spec_json("spec-3.0.0-ballot/spec3.0ballot-prefetch-data-user-bundle.json"),
        ),
        200,
    ),
    (
        "library encounter-discharge fragment",
        lambda: wrap(
            "encounter-discharge", spec_json("hooks/encounter-discharge-context.fragment.txt")
        ),
        200,
    ),
    (
        "spec2.0 draftOrders context (no userId/patientId)",
        lambda: wrap("order-sign", spec_json("spec-2.0/spec2.0-context-draftOrders.json")),
        400,
    ),
    (
        "spec2.0 draftOrders context with medicationRequestId",
        lambda: wrap(
            "order-sign",
            spec_json("spec-2.0/spec2.0-context-draftOrders-with-medicationRequestId.json"),
        ),
        400,
    ),
    (
        "spec2.0 patientId context as patient-view (no userId)",
        lambda: wrap("patient-view", spec_json("spec-2.0/spec2.0-context-patientId.json")),
        400,
    ),
    (
        "spec2.0 fhirAuthorization on an order-sign request",
        lambda: wrap(
            "order-sign",
            spec_json("hooks/order-sign-context-R4.json"),
            fhirServer="https://ehr.example.org/fhir",
            prefetch={"patient": {"resourceType": "Patient", "id": "1288992"}},
            **spec_json("spec-2.0/spec2.0-fhirAuthorization.json"),
        ),
        200,
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "build", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
async def test_spec_request_examples(name: str, build: Any, expected: int) -> None:
    body = build()
    hook = body.get("hook", "order-sign")
    app = make_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post(f"/cds-services/probe-{hook}", json=body)
    assert response.status_code in (200, 400, 412), name
    assert response.status_code == expected, response.text


# ---------------------------------------------------------------- responses round-trip


def assert_nothing_null_or_empty(value: Any, path: str = "$") -> None:
    """A-2, A-3: no null and no empty string/array/object, except top-level cards/services."""
    if isinstance(value, dict):
        assert value, f"empty object at {path}"
        for key, item in value.items():
            if path == "$" and key in ("cards", "services") and item == []:
                continue
            assert_nothing_null_or_empty(item, f"{path}.{key}")
    elif isinstance(value, list):
        assert value, f"empty array at {path}"
        for index, item in enumerate(value):
            assert_nothing_null_or_empty(item, f"{path}[{index}]")
    else:
        assert value is not None, f"null at {path}"
        assert value != "", f"empty string at {path}"


ROUND_TRIPS: list[tuple[str, type[BaseModel], Any]] = [
    ("spec-2.0/spec2.0-response-cards.json", CdsResponse, None),
    ("spec-2.0/spec2.0-response-empty-cards.json", CdsResponse, None),
    ("spec-2.0/spec2.0-discovery-response.json", DiscoveryResponse, None),
    ("spec-2.0/spec2.0-discovery-response-with-extension.json", DiscoveryResponse, None),
    ("spec-2.0/spec2.0-action-create.json", Action, None),
    ("spec-2.0/spec2.0-action-update.json", Action, None),
    ("spec-2.0/spec2.0-action-delete.json", Action, None),
    ("spec-2.0/spec2.0-card-source.json", Source, "source"),
]


@pytest.mark.parametrize(("name", "model", "member"), ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_spec_responses_round_trip(name: str, model: type[BaseModel], member: str | None) -> None:
    original = spec_json(name)
    if member is not None:
        original = original[member]
    parsed = model.model_validate(original)
    dumped = parsed.model_dump(mode="json", by_alias=True)
    assert dumped == original
    assert_nothing_null_or_empty(dumped)
    # The response path (to_wire / encode) gives the very same object.
    assert cast(WireModel, parsed).to_wire() == original
    assert json.loads(cast(WireModel, parsed).encode()) == original


def test_sandbox_service_definitions_round_trip() -> None:
    for entry in spec_json("sandbox/sandbox-services-definitions-array.json"):
        dumped = ServiceDescriptor.model_validate(entry).model_dump(mode="json", by_alias=True)
        assert dumped == entry


def test_override_reasons_round_trip() -> None:
    reasons = spec_json("spec-2.0/spec2.0-card-overrideReasons.json")["overrideReasons"]
    for reason in reasons:
        assert Coding.model_validate(reason).model_dump(mode="json", by_alias=True) == reason


@pytest.mark.parametrize(
    "name",
    [
        "spec-2.0/spec2.0-response-systemActions.json",
        "cds-hooks-docs/docs-response-systemActions-pama.json",
    ],
)
def test_system_actions_without_description_are_refused(name: str) -> None:
    """R-21: the spec's own systemActions examples omit action.description; we always send it,
    so our outgoing model refuses to build such an action rather than emit it."""
    with pytest.raises(ValidationError) as caught:
        CdsResponse.model_validate(spec_json(name))
    assert {e["loc"][-1] for e in caught.value.errors()} == {"description"}


def test_autolaunchable_example_lacks_the_required_indicator() -> None:
    """R-7 vs R-30: the 2.0.1 autolaunchable example card has no indicator, which is REQUIRED;
    the link part is valid and round-trips."""
    body = spec_json("spec-2.0.1/spec2.0.1-response-autolaunchable.json")
    with pytest.raises(ValidationError) as caught:
        CdsResponse.model_validate(body)
    assert [e["loc"][-1] for e in caught.value.errors()] == ["indicator"]
    fixed = copy.deepcopy(body)
    fixed["cards"][0]["indicator"] = "info"
    dumped = CdsResponse.model_validate(fixed).model_dump(mode="json", by_alias=True)
    assert dumped == fixed
    assert dumped["cards"][0]["links"][0]["autolaunchable"] is True


def test_nonconformant_cards_are_refused_or_cleaned() -> None:
    with pytest.raises(ValidationError):  # 'success' is not an indicator
        CdsResponse.model_validate(
            spec_json("legacy-nonconformant/quickstart-response-indicator-success.json")
        )
    with pytest.raises(ValidationError):  # source is required
        Card.model_validate(spec_json("legacy-nonconformant/legacy-card-opioid-no-source.json"))
    with pytest.raises(ValidationError):  # B-4: 'name' is not a spec member, 'title' missing
        DiscoveryResponse.model_validate(
            spec_json("legacy-nonconformant/quickstart-discovery-name-not-title.json")
        )
    card = Card.model_validate(spec_json("legacy-nonconformant/quickstart-card-url-null.json"))
    dumped = card.model_dump(mode="json", by_alias=True)
    assert "url" not in dumped["source"]  # the null is dropped, never sent
    assert_nothing_null_or_empty(dumped)


# ---------------------------------------------------------------- fuzz: never a 5xx

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "hook": st.sampled_from(["order-sign", "patient-view"]) | json_values,
        "hookInstance": st.uuids().map(str) | json_values,
        "context": st.fixed_dictionaries(
            {},
            optional={
                "userId": st.just("Practitioner/1") | json_values,
                "patientId": st.just("1") | json_values,
                "draftOrders": st.just({"resourceType": "Bundle"}) | json_values,
            },
        )
        | json_values,
        "prefetch": st.dictionaries(st.sampled_from(["patient", "encounter"]), json_values)
        | json_values,
        "fhirServer": json_values,
        "fhirAuthorization": json_values,
    },
)


FUZZ_APP = make_app()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=request_like | json_values)
def test_arbitrary_bodies_never_5xx(body: Any) -> None:
    app = FUZZ_APP

    async def post() -> int:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            response = await c.post(
                "/cds-services/probe-order-sign",
                content=json.dumps(copy.deepcopy(body)),
                headers={"content-type": "application/json"},
            )
            return response.status_code

    assert anyio.run(post) in (200, 400, 412)


_text = st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=5))
_json = st.recursive(
    st.one_of(
        st.none(),
        st.just(""),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=3),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    detail=_text,
    uuid=_text,
    resource=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), _json, max_size=4)),
    recommended=st.one_of(st.none(), st.booleans()),
    context=_text,
)
def test_every_form_of_the_wire_agrees(
    detail: str | None,
    uuid: str | None,
    resource: dict[str, Any] | None,
    recommended: bool | None,
    context: str | None,
) -> None:
    """to_wire(), model_dump and the encoded bytes are one wire object for every shape of
    optional and empty member, free-form resources pruned all the way down (A-2..A-4); the
    bytes are the ones orjson writes for that object (the encoder before pydantic-core's)."""
    action = Action(type="update", description="d", resource=resource, resourceId=uuid)
    card = Card(
        summary="s",
        indicator="info",
        source={"label": "l", "url": uuid},
        uuid=uuid,
        detail=detail,
        suggestions=(
            Suggestion(label="x", uuid=uuid, isRecommended=recommended, actions=(action,)),
        ),
        selectionBehavior="at-most-one",
        links=(Link(label="l", url="https://x", type="smart", appContext=context),),
    )
    response = CdsResponse(cards=(card,), systemActions=(action,))
    wire = response.to_wire()
    assert wire == response.model_dump(mode="json", by_alias=True)
    assert response.encode() == orjson.dumps(wire)
    assert_nothing_null_or_empty(wire)
    if resource is not None:
        assert wire["systemActions"][0].get("resource", {}) == prune(resource)


def test_an_empty_response_still_sends_cards() -> None:
    assert CdsResponse(cards=()).encode() == b'{"cards":[]}'
    assert DiscoveryResponse(services=()).encode() == b'{"services":[]}'


def _reference_prune(value: Any) -> Any:
    """The definition of A-2..A-4 pruning, written plainly."""
    if isinstance(value, dict):
        kept = {k: _reference_prune(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None and v != "" and v != [] and v != {}}
    if isinstance(value, list | tuple):
        kept_items = [_reference_prune(v) for v in value]
        return [v for v in kept_items if v is not None and v != "" and v != [] and v != {}]
    return value


@settings(max_examples=300, deadline=None)
@given(value=_json)
def test_prune_matches_its_definition(value: Any) -> None:
    assert prune(value) == _reference_prune(value)
