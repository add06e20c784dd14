"""C-9 and "never log bodies, patient ids or tokens": capture every log record on error paths."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import respx
from cdsh_jwt import BASE, EC_ISS, EC_KEY, NOW, public_jwks, token
from cdsh_support import MARKER, PATIENT_ID, MemoryFeedbackStore
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_hooks import (
    CdsHooks,
    CdsHooksConfig,
    CdsResponse,
    Invocation,
    ServiceRegistry,
    TrustedIssuer,
    install_cds_hooks,
)
from cds_hooks.runtime import log_safe_hook_instance

pytestmark = pytest.mark.anyio

FHIR = "https://ehr.example.org/fhir"
FHIR_TOKEN = "fhir-token-NEVER-LOG-93"
SERVICE_AUD = f"{BASE}/cds-services/leaky"


def registry() -> ServiceRegistry:
    reg = ServiceRegistry()

    @reg.service(
        id="leaky",
        hook="order-sign",
        title="L",
        description="D",
        prefetch={"patient": "Patient/{{context.patientId}}"},
    )
    async def leaky(invocation: Invocation) -> CdsResponse:
        invocation.prefetch.require("patient")
        if invocation.context.get("crash"):
            raise KeyError(f"{PATIENT_ID} {MARKER} {FHIR_TOKEN}")
        return CdsResponse(cards=())

    return reg


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "hook": "order-sign",
        "hookInstance": "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d",
        "fhirServer": FHIR,
        "fhirAuthorization": {"access_token": FHIR_TOKEN, "token_type": "Bearer"},
        "context": {
            "userId": "Practitioner/1",
            "patientId": PATIENT_ID,
            "draftOrders": {"resourceType": "Bundle"},
            "note": MARKER,
        },
        "unknownMember": MARKER,
    }
    data.update(overrides)
    return data


async def test_error_paths_log_ids_not_data(caplog: pytest.LogCaptureFixture) -> None:
    config = CdsHooksConfig(
        public_base_url=BASE,
        trusted_issuers=(TrustedIssuer(iss=EC_ISS, jwks=public_jwks(EC_KEY)),),
        fhir_server_allowlist=(FHIR,),
    )
    app = FastAPI()
    jwts: list[str] = []

    def fresh_jwt(aud: str = SERVICE_AUD, **kw: Any) -> dict[str, str]:
        value = token(aud, **kw)
        jwts.append(value)
        return {"Authorization": f"Bearer {value}"}

    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient() as pool:
        runtime = CdsHooks(
            registry(), config, MemoryFeedbackStore(), http_client=pool, clock=lambda: NOW
        )
        install_cds_hooks(app, runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            with respx.mock() as mock:
                patient = mock.get(f"{FHIR}/Patient/{PATIENT_ID}")
                # 401: bad token (wrong aud), and a token carrying a marker-laden jti
                bad = await client.post(
                    "/cds-services/leaky", json=body(), headers=fresh_jwt(f"{BASE}/x")
                )
                # 412: FHIR server fails
                patient.respond(status_code=503)
                unavailable = await client.post(
                    "/cds-services/leaky", json=body(), headers=fresh_jwt()
                )
                # 500: handler crash whose message holds patient data and the token
                patient.respond(json={"resourceType": "Patient", "id": PATIENT_ID})
                crash_body = body()
                crash_body["context"]["crash"] = True
                crashed = await client.post(
                    "/cds-services/leaky", json=crash_body, headers=fresh_jwt()
                )
                # 400 with a caller-chosen hookInstance
                invalid = await client.post(
                    "/cds-services/leaky",
                    json=body(hook=MARKER, hookInstance=f"{MARKER}-{PATIENT_ID}"),
                    headers=fresh_jwt(),
                )
                # 200 after a successful fetch (httpx logs the request URL)
                ok = await client.post("/cds-services/leaky", json=body(), headers=fresh_jwt())

    assert [r.status_code for r in (bad, unavailable, crashed, invalid, ok)] == [
        401,
        412,
        500,
        400,
        200,
    ]
    assert caplog.records, "expected log records"
    secrets = [FHIR_TOKEN, MARKER, PATIENT_ID, *jwts, *(j.split(".")[2] for j in jwts)]
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__!r}"
        for secret in secrets:
            assert secret not in text, f"{record.name}: {record.getMessage()}"

    messages = [r.getMessage() for r in caplog.records if r.name == "cds_hooks"]
    assert any("status=401" in m and "auth_reason=aud" in m and "jwt_iss=" in m for m in messages)
    assert any("status=412" in m and "prefetch_key=patient" in m for m in messages)
    assert any("status=500" in m and "error=KeyError" in m for m in messages)
    assert any("hook_instance=sha256:" in m for m in messages)
    assert any("status=200" in m and "duration_ms=" in m for m in messages)


def _reference_hook_instance(value: object) -> str:
    import hashlib
    import uuid

    if not isinstance(value, str):
        return "-"
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: "{" + str(u) + "}"),
        st.text(max_size=40),
        st.none(),
        st.integers(),
    )
)
def test_hook_instance_is_logged_as_a_uuid_or_a_hash(value: object) -> None:
    assert log_safe_hook_instance(value) == _reference_hook_instance(value)
