"""The SMART app in process, against the fake EHR (authorization + FHIR server) on a transport."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
import sqlalchemy
from fake_ehr import FakeEhr, load_bundle_resources, make_fake_ehr_app
from fastapi import FastAPI
from web_support import dev_settings

from plugin.app import cds_config, configure_logging
from plugin.settings import Settings
from plugin.web.install import install_web
from plugin.web.settings import WebSettings
from plugin.web.smart_client import (
    DISCOVERY_FAILURE_SECONDS,
    DiscoveryCache,
    FhirReader,
    SmartConfiguration,
    SmartError,
    TokenResponse,
    discover,
    exchange_code,
)
from plugin.web.smart_session import COOKIE_NAME, code_challenge

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


@asynccontextmanager
async def make_rig(tmp_path: Path, **overrides: Any) -> AsyncIterator[Rig]:
    """The app and the fake EHR; ``overrides`` are service settings."""
    resources = load_bundle_resources("overlapping-time-blocks.json")
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    assert encounter["id"] == ENCOUNTER
    ehr = FakeEhr(base=EHR, resources=resources, app_context=json.dumps({"encounter": ENCOUNTER}))
    ehr_app = make_fake_ehr_app(ehr)
    settings = dev_settings(tmp_path, fhir_server_allowlist=[f"{EHR}/fhir"], **overrides)
    app = _app(settings, ehr_app)
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ehr_app), base_url=EHR) as ehr_client,
    ):
        yield Rig(ehr, app, client, ehr_client)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with make_rig(tmp_path) as made:
        yield made


def _encounter(rig: Rig) -> dict[str, Any]:
    return next(r for r in rig.ehr.resources if r["resourceType"] == "Encounter")


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


async def test_in_production_the_launch_form_does_not_list_the_allowlist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text("[]", encoding="utf-8")
    production = {
        "require_auth": True,
        "dev_mode": False,
        "trusted_issuers_file": issuers,
        "session_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "public_base_url": "https://cds.example.org",
    }
    async with make_rig(tmp_path, **production) as rig:
        form = await rig.client.get("/smart/launch")
        assert form.status_code == 200
        assert EHR not in form.text
        assert "none is suggested" not in form.text
    monkeypatch.setenv("THERAPY_CDS_SMART_LIST_SERVERS", "true")  # an operator's choice
    async with make_rig(tmp_path, **production) as rig:
        assert f"{EHR}/fhir" in (await rig.client.get("/smart/launch")).text


async def test_a_flood_of_launches_neither_logs_a_user_out_nor_refetches_the_configuration(
    rig: Rig,
) -> None:
    signed_in = await _launch(rig, iss=f"{EHR}/fhir", launch="L1")
    assert signed_in.status_code == 200
    transport = httpx.ASGITransport(app=rig.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as attacker:
        for _ in range(1001):
            launch = await attacker.get("/smart/launch", params={"iss": f"{EHR}/fhir"})
            assert launch.status_code == 302
            attacker.cookies.clear()
    smart = rig.app.state.smart
    assert smart.sessions.pending_count <= smart.web.smart_max_pending_per_client
    assert (await rig.client.get("/smart/app")).status_code == 200
    assert rig.ehr.configuration_requests == 1  # one fetch within the cache lifetime


async def test_the_configuration_is_fetched_again_after_its_lifetime() -> None:
    now = [0.0]
    calls: list[str] = []
    cache = DiscoveryCache(ttl_seconds=300, clock=lambda: now[0])

    async def fetch() -> SmartConfiguration:
        calls.append("x")
        if len(calls) == 3:
            raise SmartError("the SMART configuration endpoint answered HTTP 503")
        return SmartConfiguration("https://a/auth", "https://a/token")

    for _ in range(5):
        await cache.get("https://a/fhir", fetch)
    assert len(calls) == 1
    now[0] = 301
    await cache.get("https://a/fhir", fetch)
    assert len(calls) == 2
    now[0] = 602
    for _ in range(3):  # a failure is remembered too, briefly
        with pytest.raises(SmartError, match="503"):
            await cache.get("https://a/fhir", fetch)
    assert len(calls) == 3
    now[0] = 602 + DISCOVERY_FAILURE_SECONDS
    await cache.get("https://a/fhir", fetch)
    assert len(calls) == 4


async def test_the_configuration_cache_is_bounded() -> None:
    cache = DiscoveryCache(ttl_seconds=300, max_entries=4)

    async def fetch() -> SmartConfiguration:
        return SmartConfiguration("https://a/auth", "https://a/token")

    for i in range(100):
        await cache.get(f"https://a/fhir/t{i}", fetch)
    assert len(cache) == 4


def _smart_configuration(authorize: str, token: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "authorization_endpoint": authorize,
            "token_endpoint": token,
            "code_challenge_methods_supported": ["S256"],
        },
    )


@pytest.mark.parametrize(
    ("authorize", "token"),
    [
        (f"{EHR}/auth/authorize", "https://evil.example/token"),
        ("https://evil.example/authorize", f"{EHR}/auth/token"),
        (f"{EHR}/auth/authorize", "http://ehr.test.evil.example/auth/token"),
        (f"{EHR}/auth/authorize", "http://ehr.test:8080/auth/token"),
    ],
)
async def test_endpoints_off_the_allowlist_and_the_issuers_origin_are_never_contacted(
    tmp_path: Path, authorize: str, token: str
) -> None:
    settings = dev_settings(tmp_path, fhir_server_allowlist=[f"{EHR}/fhir"])
    configure_logging(settings.log_level)
    app = FastAPI()
    install_web(app, settings, WebSettings())  # the default transport, which respx replaces
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{EHR}/fhir/.well-known/smart-configuration").mock(
            return_value=_smart_configuration(authorize, token)
        )
        evil = router.route(host__regex=r"evil\.example$|:8080$")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            launch = await client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L"})
            callback = await client.get("/smart/app", params={"code": "c", "state": "s"})
        assert launch.status_code == 502
        assert "location" not in launch.headers  # the browser is not sent there either
        assert "THERAPY_CDS_FHIR_SERVER_ALLOWLIST" in launch.text
        assert "not contacted" in launch.text
        assert callback.status_code == 400
        assert not evil.called
        assert [c.request.url.host for c in router.calls] == ["ehr.test"]


@pytest.mark.parametrize(
    ("allowlist", "authorize", "token"),
    [
        # Epic-like: the OAuth endpoints on the FHIR server's host, outside its FHIR path
        ([f"{EHR}/fhir"], f"{EHR}/oauth2/authorize?aud=x", f"{EHR}/oauth2/token"),
        # Cerner-like: a separate authorization server, trusted by listing it
        (
            [f"{EHR}/fhir", "https://auth.example/tenants/t1"],
            "https://auth.example/tenants/t1/authorize",
            "https://auth.example/tenants/t1/token",
        ),
    ],
)
async def test_endpoints_on_the_issuers_origin_or_in_the_allowlist_are_used(
    allowlist: list[str], authorize: str, token: str
) -> None:
    with respx.mock() as router:
        router.get(f"{EHR}/fhir/.well-known/smart-configuration").mock(
            return_value=_smart_configuration(authorize, token)
        )
        async with httpx.AsyncClient() as client:
            found = await discover(client, f"{EHR}/fhir", allowlist=allowlist, limit=10_000)
    assert found == SmartConfiguration(authorize, token)


async def test_an_oversized_encounter_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    async with make_rig(tmp_path, fhir_max_response_bytes=200_000) as rig:
        _encounter(rig)["text"] = {"status": "generated", "div": "<div>" + "x" * 300_000 + "</div>"}
        page = await _launch(rig, iss=f"{EHR}/fhir", launch="L1")
    assert page.status_code == 502
    assert "more than 200,000 bytes" in page.text
    assert "THERAPY_CDS_FHIR_MAX_RESPONSE_BYTES" in page.text
    assert "x" * 1000 not in page.text


async def test_an_oversized_answer_is_streamed_and_reading_stops_at_the_cap() -> None:
    """The EHR streams 200 MB in 64 KiB chunks; the reader stops just past the 1 MB cap."""
    sent: list[int] = []
    chunk = b"x" * 65_536

    async def body() -> AsyncIterator[bytes]:
        yield b'{"resourceType":"Encounter","id":"e1","text":{"div":"'
        for _ in range(200 * 16):
            sent.append(len(chunk))
            yield chunk
        yield b'"}}'

    with respx.mock() as router:
        router.get(f"{EHR}/fhir/Encounter/e1").mock(
            return_value=httpx.Response(200, content=body())
        )
        async with httpx.AsyncClient() as client:
            reader = FhirReader(client, f"{EHR}/fhir", "tok", limit=1_000_000)
            with pytest.raises(SmartError, match="more than 1,000,000 bytes") as refused:
                await reader.read("Encounter", "e1")
    assert refused.value.status_code == 502
    assert sum(sent) <= 1_000_000 + len(chunk)


async def test_a_declared_oversized_answer_is_not_read_at_all() -> None:
    with respx.mock() as router:
        router.get(f"{EHR}/fhir/.well-known/smart-configuration").mock(
            return_value=httpx.Response(200, headers={"content-length": "50000000"}, content=b"{}")
        )
        async with httpx.AsyncClient() as client:
            with pytest.raises(SmartError, match="more than 10,000 bytes"):
                await discover(client, f"{EHR}/fhir", allowlist=[], limit=10_000)


@pytest.mark.parametrize(
    "shape",
    [
        [{"coding": {}}],
        [{"coding": {"code": "AMB"}}],
        [{"coding": 5}],
        [{"coding": "AMB"}],
        [5],
        {"coding": 5},
        {"code": {"x": 1}, "display": ["a"]},
        "AMB",
        [],
    ],
)
async def test_an_encounter_class_of_any_shape_is_never_a_500(rig: Rig, shape: object) -> None:
    _encounter(rig)["class"] = shape
    page = await _launch(rig, iss=f"{EHR}/fhir", launch="L1")
    assert page.status_code in (200, 502), page.text
    if page.status_code == 502:
        assert "shape" in page.text


async def test_procedure_times_the_checks_cannot_read_are_a_page_not_a_500(rig: Rig) -> None:
    for resource in rig.ehr.of_type("Procedure"):
        resource["performedPeriod"] = {
            "start": "0001-01-01T00:00:00+05:00",
            "end": "0001-01-01T00:30:00+05:00",
        }
    page = await _launch(rig, iss=f"{EHR}/fhir", launch="L1")
    assert page.status_code in (200, 502), page.text


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("entry", 5),
        ("entry", {"resource": {}}),
        (
            "entry",
            [
                5,
                "x",
                None,
                {"resource": 5},
                {"resource": {"resourceType": "Procedure"}, "search": 5},
            ],
        ),
        ("link", 5),
        ("link", [{"relation": "next", "url": 5}, "x"]),
    ],
)
async def test_a_search_bundle_of_any_shape_is_never_a_500(member: str, value: object) -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset", member: value}
    with respx.mock() as router:
        router.get(url__startswith=f"{EHR}/fhir/Procedure").mock(
            return_value=httpx.Response(200, json=bundle)
        )
        async with httpx.AsyncClient() as client:
            reader = FhirReader(client, f"{EHR}/fhir", "tok", limit=100_000)
            found = await reader.search("Procedure", {"encounter": "Encounter/e1"})
    assert all(isinstance(r, dict) and r["resourceType"] == "Procedure" for r in found)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser's stack
        b'{"resourceType":"Encounter","id":"e1","n":NaN}',
        b'{"resourceType":"Encounter","id":"e1","s":"\\ud800"}',
        b'{"resourceType":"Encounter","id":"e1","n":' + b"9" * 5000 + b"}",
        b"\xff\xfe",
        b"[]",
    ],
)
async def test_an_answer_that_is_not_a_json_object_is_a_clear_error(body: bytes) -> None:
    with respx.mock() as router:
        router.get(f"{EHR}/fhir/Encounter/e1").mock(return_value=httpx.Response(200, content=body))
        async with httpx.AsyncClient() as client:
            reader = FhirReader(client, f"{EHR}/fhir", "tok", limit=1_000_000)
            with pytest.raises(SmartError, match=r"did not answer (JSON|a JSON object)"):
                await reader.read("Encounter", "e1")


async def test_a_token_answer_of_any_shape_is_a_clear_error_or_ignored() -> None:
    answers = [
        {"access_token": 5, "token_type": "Bearer"},
        {"access_token": "t", "token_type": ["Bearer"]},
        {
            "access_token": "t",
            "token_type": "Bearer",
            "expires_in": True,
            "scope": {"a": 1},
            "patient": 5,
            "appContext": "[" * 100_000,
            "encounter": {"id": "x"},
        },
    ]
    with respx.mock() as router:
        route = router.post(f"{EHR}/auth/token")
        route.side_effect = [httpx.Response(200, json=a) for a in answers]
        async with httpx.AsyncClient() as client:

            async def exchange() -> TokenResponse:
                return await exchange_code(
                    client,
                    f"{EHR}/auth/token",
                    code="c",
                    redirect_uri="r",
                    client_id="i",
                    code_verifier="v",
                    limit=1_000_000,
                )

            with pytest.raises(SmartError, match="access_token"):
                await exchange()
            with pytest.raises(SmartError, match="token_type"):
                await exchange()
            token = await exchange()
    assert (token.expires_in, token.scope, token.patient, token.encounter) == (None, "", None, None)


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


async def test_a_failing_session_store_is_a_page_not_a_500(rig: Rig) -> None:
    signed_in = await _launch(rig, iss=f"{EHR}/fhir", launch="L1")
    assert signed_in.status_code == 200
    with rig.app.state.smart.sessions.engine.begin() as connection:
        connection.execute(sqlalchemy.text("DROP TABLE smart_sessions"))  # the database lost it
    for path, params in (
        ("/smart/app", {}),
        ("/smart/launch", {"iss": f"{EHR}/fhir", "launch": "L2"}),
    ):
        page = await rig.client.get(path, params=params)
        assert page.status_code == 503
        assert "session store" in page.text
        assert "smart_sessions" not in page.text
