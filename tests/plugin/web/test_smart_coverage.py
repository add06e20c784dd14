"""The SMART app reads the patient's Coverage and says which payer rule applies and why (issue
15); a rule chosen in the app overrides it; an EHR that does not offer or fails the Coverage
search still gets its page, with the configured default and the reason."""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fake_ehr import FakeEhr, load_bundle_resources, make_fake_ehr_app
from fastapi import FastAPI
from web_support import dev_settings

from plugin.app import cds_config
from plugin.web.install import install_web
from plugin.web.settings import WebSettings

pytestmark = pytest.mark.anyio
EHR = "http://ehr.test"
SAMPLES = Path(__file__).resolve().parents[3] / "sample_bundles"


@asynccontextmanager
async def _rig(
    tmp_path: Path, sample: str, **ehr_options: Any
) -> AsyncIterator[tuple[FakeEhr, httpx.AsyncClient, httpx.AsyncClient]]:
    resources = load_bundle_resources(sample)
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    ehr = FakeEhr(
        base=EHR,
        resources=resources,
        app_context=json.dumps({"encounter": encounter["id"]}),
        **ehr_options,
    )
    ehr_app = make_fake_ehr_app(ehr)
    settings = dev_settings(
        tmp_path,
        fhir_server_allowlist=[f"{EHR}/fhir"],
        payer_rules_file=SAMPLES / "payer-rules-example.toml",
        log_level="WARNING",
    )
    cds_config(settings)
    app = FastAPI()
    install_web(app, settings, WebSettings(), http_transport=httpx.ASGITransport(app=ehr_app))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cds.test") as c,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ehr_app), base_url=EHR) as e,
    ):
        yield ehr, c, e


async def _page(client: httpx.AsyncClient, ehr_client: httpx.AsyncClient) -> str:
    start = await client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L"})
    assert start.status_code == 302, start.text
    authorize = await ehr_client.get(start.headers["location"])
    back = urlsplit(authorize.headers["location"])
    callback = await client.get(f"{back.path}?{back.query}")
    assert callback.status_code == 303, callback.text
    page = await client.get(callback.headers["location"])
    assert page.status_code == 200, page.text
    return page.text


def _reasons(page: str) -> list[str]:
    marker = '<dd class="payer-rule-reason">'
    return [html.unescape(part.split("</dd>", 1)[0]) for part in page.split(marker)[1:]]


async def test_the_app_reads_coverage_and_says_why(tmp_path: Path) -> None:
    async with _rig(tmp_path, "coverage-commercial-ama.json") as (ehr, client, ehr_client):
        page = await _page(client, ehr_client)
        assert _reasons(page) == ["Harbor Mutual PPO coverage → AMA per-code rule"]
        assert 'data-units="97140:2,97530:2"' in page
        assert any(
            r.startswith("GET Coverage?") and "status=active" in r for r in ehr.fhir_requests
        )
        assert "user/Coverage.rs" in ehr.authorize_requests[-1]["scope"].split()
        # a rule chosen in the app overrides the Coverage
        chosen = await client.get("/smart/app", params={"payerRule": "cms"})
        assert _reasons(chosen.text) == ["chosen in the app → CMS 8-minute rule"]
        assert 'data-units="97140:2,97530:1"' in chosen.text
        back = await client.get("/smart/app", params={"payerRule": "coverage"})
        assert _reasons(back.text) == ["Harbor Mutual PPO coverage → AMA per-code rule"]


@pytest.mark.parametrize(
    ("ehr_options", "reason"),
    [
        ({"not_offered": {"Coverage"}}, "coverage not offered by the EHR to this app"),
        ({"failing_params": {"status"}}, "coverage could not be read (the FHIR search failed)"),
    ],
)
async def test_without_coverage_the_page_shows_the_default_and_why(
    tmp_path: Path, ehr_options: dict[str, Any], reason: str
) -> None:
    async with _rig(tmp_path, "coverage-commercial-ama.json", **ehr_options) as (
        _,
        client,
        ehr_client,
    ):
        page = await _page(client, ehr_client)
        assert _reasons(page) == [f"{reason} → default CMS 8-minute rule"]
