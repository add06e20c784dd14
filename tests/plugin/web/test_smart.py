"""The SMART app in process, against the fake EHR (authorization + FHIR server) on a transport."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fake_ehr import FakeEhr, load_bundle_resources, make_fake_ehr_app
from fastapi import FastAPI
from web_support import dev_settings

from plugin.app import cds_config, configure_logging
from plugin.settings import Settings
from plugin.web.install import install_web
from plugin.web.settings import WebSettings
from plugin.web.smart_session import COOKIE_NAME, SessionStore, code_challenge

pytestmark = pytest.mark.anyio
EHR = "http://ehr.test"
ENCOUNTER = "enc-dario-overlap"


@dataclass
class Rig:
    ehr: FakeEhr
    app: FastAPI
    client: httpx.AsyncClient
    ehr_client: httpx.AsyncClient


def _app(settings: Settings, ehr_app: FastAPI) -> FastAPI:
    """Only the web pages (the SMART app needs nothing else), the EHR on an in-process transport."""
    configure_logging(settings.log_level)
    cds_config(settings)
    app = FastAPI()
    install_web(app, settings, WebSettings(), http_transport=httpx.ASGITransport(app=ehr_app))
    return app


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    resources = load_bundle_resources("overlapping-time-blocks.json")
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    assert encounter["id"] == ENCOUNTER
    ehr = FakeEhr(base=EHR, resources=resources, app_context=json.dumps({"encounter": ENCOUNTER}))
    ehr_app = make_fake_ehr_app(ehr)
    settings = dev_settings(tmp_path, fhir_server_allowlist=[f"{EHR}/fhir"])
    app = _app(settings, ehr_app)
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ehr_app), base_url=EHR) as ehr_client,
    ):
        yield Rig(ehr, app, client, ehr_client)


async def _launch(rig: Rig, **params: str) -> httpx.Response:
    """Launch, follow the authorization server's redirect back, and the app's own redirect."""
    start = await rig.client.get("/smart/launch", params=params)
    assert start.status_code == 302, start.text
    authorize = await rig.ehr_client.get(start.headers["location"])
    assert authorize.status_code == 302, authorize.text
    back = urlsplit(authorize.headers["location"])
    callback = await rig.client.get(f"{back.path}?{back.query}")
    if callback.status_code != 303:
        return callback
    return await rig.client.get(callback.headers["location"])


async def test_an_ehr_launch_reads_the_visit_and_shows_its_timeline(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    start = await rig.client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L1"})
    assert start.status_code == 302
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert query["response_type"] == ["code"]
    assert query["client_id"] == ["therapy-cds"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["launch"] == ["L1"]
    assert query["aud"] == [f"{EHR}/fhir"]
    assert query["redirect_uri"] == ["http://testserver/smart/app"]
    assert "launch" in query["scope"][0].split()
    cookie = start.headers["set-cookie"]
    assert f"{COOKIE_NAME}=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/smart" in cookie

    authorize = await rig.ehr_client.get(start.headers["location"])
    back = urlsplit(authorize.headers["location"])
    callback = await rig.client.get(f"{back.path}?{back.query}")
    assert callback.status_code == 303
    assert callback.headers["location"].endswith("/smart/app")
    page = await rig.client.get("/smart/app")
    assert page.status_code == 200, page.text

    assert rig.ehr.pkce_verified == 1
    token = next(iter(rig.ehr.tokens))
    assert f"GET Encounter/{ENCOUNTER}" in rig.ehr.fhir_requests
    assert any(r.startswith("GET Procedure?encounter=Encounter") for r in rig.ehr.fhir_requests)
    assert any(r.startswith("GET CarePlan?patient=Patient") for r in rig.ehr.fhir_requests)
    html = page.text
    assert 'data-ref="Procedure/proc-dario-overlap-1"' in html
    assert 'data-ref="Procedure/proc-dario-overlap-2"' in html
    assert 'data-rule="E-PAIR-SAME-TIMEBLOCK"' in html
    assert "frame-ancestors *" in page.headers["content-security-policy"]
    # The token never reaches the browser or the log; neither do patient ids.
    for text in (html, caplog.text, start.text, callback.text):
        assert token not in text
    assert "pat-dario" not in caplog.text
    assert ENCOUNTER not in caplog.text


async def test_a_standalone_launch_lets_the_user_pick_the_encounter(rig: Rig) -> None:
    rig.ehr.patient = "pat-dario-overlap"
    rig.ehr.app_context = None
    pick = await _launch(rig, iss=f"{EHR}/fhir")
    assert pick.status_code == 200
    assert f"/smart/app?encounter={ENCOUNTER}" in pick.text
    assert "launch/patient" in rig.ehr.authorize_requests[-1]["scope"].split()
    page = await rig.client.get("/smart/app", params={"encounter": ENCOUNTER, "payerRule": "ama"})
    assert page.status_code == 200
    assert 'data-ref="Procedure/proc-dario-overlap-1"' in page.text


async def test_a_server_outside_the_allowlist_is_never_contacted(rig: Rig) -> None:
    response = await rig.client.get(
        "/smart/launch", params={"iss": "http://ehr.test.evil.example/fhir", "launch": "x"}
    )
    assert response.status_code == 400
    assert "ALLOWLIST" in response.text
    assert rig.ehr.authorize_requests == []
    assert rig.ehr.fhir_requests == []


async def test_a_forged_state_is_refused_and_ends_the_launch(rig: Rig) -> None:
    start = await rig.client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L1"})
    authorize = await rig.ehr_client.get(start.headers["location"])
    code = parse_qs(urlsplit(authorize.headers["location"]).query)["code"][0]
    forged = await rig.client.get("/smart/app", params={"code": code, "state": "not-the-state"})
    assert forged.status_code == 400
    assert rig.ehr.token_requests == []
    again = await rig.client.get("/smart/app")
    assert again.status_code == 401


async def test_a_callback_cannot_be_replayed(rig: Rig) -> None:
    start = await rig.client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L1"})
    authorize = await rig.ehr_client.get(start.headers["location"])
    back = urlsplit(authorize.headers["location"])
    first = await rig.client.get(f"{back.path}?{back.query}")
    assert first.status_code == 303
    replay = await rig.client.get(f"{back.path}?{back.query}")
    assert replay.status_code == 400
    assert len(rig.ehr.token_requests) == 1


async def test_a_refusal_by_the_authorization_server_is_shown(rig: Rig) -> None:
    await rig.client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L1"})
    refused = await rig.client.get(
        "/smart/app", params={"error": "access_denied", "state": "whatever"}
    )
    assert refused.status_code == 400
    assert "access_denied" in refused.text


async def test_without_a_launch_the_app_asks_for_one(rig: Rig) -> None:
    assert (await rig.client.get("/smart/app")).status_code == 401
    form = await rig.client.get("/smart/launch")
    assert form.status_code == 200
    assert f"{EHR}/fhir" in form.text  # the allow-listed servers are offered


async def test_an_authorization_server_without_s256_is_refused(rig: Rig) -> None:
    rig.ehr.challenge_methods = ["plain"]
    response = await rig.client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L1"})
    assert response.status_code == 502
    assert "S256" in response.text
    assert rig.ehr.authorize_requests == []


async def test_a_fhir_server_refusing_the_token_is_reported(rig: Rig) -> None:
    start = await rig.client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L1"})
    authorize = await rig.ehr_client.get(start.headers["location"])
    back = urlsplit(authorize.headers["location"])
    await rig.client.get(f"{back.path}?{back.query}")
    rig.ehr.tokens.clear()  # the EHR revoked it
    page = await rig.client.get("/smart/app")
    assert page.status_code == 502
    assert "refused" in page.text


def test_sessions_expire_and_the_oldest_are_dropped() -> None:
    now = [1000.0]
    store = SessionStore(lifetime_seconds=60, max_sessions=2, clock=lambda: now[0])
    first = store.create(iss="https://a", token_endpoint="https://a/t", redirect_uri="https://x/")
    assert store.get(first.id) is first
    assert first.access_token is None
    assert "state" not in repr(first)
    store.shorten(first, 10)
    now[0] += 11
    assert store.get(first.id) is None
    kept = [store.create(iss="https://a", token_endpoint="t", redirect_uri="r") for _ in range(3)]
    assert store.get(kept[0].id) is None
    assert len(store) == 2


def test_the_pkce_challenge_is_rfc_7636_s256() -> None:
    # RFC 7636 Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


async def test_an_ehr_that_frames_the_app_can_have_a_samesite_none_secure_cookie(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERAPY_CDS_SMART_COOKIE_SAMESITE", "none")
    ehr = FakeEhr(base=EHR, resources=load_bundle_resources("pair-no-modifier.json"))
    settings = dev_settings(tmp_path, fhir_server_allowlist=[f"{EHR}/fhir"])
    app = _app(settings, make_fake_ehr_app(ehr))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        start = await client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L"})
    cookie = start.headers["set-cookie"]
    assert "SameSite=none" in cookie
    assert "Secure" in cookie
