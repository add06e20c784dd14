"""The SMART app in headless Chromium on several sample bundles (issue 14): an EHR launch from a
loopback fake EHR (authorization + FHIR server holding the samples) shows what ``check`` says
of the bundle -- the visit's charges read, the day's other visit pooled -- and refuses another
patient's encounter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fake_ehr import FakeEhr, load_bundle_resources, make_fake_ehr_app
from web_support import (
    ROOT,
    LiveServer,
    chromium_context,
    dev_settings,
    free_port,
    needs_chromium,
    screenshot,
)

from fhir_mappings import map_bundle
from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.pipeline import check_record

pytestmark = [pytest.mark.browser, needs_chromium]
SAMPLES = [
    "clean-pair-59-on-97530.json",
    "two-encounters-same-day.json",
    "cms-vs-ama-24-plus-23.json",
    "plan-period-expired.json",
    "discharge-claim-lines.json",
]
OTHER = "pair-no-modifier.json"  # another patient on the same server


@dataclass
class Deployment:
    ehr: FakeEhr
    service: LiveServer


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    port = free_port()
    resources = [r for name in [*SAMPLES, OTHER] for r in load_bundle_resources(name)]
    ehr = FakeEhr(base=f"http://127.0.0.1:{port}", resources=resources)
    settings = dev_settings(
        tmp_path_factory.mktemp("smart-samples"), fhir_server_allowlist=[ehr.fhir_base]
    )
    with (
        LiveServer(make_fake_ehr_app(ehr), port=port),
        LiveServer(create_app(settings)) as service,
    ):
        yield Deployment(ehr, service)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_context() as context:
        yield context


def _sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "sample_bundles" / name).read_text(encoding="utf-8"))
    return data


def _launch(deployment: Deployment, browser: Any, name: str, *, banner: bool = False) -> Any:
    """An EHR launch for the sample's patient and encounter (as its hook request names them)."""
    context = build_hook_request(_sample(name), "order-sign")["context"]
    ehr = deployment.ehr
    ehr.patient = context["patientId"]
    ehr.app_context = json.dumps({"encounter": context["encounterId"]})
    ehr.need_patient_banner = banner
    page = browser.new_page()
    page.goto(f"{deployment.service.url}/smart/launch?iss={ehr.fhir_base}&launch=L-{name}")
    page.wait_for_selector(".visit-panel")
    return page


def _shown(page: Any) -> list[tuple[str, int, dict[str, int], str, list[str]]]:
    panels = page.locator(".visit-panel")
    shown = []
    for i in range(panels.count()):
        panel = panels.nth(i)
        units = panel.get_attribute("data-units") or ""
        rows = panel.locator("tr.finding")
        shown.append(
            (
                panel.get_attribute("data-date"),
                int(panel.get_attribute("data-minutes")),
                {c: int(n) for c, _, n in (u.partition(":") for u in units.split(",") if u)},
                panel.get_attribute("data-pair"),
                sorted({rows.nth(j).get_attribute("data-rule") for j in range(rows.count())}),
            )
        )
    return sorted(shown)


def _expected(name: str) -> list[tuple[str, int, dict[str, int], str, list[str]]]:
    result = check_record(map_bundle(_sample(name)), payer_rule="cms", pair_rule="cms")
    return sorted(
        (
            v.date.isoformat(),
            v.total_timed_minutes,
            dict(v.units),
            v.pair.status.value,
            sorted({f.rule.value for f in v.findings}),
        )
        for v in result.analysis.visits
    )


@pytest.mark.parametrize("name", SAMPLES)
def test_the_app_shows_what_check_says_of_the_sample(
    deployment: Deployment, browser: Any, name: str
) -> None:
    page = _launch(deployment, browser, name)
    assert _shown(page) == _expected(name)
    assert page.locator(".same-day-note").count() == 0
    screenshot(page, f"smart-app-{name.removesuffix('.json')}.png")
    page.close()


def test_the_clean_pair_is_supported_with_no_findings(deployment: Deployment, browser: Any) -> None:
    page = _launch(deployment, browser, "clean-pair-59-on-97530.json")
    panel = page.locator(".visit-panel")
    assert panel.get_attribute("data-pair") == "SUPPORTED"
    assert page.locator("tr.finding").count() == 0
    assert "No findings" in panel.inner_text()
    # the code's whole text is in the lane's tooltip, never cut mid-word
    titles = page.locator("svg g.lane text title")
    assert "Therapeutic activities, direct (one-on-one) patient contact, each 15 minutes" in [
        titles.nth(i).text_content() for i in range(titles.count())
    ]
    page.close()


def test_two_visits_of_one_day_are_pooled(deployment: Deployment, browser: Any) -> None:
    page = _launch(deployment, browser, "two-encounters-same-day.json")
    panel = page.locator(".visit-panel")
    assert panel.count() == 1
    assert panel.get_attribute("data-minutes") == "39"
    assert panel.get_attribute("data-units") == "97110:1,97530:2"
    assert page.locator('tr.finding[data-rule="W-CODE-ZERO-UNITS"]').count() == 0
    # both encounters' services are drawn
    assert page.locator("svg rect.bar").count() == 3
    page.close()


def test_another_patients_encounter_is_refused(deployment: Deployment, browser: Any) -> None:
    page = _launch(deployment, browser, "clean-pair-59-on-97530.json", banner=True)
    banner = page.locator("#patient-banner")
    assert "Avery Lindqvist" in banner.inner_text()
    assert "1961-07-14" in banner.inner_text()
    answer = page.goto(f"{deployment.service.url}/smart/app?encounter=enc-bram-nomod")
    assert answer is not None
    assert answer.status == 403
    assert "not part of the launch" in page.inner_text("#smart-error")
    assert "Okafor" not in page.content()
    screenshot(page, "smart-app-other-patient-refused.png")
    page.goto(f"{deployment.service.url}/smart/app")
    page.wait_for_selector(".visit-panel")
    assert "enc-avery-clean" in page.inner_text(".intro")
    assert "Avery Lindqvist" in page.inner_text("#patient-banner")
    page.close()
