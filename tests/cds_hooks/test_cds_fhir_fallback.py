"""FHIR server fallback (P-1..P-13, C-9): respx stands in for the EHR's FHIR server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import respx
from cdsh_support import PATIENT_ID, MemoryFeedbackStore, spec_json

from cds_hooks import (
    Card,
    CdsHooks,
    CdsHooksConfig,
    CdsResponse,
    Invocation,
    ServiceRegistry,
    Source,
    install_cds_hooks,
    server_allowed,
)

pytestmark = pytest.mark.anyio

FHIR = "https://ehr.example.org/fhir"
TOKEN = "fhir-access-token-SECRET-41"
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "encounter": "Encounter/{{context.encounterId}}",
    "procedures": "Procedure?patient={{context.patientId}}&encounter={{context.encounterId}}",
    "carePlans": "CarePlan?patient={{context.patientId}}",
}
PATIENT = {"resourceType": "Patient", "id": PATIENT_ID}
ENCOUNTER = {"resourceType": "Encounter", "id": "enc-1"}


def searchset(*ids: str, next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Procedure", "id": i}} for i in ids],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def registry(extra_query: str | None = None) -> ServiceRegistry:
    reg = ServiceRegistry()

    @reg.service(id="fetcher", hook="order-sign", title="F", description="D", prefetch=PREFETCH)
    async def fetcher(invocation: Invocation) -> CdsResponse:
        prefetch = invocation.prefetch
        prefetch.require("patient")
        encounter = prefetch.require("encounter")
        procedures = prefetch.resources("procedures")
        plans = prefetch.resources("carePlans")
        extra = ""
        if extra_query is not None:
            assert invocation.fhir is not None
            found = await invocation.fhir.fetch(extra_query, key="extra")
            extra = f" extra={found is not None}"
        summary = (
            f"encounter={'null' if encounter is None else 'yes'} "
            f"procedures={len(procedures)} plans={len(plans)}{extra}"
        )
        return CdsResponse(
            cards=(Card(summary=summary, indicator="info", source=Source(label="t")),)
        )

    return reg


def request_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "order-sign",
        "hookInstance": "5b3f2a64-3c2b-4e4b-9a8e-0d1f2e3c4b5a",
        "fhirServer": FHIR,
        "fhirAuthorization": {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "therapy-cds",
        },
        "context": {
            "userId": "Practitioner/1",
            "patientId": PATIENT_ID,
            "encounterId": "enc-1",
            "draftOrders": {"resourceType": "Bundle"},
        },
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def config(**overrides: Any) -> CdsHooksConfig:
    fields: dict[str, Any] = {
        "require_auth": False,
        "fhir_server_allowlist": (FHIR,),
        "fhir_request_timeout_seconds": 1.0,
        "fhir_deadline_seconds": 2.0,
    }
    fields.update(overrides)
    return CdsHooksConfig(**fields)


async def post(
    body: dict[str, Any], cfg: CdsHooksConfig | None = None, **kw: Any
) -> httpx.Response:
    from fastapi import FastAPI

    app = FastAPI()
    async with httpx.AsyncClient() as pool:
        runtime = CdsHooks(registry(**kw), cfg or config(), MemoryFeedbackStore(), http_client=pool)
        install_cds_hooks(app, runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            return await client.post("/cds-services/fetcher", json=body)


def mock_all(mock: respx.MockRouter) -> dict[str, respx.Route]:
    return {
        "patient": mock.get(f"{FHIR}/Patient/{PATIENT_ID}").respond(json=PATIENT),
        "encounter": mock.get(f"{FHIR}/Encounter/enc-1").respond(json=ENCOUNTER),
        "procedures": mock.get(url__startswith=f"{FHIR}/Procedure?").respond(
            json=searchset("p1", "p2")
        ),
        "carePlans": mock.get(url__startswith=f"{FHIR}/CarePlan?").respond(
            json={"resourceType": "Bundle", "type": "searchset"}
        ),
    }


async def test_missing_keys_are_fetched_with_the_bearer_token() -> None:
    """P-7, P-12: absent keys come from fhirServer with Authorization: Bearer <token>."""
    with respx.mock() as mock:
        routes = mock_all(mock)
        response = await post(request_body())
    assert response.status_code == 200, response.text
    assert response.json()["cards"][0]["summary"] == "encounter=yes procedures=2 plans=0"
    for route in routes.values():
        assert route.call_count == 1
        assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    query = routes["procedures"].calls.last.request.url.params
    assert query["patient"] == PATIENT_ID
    assert query["encounter"] == "enc-1"


async def test_keys_are_fetched_in_parallel() -> None:
    in_flight = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1
        if "Patient/" in request.url.path:
            return httpx.Response(200, json=PATIENT)
        if "Encounter/" in request.url.path:
            return httpx.Response(200, json=ENCOUNTER)
        return httpx.Response(200, json=searchset())

    with respx.mock() as mock:
        mock.get(url__startswith=FHIR).mock(side_effect=slow)
        started = time.perf_counter()
        response = await post(request_body())
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert peak == 4
    assert elapsed < 0.6


async def test_null_key_is_not_fetched_and_present_key_is_used() -> None:
    """P-8: null means "no such data" -- satisfied, never refetched."""
    with respx.mock(assert_all_called=False) as mock:
        routes = mock_all(mock)
        response = await post(
            request_body(prefetch={"encounter": None, "patient": PATIENT, "carePlans": None})
        )
    assert response.status_code == 200
    assert response.json()["cards"][0]["summary"].startswith("encounter=null")
    assert routes["encounter"].call_count == 0
    assert routes["patient"].call_count == 0
    assert routes["carePlans"].call_count == 0
    assert routes["procedures"].call_count == 1


async def test_operation_outcome_key_is_refetched() -> None:
    """P-9: an OperationOutcome is not data; the key is fetched from the server."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}
    with respx.mock() as mock:
        routes = mock_all(mock)
        response = await post(request_body(prefetch={"patient": outcome}))
    assert response.status_code == 200
    assert routes["patient"].call_count == 1


async def test_search_pages_are_followed() -> None:
    """P-10: next links followed with the token, entries merged."""
    page2 = f"{FHIR}/Procedure?_page=2"
    page3 = f"{FHIR}/Procedure?_page=3"
    with respx.mock() as mock:
        routes = mock_all(mock)
        routes["procedures"].side_effect = [
            httpx.Response(200, json=searchset("p1", next_url=page2)),
            httpx.Response(200, json=searchset("p2", next_url=page3)),
            httpx.Response(200, json=searchset("p3")),
        ]
        response = await post(request_body())
    assert response.status_code == 200
    assert "procedures=3" in response.json()["cards"][0]["summary"]
    assert all(
        c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in routes["procedures"].calls
    )


async def test_prefetched_partial_page_is_completed() -> None:
    """P-10 on a prefetched searchset (the 3.0-ballot example shape)."""
    ballot = spec_json("spec-3.0.0-ballot/spec3.0ballot-request-order-sign-paginated-prefetch.json")
    first_page = ballot["prefetch"]["orders"]
    next_url = first_page["link"][1]["url"]
    assert next_url.startswith(FHIR)
    with respx.mock(assert_all_called=False) as mock:
        routes = mock_all(mock)
        page2 = mock.get(next_url).respond(json=searchset("p9"))
        response = await post(request_body(prefetch={"procedures": first_page}))
    assert response.status_code == 200
    assert "procedures=2" in response.json()["cards"][0]["summary"]
    assert page2.call_count == 1
    assert routes["procedures"].call_count == 0


async def test_page_bound_gives_412() -> None:
    with respx.mock() as mock:
        mock_all(mock)["procedures"].respond(json=searchset("p", next_url=f"{FHIR}/Procedure?x=1"))
        response = await post(request_body(), config(fhir_max_pages=3))
    assert response.status_code == 412
    assert "'procedures'" in response.text
    assert "more than 3 pages" in response.text


async def test_next_link_off_server_is_not_followed() -> None:
    evil = "https://ehr.example.org.evil.com/fhir/Procedure?_page=2"
    with respx.mock(assert_all_called=False) as mock:
        mock_all(mock)
        evil_route = mock.get(evil).respond(json=searchset("x"))
        response = await post(request_body(prefetch={"procedures": searchset("p1", next_url=evil)}))
    assert response.status_code == 412
    assert evil_route.call_count == 0
    assert "evil" not in response.text


async def test_timeout_gives_412_within_the_deadline() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200, json=PATIENT)

    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith=FHIR).mock(side_effect=hang)
        started = time.perf_counter()
        response = await post(
            request_body(), config(fhir_request_timeout_seconds=0.3, fhir_deadline_seconds=0.5)
        )
        elapsed = time.perf_counter() - started
    assert response.status_code == 412
    assert "did not answer in time" in response.text
    assert elapsed < 1.5


async def test_http_error_status_gives_412_without_the_url() -> None:
    with respx.mock() as mock:
        routes = mock_all(mock)
        routes["patient"].respond(status_code=503, json={"resourceType": "OperationOutcome"})
        response = await post(request_body())
    assert response.status_code == 412
    assert "'patient'" in response.text
    assert "HTTP 503" in response.text
    assert PATIENT_ID not in response.text
    assert TOKEN not in response.text


async def test_read_not_found_is_null() -> None:
    with respx.mock() as mock:
        routes = mock_all(mock)
        routes["encounter"].respond(status_code=404)
        response = await post(request_body())
    assert response.status_code == 200
    assert response.json()["cards"][0]["summary"].startswith("encounter=null")


@pytest.mark.parametrize(
    "server",
    [
        "https://ehr.example.org.evil.com/fhir",
        "https://evil.example/fhir",
        "https://ehr.example.org@evil.example/fhir",
        "http://ehr.example.org/fhir",
        "https://ehr.example.org:8443/fhir",
        "https://ehr.example.org/fhir-other",
        "https://ehr.example.org/fhir/../admin",
    ],
)
async def test_non_allowlisted_server_is_never_contacted(server: str) -> None:
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as mock:
        mock_all(mock)
        response = await post(request_body(fhirServer=server))
        assert mock.calls.call_count == 0
    assert response.status_code == 412
    assert "allowlist" in response.text
    assert "evil" not in response.text


async def test_no_fhir_authorization_means_no_call_unless_configured() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock_all(mock)
        response = await post(request_body(fhirAuthorization=None))
        assert mock.calls.call_count == 0
    assert response.status_code == 412
    assert "fhirAuthorization" in response.text

    with respx.mock() as mock:
        routes = mock_all(mock)
        response = await post(
            request_body(fhirAuthorization=None), config(allow_unauthenticated_fhir=True)
        )
    assert response.status_code == 200
    assert "Authorization" not in routes["patient"].calls.last.request.headers


async def test_handler_extra_query_uses_the_same_session() -> None:
    with respx.mock() as mock:
        mock_all(mock)
        extra = mock.get(url__startswith=f"{FHIR}/Encounter?").respond(json=searchset())
        response = await post(request_body(), extra_query="Encounter?patient=x&date=2025-01-01")
    assert response.status_code == 200
    assert response.json()["cards"][0]["summary"].endswith("extra=True")
    assert extra.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://ehr.example.org/fhir", True),
        ("https://ehr.example.org/fhir/", True),
        ("https://EHR.example.org./fhir/r4", True),
        ("https://ehr.example.org:443/fhir", True),
        ("https://ehr.example.org", False),
        ("https://ehr.example.org/fhir2", False),
        ("https://ehr.example.org.evil.com/fhir", False),
        ("https://ehr.example.org%2eevil.com/fhir", False),
        ("https://ehr.example.org\\@evil.com/fhir", False),
        ("https://x@ehr.example.org/fhir", False),
        ("https://ehr.example.org/fhir/%2e%2e/admin", False),
        ("https://ehr.example.org/fhir?x=1", False),
        ("ftp://ehr.example.org/fhir", False),
        ("https://ehr.example.org:99999/fhir", False),
        ("not a url", False),
    ],
)
def test_allowlist_matching(url: str, allowed: bool) -> None:
    assert server_allowed(url, ["https://ehr.example.org/fhir"]) is allowed
