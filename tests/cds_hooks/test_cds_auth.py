"""Client JWT authentication (S-3..S-12, B-11, F-10) through the HTTP surface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from cdsh_jwt import (
    BASE,
    EC_ISS,
    EC_JWKS_URL,
    EC_KEY,
    EC_KEY_256,
    NOW,
    OTHER_EC_KEY,
    RSA_ISS,
    RSA_JWKS_URL,
    RSA_KEY,
    hs256_with_public_key,
    public_jwks,
    signed_claims_text,
    tampered,
    token,
    unsigned_token,
    with_header_text,
)
from cdsh_support import SANDBOX_ORIGIN, make_app, order_sign_request, spec_fixture, spec_json

from cds_hooks import CdsHooksConfig, InMemoryReplayStore, TrustedIssuer

pytestmark = pytest.mark.anyio

SERVICE = "/cds-services/probe-order-sign"
SERVICE_AUD = BASE + SERVICE
DISCOVERY_AUD = BASE + "/cds-services"


def auth_config(**overrides: Any) -> CdsHooksConfig:
    fields: dict[str, Any] = {
        "public_base_url": BASE,
        "trusted_issuers": (
            TrustedIssuer(iss=EC_ISS, jwks=public_jwks(EC_KEY), jwks_url=EC_JWKS_URL),
            TrustedIssuer(iss=RSA_ISS, jwks_url=RSA_JWKS_URL),
        ),
    }
    fields.update(overrides)
    return CdsHooksConfig(**fields)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(config=auth_config(), clock=lambda: NOW)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://internal:8080"
    ) as c:
        yield c


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def call_service(client: httpx.AsyncClient, jwt_value: str | None) -> httpx.Response:
    headers = bearer(jwt_value) if jwt_value is not None else {}
    return await client.post(SERVICE, json=order_sign_request(), headers=headers)


# ---------------------------------------------------------------- acceptance


async def test_valid_es384_token_on_every_endpoint(client: httpx.AsyncClient) -> None:
    """B-11, S-6, F-10: aud is the exact endpoint URL built from public_base_url."""
    discovery = await client.get("/cds-services", headers=bearer(token(DISCOVERY_AUD)))
    assert discovery.status_code == 200
    assert (await call_service(client, token(SERVICE_AUD))).status_code == 200
    feedback = await client.post(
        SERVICE + "/feedback",
        json={"feedback": []},
        headers=bearer(token(SERVICE_AUD + "/feedback")),
    )
    assert feedback.status_code == 200


async def test_trailing_slash_request_needs_matching_aud(client: httpx.AsyncClient) -> None:
    response = await client.get("/cds-services/", headers=bearer(token(DISCOVERY_AUD + "/")))
    assert response.status_code == 200
    response = await client.get("/cds-services/", headers=bearer(token(DISCOVERY_AUD)))
    assert response.status_code == 401


async def test_aud_may_be_an_array(client: httpx.AsyncClient) -> None:
    jwt_value = token(["https://other.example", SERVICE_AUD])
    assert (await call_service(client, jwt_value)).status_code == 200


async def test_rs384_key_fetched_from_jwks_url_and_cached(client: httpx.AsyncClient) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get(RSA_JWKS_URL).respond(json=public_jwks(RSA_KEY))
        for _ in range(3):
            jwt_value = token(SERVICE_AUD, key=RSA_KEY, alg="RS384", iss=RSA_ISS)
            assert (await call_service(client, jwt_value)).status_code == 200
    assert route.call_count == 1


async def test_rs384_jku_equal_to_configured_url_is_fetched(client: httpx.AsyncClient) -> None:
    with respx.mock() as mock:
        route = mock.get(RSA_JWKS_URL).respond(json=public_jwks(RSA_KEY))
        jwt_value = token(
            SERVICE_AUD, key=RSA_KEY, alg="RS384", iss=RSA_ISS, header={"jku": RSA_JWKS_URL}
        )
        assert (await call_service(client, jwt_value)).status_code == 200
    assert route.call_count == 1


async def test_unknown_kid_refreshes_at_most_once_a_minute() -> None:
    clock = [NOW]
    app = make_app(config=auth_config(), clock=lambda: clock[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        with respx.mock() as mock:
            route = mock.get(RSA_JWKS_URL).respond(json=public_jwks(RSA_KEY))
            # the issuer's published set has rsa-1 only; ask for a kid it does not have
            unknown = token(
                SERVICE_AUD, key=RSA_KEY, alg="RS384", iss=RSA_ISS, header={"kid": "rsa-2"}
            )
            assert (await call_service(c, unknown)).status_code == 401
            assert (await call_service(c, unknown)).status_code == 401
            assert route.call_count == 1  # second unknown kid within 60 s: no refetch
            clock[0] += 61
            assert (await call_service(c, unknown)).status_code == 401
            assert route.call_count == 2


async def test_es256_only_when_configured() -> None:
    config = auth_config(
        allowed_algorithms=("ES384", "ES256"),
        trusted_issuers=(TrustedIssuer(iss=EC_ISS, jwks=public_jwks(EC_KEY, EC_KEY_256)),),
    )
    app = make_app(config=config, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        jwt_value = token(SERVICE_AUD, key=EC_KEY_256, alg="ES256")
        assert (await call_service(c, jwt_value)).status_code == 200


async def test_tenant_allowlist() -> None:
    config = auth_config(
        trusted_issuers=(TrustedIssuer(iss=EC_ISS, jwks=public_jwks(EC_KEY), tenants=("t-1",)),)
    )
    app = make_app(config=config, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await call_service(c, token(SERVICE_AUD, tenant="t-1"))).status_code == 200
        assert (await call_service(c, token(SERVICE_AUD, tenant="t-2"))).status_code == 401
        assert (await call_service(c, token(SERVICE_AUD))).status_code == 401


async def test_preflight_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.options(
        SERVICE, headers={"Origin": SANDBOX_ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204


# ---------------------------------------------------------------- rejection

REJECTIONS: list[tuple[str, Any]] = [
    ("missing Authorization", lambda: None),
    ("not Bearer", lambda: "Basic dXNlcjpwdw=="),
    ("garbage", lambda: "not-a-jwt"),
    ("expired", lambda: token(SERVICE_AUD, exp=int(NOW) - 120, iat=int(NOW) - 400)),
    ("wrong aud (discovery aud on a service)", lambda: token(DISCOVERY_AUD)),
    ("wrong aud (other host)", lambda: token("https://evil.example/cds-services/probe-order-sign")),
    ("unknown iss", lambda: token(SERVICE_AUD, iss="https://stranger.example")),
    ("unknown kid", lambda: token(SERVICE_AUD, header={"kid": "nope"})),
    ("missing kid", lambda: token(SERVICE_AUD, header={"kid": None})),
    ("typ not JWT", lambda: token(SERVICE_AUD, header={"typ": "at+jwt"})),
    ("alg none", lambda: unsigned_token(SERVICE_AUD)),
    ("HS256 keyed with the public key", lambda: hs256_with_public_key(SERVICE_AUD)),
    ("tampered payload", lambda: tampered(SERVICE_AUD)),
    ("signed by another key with the same kid", lambda: token(SERVICE_AUD, key=OTHER_EC_KEY)),
    ("ES256 not allowlisted", lambda: token(SERVICE_AUD, key=EC_KEY_256, alg="ES256")),
    ("iat in the future", lambda: token(SERVICE_AUD, iat=int(NOW) + 600)),
    ("exp too far ahead", lambda: token(SERVICE_AUD, exp=int(NOW) + 86_400)),
    ("no jti", lambda: token(SERVICE_AUD, jti=None)),
    ("no exp", lambda: token(SERVICE_AUD, exp=None)),
    ("crit header", lambda: token(SERVICE_AUD, header={"crit": ["kid"]})),
    # issue 17 item 7: nbf is honoured; NumericDates are finite JSON numbers
    ("nbf an hour ahead", lambda: token(SERVICE_AUD, nbf=int(NOW) + 3600)),
    ("nbf past the leeway", lambda: token(SERVICE_AUD, nbf=int(NOW) + 31)),
    ("iat NaN", lambda: signed_claims_text(SERVICE_AUD, iat=float("nan"))),
    ("exp NaN", lambda: signed_claims_text(SERVICE_AUD, exp=float("nan"))),
    ("nbf NaN", lambda: signed_claims_text(SERVICE_AUD, nbf=float("nan"))),
    ("exp Infinity", lambda: signed_claims_text(SERVICE_AUD, exp=float("inf"))),
    ("iat -Infinity", lambda: signed_claims_text(SERVICE_AUD, iat=float("-inf"))),
    ("exp a boolean", lambda: token(SERVICE_AUD, exp=True)),
    ("iat a string", lambda: token(SERVICE_AUD, iat=str(int(NOW)))),
    ("nbf a string", lambda: token(SERVICE_AUD, nbf="0")),
    ("nbf null", lambda: signed_claims_text(SERVICE_AUD, extra={"nbf": None})),
    # issue 17 item 6: malformed tokens are a 401, never a 500
    ("header nested 12,000 deep", lambda: with_header_text(b"[" * 12_000)),
    ("header nested 17 deep", lambda: with_header_text(b"[" * 17 + b"]" * 17)),
    ("header not base64url", lambda: "eyJhbGciOiJFUzM4NCJ9!.e30.c2ln"),
    ("header not UTF-8", lambda: with_header_text(b"\xff\xfe")),
    ("header an array", lambda: with_header_text(b'["alg"]')),
    ("header with a lone surrogate", lambda: with_header_text(b'{"kid": "\\ud800"}')),
    ("header number too large", lambda: with_header_text(b'{"alg": 1' + b"0" * 400 + b"}")),
    ("token too long", lambda: token(SERVICE_AUD, pad="x" * 16_384)),
]


@pytest.mark.parametrize(("what", "make"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
async def test_rejected_tokens_get_an_uninformative_401(
    client: httpx.AsyncClient, what: str, make: Any
) -> None:
    jwt_value = make()
    headers = {} if jwt_value is None else {"Authorization": f"Bearer {jwt_value}"}
    if jwt_value is not None and jwt_value.startswith("Basic"):
        headers = {"Authorization": jwt_value}
    with respx.mock(assert_all_called=False) as mock:
        jwks_route = mock.get(EC_JWKS_URL).respond(json=public_jwks(EC_KEY))
        response = await client.post(SERVICE, json=order_sign_request(), headers=headers)
    assert response.status_code == 401, what
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["issue"][0]["code"] == "login"
    assert body["issue"][0]["diagnostics"] == (
        "authentication is required: send a valid CDS Hooks client JWT"
    )
    if what == "unknown kid":
        assert jwks_route.call_count == 1  # configured URL, refreshed once for the unknown kid


async def test_replayed_jti_is_refused(client: httpx.AsyncClient) -> None:
    jwt_value = token(SERVICE_AUD)
    assert (await call_service(client, jwt_value)).status_code == 200
    assert (await call_service(client, jwt_value)).status_code == 401


async def test_untrusted_jku_is_never_fetched(client: httpx.AsyncClient) -> None:
    """S-7: a jku other than the issuer's configured JWKS URL -> 401, no outbound request."""
    attacker = "https://attacker.example/jwks.json"
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as mock:
        attacker_route = mock.get(attacker).respond(json=public_jwks(OTHER_EC_KEY))
        for jwt_value in (
            token(SERVICE_AUD, key=OTHER_EC_KEY, header={"jku": attacker, "kid": "new"}),
            token(SERVICE_AUD, key=RSA_KEY, alg="RS384", iss=RSA_ISS, header={"jku": attacker}),
        ):
            assert (await call_service(client, jwt_value)).status_code == 401
    assert attacker_route.call_count == 0
    assert mock.calls.call_count == 0


async def test_jwks_outage_means_401_not_500(client: httpx.AsyncClient) -> None:
    with respx.mock() as mock:
        mock.get(RSA_JWKS_URL).mock(side_effect=httpx.ConnectTimeout("down"))
        jwt_value = token(SERVICE_AUD, key=RSA_KEY, alg="RS384", iss=RSA_ISS)
        assert (await call_service(client, jwt_value)).status_code == 401


async def test_discovery_requires_a_token_too(client: httpx.AsyncClient) -> None:
    assert (await client.get("/cds-services")).status_code == 401


async def test_feedback_requires_its_own_aud(client: httpx.AsyncClient) -> None:
    response = await client.post(
        SERVICE + "/feedback", json={"feedback": []}, headers=bearer(token(SERVICE_AUD))
    )
    assert response.status_code == 401


def test_in_memory_replay_store_forgets_expired_and_fails_closed_when_full() -> None:
    clock = [NOW]
    store = InMemoryReplayStore(clock=lambda: clock[0], max_entries=2)
    assert store.remember("i", "a", NOW + 10)
    assert not store.remember("i", "a", NOW + 10)
    assert store.remember("j", "a", NOW + 10)  # jti is scoped by issuer
    assert not store.remember("i", "b", NOW + 10)  # full of live entries: refuse
    clock[0] += 11
    assert store.remember("i", "b", NOW + 30)  # expired ones were purged


# ---------------------------------------------------------------- the spec's own token (S-12)


def spec_token_config() -> CdsHooksConfig:
    payload = spec_json("spec-2.0.1/spec2.0.1-jwt-payload.json")
    header = spec_json("spec-2.0.1/spec2.0.1-jwt-header.json")
    return CdsHooksConfig(
        public_base_url="https://cds.example.org",
        trusted_issuers=(
            TrustedIssuer(
                iss=payload["iss"],
                jwks=spec_json("spec-2.0.1/spec2.0.1-jwks-public.json"),
                jwks_url=header["jku"],
                tenants=(payload["tenant"],),
            ),
        ),
    )


def spec_header_token(name: str) -> str:
    line = spec_fixture(name).read_text(encoding="utf-8").strip()
    return line.removeprefix("Authorization: Bearer ")


def some_service_registry() -> Any:
    from cdsh_support import probe_registry

    from cds_hooks import CdsService

    registry = probe_registry()
    registry.add(
        CdsService(
            id="some-service",
            hook="order-sign",
            title="Spec example audience",
            description="Test service",
            handler=registry.get("probe-patient-view").handler,  # type: ignore[union-attr]
        )
    )
    return registry


@pytest.mark.parametrize(
    "name",
    [
        "spec-2.0.1/spec2.0.1-jwt-authorization-header.txt",
        "legacy-nonconformant/spec1.0-jwt-authorization-header-with-sub.txt",  # extra 'sub'
    ],
)
@pytest.mark.parametrize("pinned", [False, True])
async def test_spec_example_token(name: str, pinned: bool) -> None:
    exp = spec_json("spec-2.0.1/spec2.0.1-jwt-payload.json")["exp"]
    clock = (lambda: exp - 60.0) if pinned else None
    kwargs: dict[str, Any] = {"clock": clock} if clock else {}
    app = make_app(some_service_registry(), config=spec_token_config(), **kwargs)
    jwt_value = spec_header_token(name)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        with respx.mock() as mock:  # the jku is configured and the kid is inline: no fetch
            response = await c.post(
                "/cds-services/some-service",
                json=order_sign_request(),
                headers=bearer(jwt_value),
            )
        assert mock.calls.call_count == 0
    assert response.status_code == (200 if pinned else 401)


async def test_sandbox_double_slash_url_with_matching_aud(client: httpx.AsyncClient) -> None:
    """SANDBOX.md §2: discovery URL entered with a trailing slash -> '.../cds-services//id',
    and the sandbox signs exactly that URL as aud."""
    double = "/cds-services//probe-order-sign"
    response = await client.post(
        double, json=order_sign_request(), headers=bearer(token(BASE + double))
    )
    assert response.status_code == 200
    response = await client.post(
        double, json=order_sign_request(), headers=bearer(token(SERVICE_AUD))
    )
    assert response.status_code == 401
    feedback = await client.post(
        double + "/feedback",
        json={"feedback": []},
        headers=bearer(token(BASE + double + "/feedback")),
    )
    assert feedback.status_code == 200


async def test_jwks_cache_expires() -> None:
    clock = [NOW]
    app = make_app(config=auth_config(jwks_cache_seconds=600), clock=lambda: clock[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        with respx.mock() as mock:
            route = mock.get(RSA_JWKS_URL).respond(json=public_jwks(RSA_KEY))

            def rsa_token() -> str:
                return token(
                    SERVICE_AUD, key=RSA_KEY, alg="RS384", iss=RSA_ISS, iat=int(clock[0]),
                    exp=int(clock[0]) + 300,
                )  # fmt: skip

            assert (await call_service(c, rsa_token())).status_code == 200
            clock[0] += 300
            assert (await call_service(c, rsa_token())).status_code == 200
            assert route.call_count == 1
            clock[0] += 400  # past the cache lifetime: refetched
            assert (await call_service(c, rsa_token())).status_code == 200
            assert route.call_count == 2


async def test_replay_refused_inside_the_leeway_window() -> None:
    clock = [NOW]
    app = make_app(config=auth_config(), clock=lambda: clock[0])
    jwt_value = token(SERVICE_AUD)  # exp = NOW + 300, leeway 30
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await call_service(c, jwt_value)).status_code == 200
        clock[0] = NOW + 310  # past exp, still inside the leeway
        assert (await call_service(c, jwt_value)).status_code == 401


async def test_handler_sees_the_authenticated_client() -> None:
    from cds_hooks import Card, CdsResponse, Invocation, ServiceRegistry, Source

    registry = ServiceRegistry()

    @registry.service(id="who", hook="order-sign", title="Who", description="D")
    async def who(invocation: Invocation) -> CdsResponse:
        assert invocation.client is not None
        summary = f"{invocation.client.iss} {invocation.client.tenant}"
        return CdsResponse(
            cards=(Card(summary=summary, indicator="info", source=Source(label="t")),)
        )

    app = make_app(registry, config=auth_config(), clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post(
            "/cds-services/who",
            json=order_sign_request(),
            headers=bearer(token(BASE + "/cds-services/who", tenant="t-9")),
        )
    assert response.json()["cards"][0]["summary"] == f"{EC_ISS} t-9"


@pytest.mark.parametrize("nbf_offset", [-3600, 0, 30])
async def test_nbf_within_the_leeway_is_accepted(
    client: httpx.AsyncClient, nbf_offset: int
) -> None:
    """nbf gets the same leeway as iat (30 s)."""
    jwt_value = token(SERVICE_AUD, nbf=int(NOW) + nbf_offset)
    assert (await call_service(client, jwt_value)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", SERVICE),
        ("POST", SERVICE + "/feedback"),
        ("GET", "/cds-services"),
        ("POST", "/cds-services//probe-order-sign"),
    ],
)
async def test_deeply_nested_token_header_is_a_401_without_traceback(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    """Issue 17 item 6: a header of 12,000 '[' (16,000 characters, under the length cap) made
    the JSON decoder recurse until RecursionError: a 500 before authentication, with a
    traceback in the log."""
    caplog.set_level("DEBUG")
    headers = bearer(with_header_text(b"[" * 12_000))
    response = await client.request(method, path, json=order_sign_request(), headers=headers)
    assert response.status_code == 401
    assert response.json()["issue"][0]["code"] == "login"
    for record in caplog.records:
        assert record.exc_info is None
        assert "RecursionError" not in record.getMessage()
    assert any("auth_reason=malformed token" in r.getMessage() for r in caplog.records)


# ------------------------------------------- an inline JWK Set and the Sandbox's jku (issue 18)

SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


async def _inline_only_client(jwks: dict[str, Any]) -> httpx.AsyncClient:
    config = auth_config(trusted_issuers=(TrustedIssuer(iss=EC_ISS, jwks=jwks),))
    app = make_app(config=config, clock=lambda: NOW)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal")


async def test_inline_jwks_issuer_accepts_a_token_carrying_jku_without_fetching_it() -> None:
    """The CDS Hooks Sandbox always sends ``jku``: an issuer configured with an inline JWK Set
    only used to refuse every one of its tokens (401). The jku is a hint; the key comes from
    the configuration, and nothing is fetched."""
    async with await _inline_only_client(public_jwks(EC_KEY)) as client:
        with respx.mock(assert_all_mocked=False) as mock:
            jwt_value = token(SERVICE_AUD, header={"jku": SANDBOX_JKU})
            assert (await call_service(client, jwt_value)).status_code == 200
        assert mock.calls.call_count == 0


async def test_inline_jwks_issuer_never_takes_a_key_from_the_jku() -> None:
    """A token signed with a key the configuration does not hold is refused, whatever its jku
    names, and the jku is never fetched."""
    attacker = "https://attacker.example/jwks.json"
    async with await _inline_only_client(public_jwks(EC_KEY)) as client:
        with respx.mock(assert_all_called=False, assert_all_mocked=False) as mock:
            route = mock.get(attacker).respond(json=public_jwks(OTHER_EC_KEY))
            for header in ({"jku": attacker}, {"jku": attacker, "kid": "new"}):
                jwt_value = token(SERVICE_AUD, key=OTHER_EC_KEY, header=header)
                assert (await call_service(client, jwt_value)).status_code == 401
        assert route.call_count == 0
        assert mock.calls.call_count == 0


async def test_a_configured_jwks_url_still_refuses_a_different_jku(
    client: httpx.AsyncClient,
) -> None:
    """With a jwks_url configured (and an inline set beside it) a jku naming anything else is
    still refused, even for a token the inline key verifies."""
    jwt_value = token(SERVICE_AUD, header={"jku": "https://elsewhere.example/jwks.json"})
    assert (await call_service(client, jwt_value)).status_code == 401
