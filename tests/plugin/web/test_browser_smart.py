"""The SMART app in headless Chromium: a full EHR launch and a standalone launch against a local
authorization server and FHIR server (the fake EHR) started by the test on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fake_ehr import FakeEhr, load_bundle_resources, make_fake_ehr_app
from web_support import (
    LiveServer,
    chromium_context,
    dev_settings,
    free_port,
    needs_chromium,
    screenshot,
)

from plugin.app import create_app
from plugin.web.smart_session import COOKIE_NAME

pytestmark = [pytest.mark.browser, needs_chromium]
ENCOUNTER = "enc-bram-nomod"


@dataclass
class Deployment:
    ehr: FakeEhr
    ehr_server: LiveServer
    service: LiveServer


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    port = free_port()
    resources = load_bundle_resources("pair-no-modifier.json")
    assert any(r.get("id") == ENCOUNTER for r in resources)
    ehr = FakeEhr(base=f"http://127.0.0.1:{port}", resources=resources)
    settings = dev_settings(tmp_path_factory.mktemp("smart"), fhir_server_allowlist=[ehr.fhir_base])
    with (
        LiveServer(make_fake_ehr_app(ehr), port=port) as ehr_server,
        LiveServer(create_app(settings)) as service,
    ):
        yield Deployment(ehr, ehr_server, service)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_context() as context:
        yield context


def test_an_ehr_launch_from_the_card_link_renders_the_visit_timeline(
    deployment: Deployment, browser: Any
) -> None:
    ehr, service = deployment.ehr, deployment.service
    ehr.app_context = json.dumps({"encounter": ENCOUNTER})  # what the card's smart link carries
    ehr.patient = None
    page = browser.new_page()
    page.goto(f"{service.url}/smart/launch?iss={ehr.fhir_base}&launch=launch-123")
    page.wait_for_selector(".visit-panel")
    assert page.url == f"{service.url}/smart/app"  # the code is gone from the address bar
    bars = page.locator("svg rect.bar")
    refs = {bars.nth(i).get_attribute("data-ref") for i in range(bars.count())}
    assert refs == {"Procedure/proc-bram-nomod-1", "Procedure/proc-bram-nomod-2"}
    assert page.locator('tr.finding[data-rule="E-PAIR-NO-MODIFIER"]').count() == 1
    assert ENCOUNTER in page.inner_text(".intro")
    # PKCE was checked by the authorization server; the FHIR reads carried the token.
    assert ehr.pkce_verified >= 1
    assert ehr.authorize_requests[-1]["launch"] == "launch-123"
    assert f"GET Encounter/{ENCOUNTER}" in ehr.fhir_requests
    # The browser holds only an opaque, HttpOnly, SameSite session cookie -- never the token.
    [cookie] = [c for c in browser.cookies() if c["name"] == COOKIE_NAME]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert all(token not in page.content() for token in ehr.tokens)
    assert all(token != cookie["value"] for token in ehr.tokens)
    screenshot(page, "smart-app-ehr-launch.png")

    page.select_option("#payer-rule", "ama")
    page.click("form.rule-select button")
    page.wait_for_url("**/smart/app?*payerRule=ama*")
    assert page.locator("svg rect.bar").count() == 2
    page.close()


def test_a_standalone_launch_picks_an_encounter_then_shows_it(
    deployment: Deployment, browser: Any
) -> None:
    ehr, service = deployment.ehr, deployment.service
    ehr.app_context = None
    ehr.patient = "pat-bram-nomod"
    page = browser.new_page()
    page.goto(f"{service.url}/smart/launch")
    page.fill("#iss", ehr.fhir_base)
    page.click("form.launch-form button")
    page.wait_for_selector(f'a[href="/smart/app?encounter={ENCOUNTER}"]')
    screenshot(page, "smart-app-pick-encounter.png")
    page.click(f'a[href="/smart/app?encounter={ENCOUNTER}"]')
    page.wait_for_selector(".visit-panel svg rect.bar")
    assert page.locator("svg rect.bar").count() == 2
    page.close()


def test_a_launch_from_an_unlisted_server_stops_before_any_call(
    deployment: Deployment, browser: Any
) -> None:
    ehr, service = deployment.ehr, deployment.service
    before = len(ehr.authorize_requests)
    page = browser.new_page()
    page.goto(f"{service.url}/smart/launch?iss=http://127.0.0.1:9/fhir&launch=x")
    assert "not one this service may contact" in page.inner_text("#smart-error")
    assert len(ehr.authorize_requests) == before
    screenshot(page, "smart-app-refused.png")
    page.close()
