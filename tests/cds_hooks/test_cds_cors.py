"""CORS-1, CORS-2: preflights answered, headers on every response including errors."""

from __future__ import annotations

import httpx
import pytest
from cdsh_support import SANDBOX_ORIGIN, make_app, order_sign_request

from cds_hooks import CdsHooksConfig, CdsResponse, Invocation, ServiceRegistry

pytestmark = pytest.mark.anyio

PREFLIGHT = {
    "Origin": SANDBOX_ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.mark.parametrize(
    "path",
    [
        "/cds-services",
        "/cds-services/",
        "/cds-services/probe-order-sign",
        "/cds-services/probe-order-sign/feedback",
        "/cds-services/unknown-service",
    ],
)
async def test_preflight_from_the_sandbox(client: httpx.AsyncClient, path: str) -> None:
    response = await client.options(path, headers=PREFLIGHT)
    assert 200 <= response.status_code < 300
    assert response.headers["access-control-allow-origin"] == SANDBOX_ORIGIN
    assert response.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    assert response.headers["access-control-allow-headers"] == "Authorization, Content-Type"
    assert "Origin" in response.headers["vary"]
    assert "access-control-allow-credentials" not in response.headers
    assert "access-control-allow-private-network" not in response.headers


async def test_private_network_preflight(client: httpx.AsyncClient) -> None:
    headers = {**PREFLIGHT, "Access-Control-Request-Private-Network": "true"}
    response = await client.options("/cds-services", headers=headers)
    assert response.headers["access-control-allow-private-network"] == "true"


async def test_preflight_from_unlisted_origin_gets_no_grant(client: httpx.AsyncClient) -> None:
    headers = {**PREFLIGHT, "Origin": "https://evil.example"}
    response = await client.options("/cds-services", headers=headers)
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/cds-services", None, 200),
        ("POST", "/cds-services/probe-order-sign", order_sign_request(), 200),
        ("POST", "/cds-services/unknown", order_sign_request(), 404),
        ("POST", "/cds-services/probe-order-sign", {"hook": "order-sign"}, 400),
        ("GET", "/cds-services/probe-order-sign", None, 405),
        ("POST", "/cds-services/probe-order-sign", order_sign_request(prefetch={}), 412),
    ],
)
async def test_cors_headers_on_every_response(
    client: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    response = await client.request(method, path, json=body, headers={"Origin": SANDBOX_ORIGIN})
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == SANDBOX_ORIGIN
    assert "Origin" in response.headers["vary"]


async def test_cors_headers_on_a_500() -> None:
    registry = ServiceRegistry()

    @registry.service(id="boom", hook="order-sign", title="Boom", description="crashes")
    async def boom(invocation: Invocation) -> CdsResponse:
        raise RuntimeError("crash")

    app = make_app(registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post(
            "/cds-services/boom", json=order_sign_request(), headers={"Origin": SANDBOX_ORIGIN}
        )
    assert response.status_code == 500
    assert response.headers["access-control-allow-origin"] == SANDBOX_ORIGIN


async def test_wildcard_origin() -> None:
    app = make_app(config=CdsHooksConfig(require_auth=False, cors_origins=("*",)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        pre = await c.options(
            "/cds-services", headers={**PREFLIGHT, "Origin": "http://localhost:8080"}
        )
        got = await c.get("/cds-services", headers={"Origin": "http://localhost:8080"})
    assert pre.headers["access-control-allow-origin"] == "*"
    assert got.headers["access-control-allow-origin"] == "*"


async def test_other_paths_are_left_alone() -> None:
    app = make_app()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/health", headers={"Origin": SANDBOX_ORIGIN})
    assert "access-control-allow-origin" not in response.headers


async def test_plain_options_without_preflight_headers(client: httpx.AsyncClient) -> None:
    response = await client.options("/cds-services/probe-order-sign")
    assert response.status_code == 204
    assert "POST" in response.headers["allow"]
