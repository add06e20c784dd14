"""``demo-fhir`` on a loopback port, read over real HTTP by the two clients it is for.

1. The CDS service with **no prefetch**: it fetches the visit from ``fhirServer`` (demo-fhir,
   allow-listed, no token: ``ALLOW_UNAUTHENTICATED_FHIR``) and searches the patient's day; its
   cards give the same answer as ``check`` of the sample bundle.
2. The **SMART app** behind a launcher: the tests' fake EHR (``fake_ehr.py``) is the
   authorization server, and its FHIR routes are replaced by a proxy to demo-fhir that checks
   the issued token and rewrites demo-fhir's base URL in the answers, as smart-launcher-v2's
   proxy does. The app's page gives the same answer as ``check``.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_ehr import FakeEhr, make_fake_ehr_app
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from web_support import LiveServer, dev_settings

from plugin.app import cds_config, create_app
from plugin.cli.check import expand_paths
from plugin.demo_fhir import create_demo_app, load_store
from plugin.hook_request import build_hook_request
from plugin.services import DISCHARGE_SERVICE, EXTENSION_KEY, ORDER_SIGN_SERVICE
from plugin.web.install import install_web
from plugin.web.settings import WebSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sample_bundles"))
from scenario_support import BUNDLES, bundle
from test_entry_points_agree import check, from_cards, from_smart_page

pytestmark = pytest.mark.anyio

LAUNCHER = "http://launcher.test"
Json = dict[str, Any]
#: One plain visit, two whose day holds two encounters (pooled through the date search, XE
#: judged across them), the two encounter-discharge samples.
SAMPLES = [
    ("clean-pair-59-on-97530.json", "order-sign"),
    ("two-encounters-same-day.json", "order-sign"),
    ("xe-separate-encounters.json", "order-sign"),
    ("discharge-procedure-extensions.json", "encounter-discharge"),
    ("discharge-claim-lines.json", "encounter-discharge"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    """demo-fhir over the sample bundles, on a free loopback port; its base URL."""
    store = load_store(expand_paths([BUNDLES]))
    with LiveServer(create_demo_app(store)) as server:
        yield server.url


@pytest.mark.parametrize(("sample", "hook"), SAMPLES)
async def test_cds_service_without_prefetch_reads_the_visit_from_demo_fhir(
    demo: str, tmp_path: Path, sample: str, hook: str
) -> None:
    data = bundle(sample)
    settings = dev_settings(
        tmp_path,
        fhir_server_allowlist=[demo],
        allow_unauthenticated_fhir=True,
        log_level="WARNING",
    )
    request = build_hook_request(data, hook)  # type: ignore[arg-type]
    del request["prefetch"]  # type: ignore[misc]
    request["fhirServer"] = demo  # type: ignore[typeddict-unknown-key]
    # Every card, so that the visits' summary cards can be compared with check (by default a
    # visit with nothing to act on gets no card).
    request["extension"] = {EXTENSION_KEY: {"cardPolicy": "all"}}
    service = ORDER_SIGN_SERVICE if hook == "order-sign" else DISCHARGE_SERVICE
    app = create_app(settings)
    # With its lifespan, so that shutting down closes the connections the service opened to
    # demo-fhir (real sockets), as a served instance does.
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
            response = await client.post(f"/cds-services/{service}", json=request)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert cards
    assert not any("Count covers this encounter only" in c.get("detail", "") for c in cards)
    # the encounter's Claims come through the fallback too (optional `claims` key): the charge
    # lines a Claim carries are read as `check` reads them from the bundle
    assert from_cards(cards) == check(data)


def _launcher_app(ehr: FakeEhr, demo: str) -> FastAPI:
    """The fake EHR's SMART discovery, authorize and token endpoints, and a FHIR proxy to
    demo-fhir in place of its own FHIR routes."""
    fake = make_fake_ehr_app(ehr)
    app = FastAPI()
    app.router.routes.extend(
        route
        for route in fake.router.routes
        if not getattr(route, "path", "").startswith("/fhir/{")
    )

    @app.get("/fhir/{path:path}")
    async def proxy(path: str, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if not (header.startswith("Bearer ") and header[7:] in ehr.tokens):
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=401)
        ehr.fhir_requests.append(f"GET {path}?{request.url.query}")
        async with httpx.AsyncClient() as upstream:  # real HTTP to demo-fhir
            answer = await upstream.get(
                f"{demo}/{path}",
                params=list(request.query_params.multi_items()),
                headers={"Accept": "application/fhir+json"},
            )
        body = answer.text.replace(demo, ehr.fhir_base)
        return Response(body, answer.status_code, media_type="application/fhir+json")

    return app


async def test_smart_app_behind_a_launcher_reads_the_visit_from_demo_fhir(
    demo: str, tmp_path: Path
) -> None:
    sample = "two-encounters-same-day.json"
    data = bundle(sample)
    context = build_hook_request(data, "order-sign")["context"]  # type: ignore[arg-type]
    ehr = FakeEhr(
        base=LAUNCHER,
        resources=[],  # the launcher holds nothing: every FHIR read goes to demo-fhir
        app_context=json.dumps({"encounter": context["encounterId"]}),
        patient=context["patientId"],
    )
    launcher = _launcher_app(ehr, demo)
    settings = dev_settings(
        tmp_path, fhir_server_allowlist=[f"{LAUNCHER}/fhir"], log_level="WARNING"
    )
    cds_config(settings)
    app = FastAPI()
    install_web(app, settings, WebSettings(), http_transport=httpx.ASGITransport(app=launcher))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cds.test") as c,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=launcher), base_url=LAUNCHER) as e,
    ):
        start = await c.get("/smart/launch", params={"iss": f"{LAUNCHER}/fhir", "launch": "L"})
        assert start.status_code == 302, start.text
        authorize = await e.get(start.headers["location"])
        back = httpx.URL(authorize.headers["location"])
        callback = await c.get(f"{back.path}?{back.query.decode()}")
        assert callback.status_code == 303, callback.text
        page = await c.get(callback.headers["location"])
    assert page.status_code == 200, page.text
    assert from_smart_page(page.text) == check(copy.deepcopy(data))
    assert "Count covers this encounter only" not in page.text
    # what the app read, all of it through the proxy from demo-fhir
    assert any(r.startswith("GET Encounter/") for r in ehr.fhir_requests)
    assert any(r.startswith("GET ServiceRequest?encounter=") for r in ehr.fhir_requests)
    assert any(r.startswith("GET Procedure?") and "date=" in r for r in ehr.fhir_requests)
