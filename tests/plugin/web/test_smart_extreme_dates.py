"""The SMART app on a visit whose FHIR server records a service ending 100 years later (issue 17:
a 57 MB page, every caller stalled for 2 s) or starting in year 1 at +05:00 (an OverflowError).
Now the page shows the visit at once, with the finding, and the service is not drawn."""

from __future__ import annotations

import json
from pathlib import Path
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
ENCOUNTER = "enc-dario-overlap"
PROCEDURE = "proc-dario-overlap-1"


@pytest.mark.parametrize(
    ("member", "value"),
    [("end", "2125-03-04T10:00:00-05:00"), ("start", "0001-01-01T00:00:00+05:00")],
)
async def test_the_smart_app_shows_the_visit_with_the_date_as_a_finding(
    tmp_path: Path, member: str, value: str
) -> None:
    resources = load_bundle_resources("overlapping-time-blocks.json")
    (procedure,) = [r for r in resources if r.get("id") == PROCEDURE]
    procedure["performedPeriod"][member] = value
    ehr = FakeEhr(base=EHR, resources=resources, app_context=json.dumps({"encounter": ENCOUNTER}))
    ehr_app = make_fake_ehr_app(ehr)
    settings = dev_settings(tmp_path, fhir_server_allowlist=[f"{EHR}/fhir"])
    cds_config(settings)
    app = FastAPI()
    install_web(app, settings, WebSettings(), http_transport=httpx.ASGITransport(app=ehr_app))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ehr_app), base_url=EHR) as ehr_client,
    ):
        start = await client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L1"})
        authorize = await ehr_client.get(start.headers["location"])
        back = urlsplit(authorize.headers["location"])
        callback = await client.get(f"{back.path}?{back.query}")
        assert callback.status_code == 303
        page = await client.get("/smart/app")
    assert page.status_code == 200, page.text
    assert len(page.content) < 100_000  # before: 57 MB for a 100-year span
    html = page.text
    assert f'data-ref="Procedure/{PROCEDURE}"' not in html  # not drawn
    assert 'data-ref="Procedure/proc-dario-overlap-2"' in html  # the rest of the visit is
    assert 'data-rule="W-NO-DURATION"' in html
    assert "outside what a visit can be" in html
