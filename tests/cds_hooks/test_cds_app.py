"""HTTP surface: discovery (B-*), invocation (C-*, H-*), feedback (F-*), errors without echo."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema_rs
import pytest
from cdsh_support import (
    MARKER,
    PATIENT_ID,
    MemoryFeedbackStore,
    make_app,
    order_sign_request,
    probe_registry,
    spec_json,
)

from cds_hooks import (
    CdsHooksConfig,
    CdsResponse,
    CdsService,
    InvalidRequest,
    Invocation,
    Prefetch,
    ServiceRegistry,
)
from cds_hooks.runtime import CallEvent

pytestmark = pytest.mark.anyio

POST_URL = "/cds-services/probe-order-sign"


def outcome_text(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert issue["code"]
    return str(issue["diagnostics"])


# ---------------------------------------------------------------- discovery


@pytest.mark.parametrize("path", ["/cds-services", "/cds-services/"])
async def test_discovery_lists_every_service(client: httpx.AsyncClient, path: str) -> None:
    """B-1, B-2, B-4, B-5: services with hook/id/title/description/prefetch, no nulls."""
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    services = response.json()["services"]
    ids = [s["id"] for s in services]
    assert ids == [
        "probe-order-sign",
        "probe-patient-view",
        "probe-order-select",
        "probe-encounter-discharge",
    ]
    first = services[0]
    assert first["hook"] == "order-sign"
    assert first["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert "usageRequirements" not in first  # optional and unset: omitted
    assert "null" not in response.text


async def test_discovery_with_no_services_is_an_empty_array() -> None:
    """B-3: a server without services still answers 200 with services: []."""
    app = make_app(ServiceRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/cds-services")
    assert response.json() == {"services": []}


async def test_discovery_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.post("/cds-services", content=b"{}")
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    outcome_text(response)


async def test_openapi_documents_the_endpoints() -> None:
    schema = make_app().openapi()
    assert "/cds-services" in schema["paths"]
    assert "post" in schema["paths"]["/cds-services/{service_id}/feedback"]
    # each service at its own path, with its own request body, instead of one template
    assert "/cds-services/{service_id}" not in schema["paths"]
    operation = schema["paths"][POST_URL]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["hook"] == {"const": "order-sign"}
    assert set(body["properties"]["context"]["required"]) >= {"patientId", "draftOrders"}
    assert operation["operationId"] == "invoke_probe-order-sign"


async def test_services_registered_after_installation_are_documented() -> None:
    registry = probe_registry()
    app = make_app(registry)

    @registry.service(
        id="late-sign", hook="order-sign", title="Late", description="registered after install"
    )
    async def late(invocation: Invocation) -> CdsResponse:
        return CdsResponse(cards=())

    operation = app.openapi()["paths"]["/cds-services/late-sign"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["hook"] == {"const": "order-sign"}
    assert body["properties"]["context"]["required"] == ["userId", "patientId", "draftOrders"]
    assert body["properties"]["context"]["properties"]["draftOrders"]["type"] == "object"
    assert operation["description"] == "registered after install"


# ---------------------------------------------------------------- invocation


@pytest.mark.parametrize("path", [POST_URL, POST_URL + "/"])
async def test_valid_order_sign_gives_cards(client: httpx.AsyncClient, path: str) -> None:
    response = await client.post(path, json=order_sign_request())
    assert response.status_code == 200
    cards = response.json()["cards"]
    assert cards[0]["summary"].startswith("probe-order-sign")


async def test_sandbox_shaped_request_is_accepted(client: httpx.AsyncClient) -> None:
    """A-5 and SANDBOX.md §3: no encounterId, no fhirAuthorization, Bundle without type,
    unknown context member (selections), extension, invalid-ish FHIR."""
    body = order_sign_request(extension={"com.example.x": 1}, unknownMember=True)
    body["context"]["selections"] = ["ServiceRequest/example-request-id"]
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "entry": [{"resource": {"resourceType": "MedicationRequest", "category": {}}}],
    }
    response = await client.post(POST_URL, json=body)
    assert response.status_code == 200


async def test_missing_required_prefetch_is_412_naming_the_key(
    client: httpx.AsyncClient,
) -> None:
    """P-7, P-13: absent key, no FHIR access -> 412 OperationOutcome naming the key."""
    body = order_sign_request()
    del body["prefetch"]
    response = await client.post(POST_URL, json=body)
    assert response.status_code == 412
    text = outcome_text(response)
    assert "'patient'" in text
    assert PATIENT_ID not in response.text


async def test_null_prefetch_is_present_and_empty(client: httpx.AsyncClient) -> None:
    """P-8: null is satisfied (no such resource) -> handler runs, no 412."""
    response = await client.post(POST_URL, json=order_sign_request(prefetch={"patient": None}))
    assert response.status_code == 200


async def test_operation_outcome_prefetch_is_missing(client: httpx.AsyncClient) -> None:
    """P-9: an OperationOutcome is not data -> missing -> 412 without FHIR access."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}
    response = await client.post(POST_URL, json=order_sign_request(prefetch={"patient": outcome}))
    assert response.status_code == 412
    assert "OperationOutcome" in outcome_text(response)


# each row: (what is wrong, raw body, fragment expected in diagnostics, status)
BAD_REQUESTS: list[tuple[str, bytes, str, int]] = [
    ("malformed JSON", b'{"hook": "order-sign", "x": "' + MARKER.encode() + b'"', "JSON", 400),
    ("not an object", json.dumps([MARKER]).encode(), "JSON object", 400),
    ("empty body", b"", "empty", 400),
    (
        "missing hookInstance",
        json.dumps({**order_sign_request(note=MARKER), "hookInstance": None}).encode(),
        "hookInstance",
        400,
    ),
    (
        "hook/id mismatch",
        json.dumps(order_sign_request(hook=MARKER)).encode(),
        "'order-sign'",
        400,
    ),
    (
        "context not an object",
        json.dumps(order_sign_request(context=MARKER)).encode(),
        "context",
        400,
    ),
    (
        "context.draftOrders missing",
        json.dumps(order_sign_request(context={"userId": MARKER, "patientId": MARKER})).encode(),
        "context.draftOrders",
        400,
    ),
    (
        "context.patientId not a string",
        json.dumps(
            order_sign_request(context={"userId": "x", "patientId": [MARKER], "draftOrders": {}})
        ).encode(),
        "context.patientId",
        400,
    ),
    (
        "fhirAuthorization without token",
        json.dumps(order_sign_request(fhirAuthorization={"token_type": MARKER})).encode(),
        "fhirAuthorization.access_token",
        400,
    ),
    (
        "hook not a string",
        json.dumps(order_sign_request(hook={"x": MARKER})).encode(),
        "hook",
        400,
    ),
]


@pytest.mark.parametrize(
    ("what", "raw", "expected", "status"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS]
)
async def test_bad_requests_say_where_and_never_echo(
    client: httpx.AsyncClient, what: str, raw: bytes, expected: str, status: int
) -> None:
    response = await client.post(
        POST_URL, content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, what
    assert expected in outcome_text(response), what
    assert MARKER not in response.text
    assert PATIENT_ID not in response.text


async def test_unknown_service_is_404_without_echo(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/cds-services/{MARKER}", json=order_sign_request())
    assert response.status_code == 404
    outcome_text(response)
    assert MARKER not in response.text


async def test_unknown_deeper_path_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/cds-services/a/b/c")
    assert response.status_code == 404
    outcome_text(response)


async def test_get_on_a_service_is_405(client: httpx.AsyncClient) -> None:
    response = await client.get(POST_URL)
    assert response.status_code == 405
    assert response.headers["allow"].startswith("POST")


async def test_oversized_body_is_413() -> None:
    app = make_app(config=CdsHooksConfig(require_auth=False, max_request_bytes=64))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post(POST_URL, json=order_sign_request())
    assert response.status_code == 413


def crashing_registry(error: BaseException | None, returns: Any = None) -> ServiceRegistry:
    registry = ServiceRegistry()

    @registry.service(id="boom", hook="order-sign", title="Boom", description="crashes")
    async def boom(invocation: Invocation) -> CdsResponse:
        if error is not None:
            raise error
        return returns  # type: ignore[no-any-return]

    return registry


@pytest.mark.parametrize(
    ("error", "returns"),
    [
        (KeyError(f"{PATIENT_ID} {MARKER}"), None),
        (RuntimeError(MARKER), None),
        (None, {"cards": []}),  # wrong return type is a crash too, not a 200
    ],
    ids=["KeyError", "RuntimeError", "wrong-return-type"],
)
async def test_handler_crash_is_500_never_empty_cards(error: Exception, returns: Any) -> None:
    app = make_app(crashing_registry(error, returns))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post("/cds-services/boom", json=order_sign_request())
    assert response.status_code == 500
    assert "internal error" in outcome_text(response)
    assert MARKER not in response.text
    assert PATIENT_ID not in response.text


async def test_handler_may_raise_invalid_request() -> None:
    app = make_app(crashing_registry(InvalidRequest("draftOrders has no ServiceRequest")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post("/cds-services/boom", json=order_sign_request())
    assert response.status_code == 400
    assert "ServiceRequest" in outcome_text(response)


async def documented_body(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    """The request body schema the app's OpenAPI document gives for ``POST path``."""
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"][path]["post"]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


# ---------------------------------------------------------------- feedback


async def test_feedback_is_accepted_and_idempotent() -> None:
    """F-2..F-8: 200 {} each time; the store sees the repeat as nothing new."""
    store = MemoryFeedbackStore()
    app = make_app(store=store)
    body = spec_json("spec-2.0.1/spec2.0.1-feedback-accepted.json")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        first = await c.post("/cds-services/probe-order-sign/feedback", json=body)
        second = await c.post("/cds-services/probe-order-sign/feedback", json=body)
    assert (first.status_code, first.json()) == (200, {})
    assert (second.status_code, second.json()) == (200, {})
    assert len(store.items) == 1


@pytest.mark.parametrize(
    "name",
    [
        "spec-2.0.1/spec2.0.1-feedback-accepted.json",
        "spec-2.0.1/spec2.0.1-feedback-overridden-no-reason.json",
        "spec-2.0.1/spec2.0.1-feedback-overridden-with-reason.json",
    ],
)
async def test_spec_feedback_examples_are_accepted(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/cds-services/probe-order-sign/feedback", json=spec_json(name))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        {"access_token": "t", "token_type": "Bearer"},
        {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "x"},
        {"access_token": "t", "token_type": "Bearer", "patient": None, "subject": "s"},
        {"access_token": "t", "token_type": "Bearer", "other": [1]},
        {},
        {"access_token": "t"},
        {"access_token": 5, "token_type": "Bearer"},
        {"access_token": "t", "token_type": "Bearer", "scope": 7},
        {"access_token": "t", "token_type": "Bearer", "expires_in": "soon"},
        {"access_token": "t", "token_type": "Bearer", "expires_in": "300"},
        {"access_token": "t", "token_type": "Bearer", "expires_in": True},
        {"access_token": "t", "token_type": "Bearer", "expires_in": 300.0},
        {"access_token": "t", "token_type": "Bearer", "expires_in": 2.5},
        None,
        "t",
    ],
)
async def test_documented_fhir_authorization_and_the_service_agree(
    client: httpx.AsyncClient, authorization: object
) -> None:
    """``fhirAuthorization`` values the OpenAPI document allows are accepted; others are 400."""
    schema = await documented_body(client, POST_URL)
    documented = jsonschema_rs.validator_for(schema["properties"]["fhirAuthorization"])
    body = {**order_sign_request(), "fhirAuthorization": authorization}
    response = await client.post(POST_URL, json=body)
    assert response.status_code == (200 if documented.is_valid(authorization) else 400)


@pytest.mark.parametrize(
    "value",
    [
        "P1",
        " P1 ",
        "",
        " ",
        "\t\n",
        "\x1c\x1f",
        "\x85",
        "\u00a0",
        "\u2003",
        "\ufeff",
        "\u200b",
        "\x00",
    ],
)
async def test_documented_blank_strings_and_the_service_agree(
    client: httpx.AsyncClient, value: str
) -> None:
    """Python's regex engine and the document's JSON Schema pattern call the same strings blank."""
    schema = await documented_body(client, POST_URL)
    documented = jsonschema_rs.validator_for(
        schema["properties"]["context"]["properties"]["patientId"]
    )
    request = order_sign_request()
    body = {**request, "context": {**request["context"], "patientId": value}}
    response = await client.post(POST_URL, json=body)
    if documented.is_valid(value):
        assert response.status_code != 400
    else:
        assert response.status_code == 400
        assert "patientId" in outcome_text(response)


_CONTEXT_VALUES: list[object] = [
    "ServiceRequest/1",
    "",
    "\u3000",
    5,
    True,
    None,
    [],
    ["ServiceRequest/1"],
    {},
    {"resourceType": "Bundle", "entry": []},
    {"entry": []},
    {"resourceType": "Patient"},
    {"resourceType": 5},
]


@pytest.mark.parametrize("value", _CONTEXT_VALUES)
@pytest.mark.parametrize("member", ["patientId", "selections", "draftOrders"])
async def test_documented_context_members_and_the_service_agree(
    client: httpx.AsyncClient, member: str, value: object
) -> None:
    """Each kind of context member (an id, an array, a Bundle; ``CONTEXT_KINDS``): a request
    the service's documented body allows is answered, one it refuses is a 400 naming the
    member."""
    path = "/cds-services/probe-order-select"
    documented = jsonschema_rs.validator_for(await documented_body(client, path))
    body = {
        "hook": "order-select",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/example",
            "patientId": PATIENT_ID,
            "selections": ["ServiceRequest/1"],
            "draftOrders": {"resourceType": "Bundle", "entry": []},
            member: value,
        },
    }
    response = await client.post(path, json=body)
    if documented.is_valid(body):
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert f"context.{member}" in outcome_text(response)


_ITEM = {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2025-03-04T10:00:00Z"}
_OVERRIDDEN = {**_ITEM, "outcome": "overridden"}


@pytest.mark.parametrize(
    "body",
    [
        {"feedback": []},
        {"feedback": [_ITEM]},
        {"feedback": [{**_ITEM, "acceptedSuggestions": [{"id": "s1"}]}]},
        {"feedback": [{**_ITEM, "acceptedSuggestions": None}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"reason": {"code": "x"}}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"userComment": "seen"}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": None}]},
        {"feedback": [{**_ITEM, "extension": {"example": True}}], "extension": {}},
        {"feedback": [{**_ITEM, "accepted_suggestions": 5}]},  # an unknown member, kept
        {},
        {"feedback": {}},
        {"feedback": [{}]},
        {"feedback": [{"card": "c", "outcome": "accepted", "outcome_timestamp": "x"}]},
        {"feedback": [{**_ITEM, "outcome": "ignored"}]},
        {"feedback": [{**_ITEM, "card": 5}]},
        {"feedback": [{**_ITEM, "acceptedSuggestions": [{}]}]},
        {"feedback": [{**_ITEM, "acceptedSuggestions": "s1"}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"userComment": 5}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": "busy"}]},
        # limits (issue 17 item 9): the same on every database, stated in the document
        {"feedback": [{**_ITEM, "card": "c" * 128}]},
        {"feedback": [{**_ITEM, "card": "c" * 129}]},
        {"feedback": [{**_ITEM, "card": "c\x00"}]},
        {"feedback": [{**_ITEM, "outcomeTimestamp": "2025-03-04T10:00:00.123456789+05:30"}]},
        {"feedback": [{**_ITEM, "outcomeTimestamp": "2" * 41}]},
        {"feedback": [{**_ITEM, "acceptedSuggestions": [{"id": "s" * 128}]}]},
        {"feedback": [{**_ITEM, "acceptedSuggestions": [{"id": "s" * 129}]}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"reason": {"code": "x" * 128}}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"reason": {"code": "x" * 129}}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"reason": {"system": "s" * 255}}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"reason": {"system": "s" * 256}}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"reason": {"system": {"s": "x"}}}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"reason": {"code": 5}}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"reason": {"display": "No"}}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"userComment": "c" * 4096}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"userComment": "c" * 4097}}]},
        {"feedback": [{**_OVERRIDDEN, "overrideReason": {"userComment": "a\x00b"}}]},
        {"feedback": [_ITEM, {**_ITEM, "card": "c" * 129}]},
    ],
)
async def test_documented_feedback_schema_and_the_service_agree(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    """A feedback body the OpenAPI document allows is stored (200); one it refuses is a 400."""
    schema = await documented_body(client, "/cds-services/{service_id}/feedback")
    documented = jsonschema_rs.validator_for(schema).is_valid(body)
    response = await client.post("/cds-services/probe-order-sign/feedback", json=body)
    assert response.status_code == (200 if documented else 400)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"feedback": [{"card": "c", "outcome": MARKER, "outcomeTimestamp": "x"}]}, "outcome"),
        ({"feedback": [{"outcome": "accepted", "outcomeTimestamp": MARKER}]}, "card"),
        ({"feedback": MARKER}, "feedback"),
        ({MARKER: []}, "feedback"),
    ],
)
async def test_bad_feedback_is_400_without_echo(
    client: httpx.AsyncClient, body: dict[str, Any], where: str
) -> None:
    response = await client.post("/cds-services/probe-order-sign/feedback", json=body)
    assert response.status_code == 400
    assert where in outcome_text(response)
    assert MARKER not in response.text


async def test_feedback_items_are_stored_or_refused_each_on_its_own() -> None:
    """Issue 17 item 9: one item over a limit lost the whole batch. Now the valid items are
    stored and the 400 names each refused item and the limit it broke, and says how many
    were stored."""
    store = MemoryFeedbackStore()
    app = make_app(store=store)
    batch = [
        {**_ITEM, "card": "first"},
        {**_ITEM, "card": MARKER * 20},
        {**_OVERRIDDEN, "card": "third", "overrideReason": {"reason": {"code": "x" * 129}}},
        {**_OVERRIDDEN, "card": "fourth", "overrideReason": {"userComment": MARKER + "\x00"}},
        {**_ITEM, "card": "fifth"},
        MARKER,
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post(POST_URL + "/feedback", json={"feedback": batch})
        again = await c.post(POST_URL + "/feedback", json={"feedback": batch})
    assert response.status_code == 400
    assert sorted(key[1] for key in store.items) == ["fifth", "first"]
    issues = response.json()["issue"]
    assert [i["diagnostics"] for i in issues[:-1]] == [
        "member 'feedback[1].card' is too long (at most 128 characters)",
        "member 'feedback[2].overrideReason.reason.code' is too long (at most 128 characters)",
        "member 'feedback[3].overrideReason.userComment' must not contain the NUL character "
        "(U+0000)",
        "member 'feedback[5]' must be a JSON object",
    ]
    assert issues[-1]["severity"] == "information"
    assert issues[-1]["diagnostics"].startswith("2 of 6 item(s) were stored; the 4 listed")
    assert MARKER not in response.text
    assert again.json() == response.json()  # a resend stores nothing twice (F-8)
    assert len(store.items) == 2


async def test_a_batch_of_refused_items_lists_at_most_fifty(client: httpx.AsyncClient) -> None:
    batch = [{**_ITEM, "card": "c" * 129}] * 120
    response = await client.post(POST_URL + "/feedback", json={"feedback": batch})
    assert response.status_code == 400
    issues = response.json()["issue"]
    assert len(issues) == 52
    assert issues[50]["diagnostics"] == "and 70 more refused item(s)"
    assert issues[51]["diagnostics"].startswith("0 of 120 item(s) were stored")


async def test_feedback_for_unknown_service_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/cds-services/nope/feedback", json={"feedback": []})
    assert response.status_code == 404


async def test_feedback_store_crash_is_500() -> None:
    class BrokenStore(MemoryFeedbackStore):
        def record(self, service_id: str, items: Any) -> int:
            raise OSError(MARKER)

    app = make_app(store=BrokenStore())
    body = spec_json("spec-2.0.1/spec2.0.1-feedback-accepted.json")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post("/cds-services/probe-order-sign/feedback", json=body)
    assert response.status_code == 500
    assert MARKER not in response.text


async def test_owned_http_client_is_closed_at_shutdown() -> None:
    from fastapi import FastAPI

    from cds_hooks import CdsHooks, install_cds_hooks

    runtime = CdsHooks(probe_registry(), CdsHooksConfig(require_auth=False), MemoryFeedbackStore())
    app = FastAPI(lifespan=runtime.lifespan)
    install_cds_hooks(app, runtime)
    closed: list[bool] = []
    original = runtime.aclose

    async def spy() -> None:
        closed.append(True)
        await original()

    runtime.aclose = spy  # type: ignore[method-assign]
    async with app.router.lifespan_context(app):
        assert not closed
    assert closed == [True]


class RecordingObserver:
    """A :class:`~cds_hooks.CallObserver` that writes down what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, int]] = []
        self.prefetch: list[tuple[str, dict[str, str]]] = []
        self.feedback: list[tuple[str, int, int]] = []

    def on_call(
        self, event: CallEvent, service: CdsService | None, status: int, seconds: float
    ) -> None:
        assert seconds >= 0
        self.calls.append((event, service.id if service else None, status))

    def on_prefetch(self, service: CdsService, prefetch: Prefetch) -> None:
        states = {key: prefetch.state(key).value for key in service.prefetch}
        self.prefetch.append((service.id, states))

    def on_feedback(self, service: CdsService, items: int, new: int) -> None:
        self.feedback.append((service.id, items, new))


async def test_call_observers_are_told_about_every_call() -> None:
    from fastapi import FastAPI

    from cds_hooks import CdsHooks, install_cds_hooks

    runtime = CdsHooks(probe_registry(), CdsHooksConfig(require_auth=False), MemoryFeedbackStore())
    observer = RecordingObserver()
    app = FastAPI()
    install_cds_hooks(app, runtime, observers=[observer])
    feedback = {"feedback": [{**_ITEM, "card": "c1"}, {**_ITEM, "card": 5}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/cds-services")).status_code == 200
        assert (await c.post(POST_URL, json=order_sign_request())).status_code == 200
        assert (await c.post(POST_URL, json={"hook": "order-sign"})).status_code == 400
        assert (await c.post("/cds-services/nope", json=order_sign_request())).status_code == 404
        assert (await c.get(POST_URL)).status_code == 405
        assert (await c.post(POST_URL + "/feedback", json=feedback)).status_code == 400
        assert (await c.post(POST_URL + "/feedback", json=feedback)).status_code == 400
    assert observer.calls == [
        ("discovery", None, 200),
        ("invoke", "probe-order-sign", 200),
        ("invoke", "probe-order-sign", 400),
        ("invoke", None, 404),
        ("invoke", "probe-order-sign", 405),
        ("feedback", "probe-order-sign", 400),
        ("feedback", "probe-order-sign", 400),
    ]
    assert observer.prefetch == [
        ("probe-order-sign", {"patient": "present", "encounter": "missing"})
    ]
    # the valid item of each batch is stored, once (F-8); the refused one is not counted
    assert observer.feedback == [("probe-order-sign", 1, 1), ("probe-order-sign", 1, 0)]


async def test_services_registered_after_install_are_discovered(
    client: httpx.AsyncClient,
) -> None:
    registry = ServiceRegistry()
    app = make_app(registry)

    @registry.service(id="late", hook="order-sign", title="Late", description="added later")
    async def late(invocation: Invocation) -> CdsResponse:
        return CdsResponse(cards=())

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/cds-services")
    assert [s["id"] for s in response.json()["services"]] == ["late"]


async def test_required_prefetch_is_checked_before_the_handler() -> None:
    called: list[bool] = []
    registry = ServiceRegistry()

    @registry.service(
        id="needs-procedures",
        hook="order-sign",
        title="N",
        description="D",
        prefetch={"procedures": "Procedure?patient={{context.patientId}}"},
        required_prefetch=("procedures",),
    )
    async def needs(invocation: Invocation) -> CdsResponse:
        called.append(True)
        return CdsResponse(cards=())

    app = make_app(registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        missing = await c.post("/cds-services/needs-procedures", json=order_sign_request())
        null = await c.post(
            "/cds-services/needs-procedures",
            json=order_sign_request(prefetch={"procedures": None}),
        )
    assert missing.status_code == 412
    assert "'procedures'" in outcome_text(missing)
    assert null.status_code == 200  # null is satisfied (P-8)
    assert called == [True]


@pytest.mark.parametrize("member", ["hook", "hookInstance", "context"])
async def test_absent_required_member_is_named(client: httpx.AsyncClient, member: str) -> None:
    body = order_sign_request()
    del body[member]
    response = await client.post(POST_URL, json=body)
    assert response.status_code == 400
    assert f"member '{member}' is required" in outcome_text(response)


# ---------------------------------------------------------------- path variants


async def test_path_variants_answer_alike() -> None:
    """``POST /cds-services/{id}`` (the service's own route), its trailing-slash and
    double-slash variants (the generic routes): same status, body and headers, and the
    application's own middleware (here one that stamps a header) runs on every path."""
    calls: list[str] = []

    class Stamp:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            calls.append(scope.get("path", ""))

            async def stamped(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"x-stamp", b"1")]
                await send(message)

            await self.app(scope, receive, stamped)

    app = make_app(config=CdsHooksConfig(require_auth=False, cors_origins=("https://ehr.test",)))
    app.add_middleware(Stamp)
    headers = {"Origin": "https://ehr.test"}
    answers = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for path in (POST_URL, POST_URL + "/", POST_URL.replace("/probe", "//probe")):
            for body in (order_sign_request(), {"hook": "order-sign"}):
                response = await c.post(path, json=body, headers=headers)
                answers.append(
                    (
                        response.status_code,
                        response.json(),
                        response.headers["x-stamp"],
                        response.headers["access-control-allow-origin"],
                        response.headers["content-type"],
                    )
                )
        unknown = await c.post("/cds-services/no-such-service", json=order_sign_request())
    assert answers[0][0] == 200
    assert answers[1][0] == 400
    assert answers[0:2] == answers[2:4] == answers[4:6]
    assert len(calls) == 7
    assert unknown.status_code == 404
    assert outcome_text(unknown)
