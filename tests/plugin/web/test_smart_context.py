"""The SMART app and the patient in context (issue 14), against the fake EHR on a transport.

The session is bound to the launch's patient and encounter: another patient's encounter is
refused (403) and never replaces the session's; resources about another patient are left out as
the services leave them out; the patient banner is shown when the launcher asks for it; the
visit's charges are read (or said to be unavailable), and the day's other visits are pooled.
The launch form suggests only FHIR base URLs that answer SMART discovery.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fake_ehr import FakeEhr, load_bundle_resources, make_fake_ehr_app
from fastapi import FastAPI
from web_support import dev_settings

from plugin.app import cds_config, configure_logging
from plugin.web.install import install_web
from plugin.web.settings import WebSettings

pytestmark = pytest.mark.anyio
EHR = "http://ehr.test"
AVERY = ("pat-avery-clean", "enc-avery-clean")  # clean-pair-59-on-97530.json
BRAM = ("pat-bram-nomod", "enc-bram-nomod")  # pair-no-modifier.json


@dataclass
class Rig:
    ehr: FakeEhr
    client: httpx.AsyncClient
    ehr_client: httpx.AsyncClient


@asynccontextmanager
async def make_rig(
    tmp_path: Path, *samples: str, allowlist: list[str] | None = None
) -> AsyncIterator[Rig]:
    resources = [r for name in samples for r in load_bundle_resources(name)]
    ehr = FakeEhr(base=EHR, resources=resources)
    ehr_app = make_fake_ehr_app(ehr)
    settings = dev_settings(tmp_path, fhir_server_allowlist=allowlist or [f"{EHR}/fhir"])
    configure_logging(settings.log_level)
    cds_config(settings)
    app = FastAPI()
    install_web(app, settings, WebSettings(), http_transport=httpx.ASGITransport(app=ehr_app))
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ehr_app), base_url=EHR) as ehr_client,
    ):
        yield Rig(ehr, client, ehr_client)


async def launch(
    rig: Rig, *, patient: str | None, encounter: str | None, banner: bool = False
) -> httpx.Response:
    """An EHR launch for ``patient`` and ``encounter``; the first page of the app."""
    rig.ehr.patient = patient
    rig.ehr.app_context = json.dumps({"encounter": encounter}) if encounter else None
    rig.ehr.need_patient_banner = banner
    start = await rig.client.get("/smart/launch", params={"iss": f"{EHR}/fhir", "launch": "L"})
    assert start.status_code == 302, start.text
    authorize = await rig.ehr_client.get(start.headers["location"])
    back = urlsplit(authorize.headers["location"])
    callback = await rig.client.get(f"{back.path}?{back.query}")
    assert callback.status_code == 303, callback.text
    return await rig.client.get(callback.headers["location"])


def shown_encounter(page: httpx.Response) -> str:
    return page.text.split("Encounter <code>", 1)[1].split("</code>", 1)[0]


def pair(page: httpx.Response) -> str:
    return page.text.split('data-pair="', 1)[1].split('"', 1)[0]


# ---------------------------------------------------------------- the patient in context


async def test_another_patients_encounter_is_refused_and_never_replaces_the_launchs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_rig(tmp_path, "clean-pair-59-on-97530.json", "pair-no-modifier.json") as rig:
        first = await launch(rig, patient=AVERY[0], encounter=AVERY[1])
        assert first.status_code == 200
        assert shown_encounter(first) == AVERY[1]
        rig.ehr.fhir_requests.clear()

        refused = await rig.client.get("/smart/app", params={"encounter": BRAM[1]})
        assert refused.status_code == 403
        assert "not part of the launch" in refused.text
        assert "Okafor" not in refused.text
        assert BRAM[1] not in refused.text
        # nothing of the other patient was searched: only the Encounter, to see whose it is
        assert rig.ehr.fhir_requests == [f"GET Encounter/{BRAM[1]}"]

        again = await rig.client.get("/smart/app")
        assert again.status_code == 200
        assert shown_encounter(again) == AVERY[1]
    assert BRAM[1] not in caplog.text
    assert BRAM[0] not in caplog.text


async def test_a_launch_for_one_encounter_and_no_patient_shows_only_that_encounter(
    tmp_path: Path,
) -> None:
    async with make_rig(tmp_path, "clean-pair-59-on-97530.json", "pair-no-modifier.json") as rig:
        first = await launch(rig, patient=None, encounter=AVERY[1])
        assert first.status_code == 200
        assert pair(first) == "SUPPORTED"  # the Encounter's subject is the patient analysed
        refused = await rig.client.get("/smart/app", params={"encounter": BRAM[1]})
        assert refused.status_code == 403
        assert shown_encounter(await rig.client.get("/smart/app")) == AVERY[1]


async def test_another_encounter_of_the_launchs_patient_may_be_shown(tmp_path: Path) -> None:
    async with make_rig(tmp_path, "two-encounters-same-day.json") as rig:
        first = await launch(rig, patient="pat-quinn-twovisits", encounter="enc-quinn-pm")
        assert first.status_code == 200, first.text
        other = await rig.client.get("/smart/app", params={"encounter": "enc-quinn-am"})
        assert other.status_code == 200
        assert shown_encounter(other) == "enc-quinn-am"


async def test_resources_about_another_patient_are_left_out_and_counted(tmp_path: Path) -> None:
    async with make_rig(tmp_path, "clean-pair-59-on-97530.json") as rig:
        stray = copy.deepcopy(next(r for r in rig.ehr.of_type("Procedure")))
        stray["id"] = "proc-someone-else"
        stray["subject"] = {"reference": f"Patient/{BRAM[0]}"}
        rig.ehr.resources.append(stray)
        page = await launch(rig, patient=AVERY[0], encounter=AVERY[1])
    assert page.status_code == 200
    assert "1 resource(s) about another patient were left out" in page.text
    assert "proc-someone-else" not in page.text
    assert 'data-minutes="38"' in page.text  # as without it
    assert pair(page) == "SUPPORTED"


async def test_the_patient_banner_is_shown_when_the_launcher_asks_for_it(tmp_path: Path) -> None:
    async with make_rig(tmp_path, "clean-pair-59-on-97530.json") as rig:
        patient = rig.ehr.of_type("Patient")[0]
        patient["name"] = [{"use": "official", "family": "<b>Lindqvist</b>", "given": ["Avery"]}]
        without = await launch(rig, patient=AVERY[0], encounter=AVERY[1])
        assert "patient-banner" not in without.text
        page = await launch(rig, patient=AVERY[0], encounter=AVERY[1], banner=True)
    assert page.status_code == 200
    assert 'id="patient-banner"' in page.text
    assert "Avery &lt;b&gt;Lindqvist&lt;/b&gt;" in page.text  # escaped, never markup
    assert "<b>Lindqvist</b>" not in page.text
    assert "1961-07-14" in page.text


# ---------------------------------------------------------------- one analysis


async def test_the_charges_are_read_so_a_clean_pair_is_supported(tmp_path: Path) -> None:
    async with make_rig(tmp_path, "clean-pair-59-on-97530.json") as rig:
        page = await launch(rig, patient=AVERY[0], encounter=AVERY[1])
        scope = rig.ehr.authorize_requests[-1]["scope"].split()
    assert {"user/ServiceRequest.rs", "user/Claim.rs", "user/Patient.r"} <= set(scope)
    assert pair(page) == "SUPPORTED"
    assert "data-rule=" not in page.text  # no finding at all, as check says


async def test_charges_the_server_does_not_offer_are_said_to_be_unavailable(
    tmp_path: Path,
) -> None:
    async with make_rig(tmp_path, "clean-pair-59-on-97530.json") as rig:
        rig.ehr.not_offered = {"ServiceRequest", "Claim"}
        page = await launch(rig, patient=AVERY[0], encounter=AVERY[1])
    assert page.status_code == 200
    assert pair(page) == "INDETERMINATE"
    assert 'data-rule="I-CHARGES-NOT-AVAILABLE"' in page.text
    assert "E-PAIR-NO-MODIFIER" not in page.text


async def test_the_days_other_visit_is_pooled(tmp_path: Path) -> None:
    async with make_rig(tmp_path, "two-encounters-same-day.json") as rig:
        page = await launch(rig, patient="pat-quinn-twovisits", encounter="enc-quinn-pm")
        searches = [r for r in rig.ehr.fhir_requests if "&date=" in r]
    assert page.status_code == 200
    assert 'data-minutes="39"' in page.text
    assert 'data-units="97110:1,97530:2"' in page.text
    assert "W-CODE-ZERO-UNITS" not in page.text
    assert "Count covers this encounter only" not in page.text
    assert len(searches) == 1
    query = parse_qs(searches[0].split("?", 1)[1])
    assert query == {"patient": ["pat-quinn-twovisits"], "date": ["2025-03-13"]}


async def test_when_the_days_search_fails_the_page_says_the_count_is_this_encounters(
    tmp_path: Path,
) -> None:
    async with make_rig(tmp_path, "two-encounters-same-day.json") as rig:
        rig.ehr.failing_params = {"date"}  # the day's search breaks, the rest works
        page = await launch(rig, patient="pat-quinn-twovisits", encounter="enc-quinn-pm")
    assert page.status_code == 200
    assert "Count covers this encounter only" in page.text
    assert 'data-minutes="19"' in page.text


# ---------------------------------------------------------------- the standalone form


async def test_the_form_suggests_only_bases_that_answer_smart_discovery(tmp_path: Path) -> None:
    allowlist = [f"{EHR}/fhir", EHR, "http://ehr.test/other/"]
    async with make_rig(tmp_path, "clean-pair-59-on-97530.json", allowlist=allowlist) as rig:
        form = await rig.client.get("/smart/launch")
        assert form.status_code == 200
        assert f'<option value="{EHR}/fhir">' in form.text
        assert f'<option value="{EHR}">' not in form.text  # a prefix, not a base
        assert "/other" not in form.text.split("<datalist", 1)[1].split("</datalist>", 1)[0]
        fetched = rig.ehr.configuration_requests
        await rig.client.get("/smart/launch")
        assert rig.ehr.configuration_requests == fetched  # cached discovery


async def test_a_form_with_no_answering_base_suggests_none(tmp_path: Path) -> None:
    async with make_rig(tmp_path, "clean-pair-59-on-97530.json", allowlist=[EHR]) as rig:
        form = await rig.client.get("/smart/launch")
    assert form.status_code == 200
    assert "<option" not in form.text
    assert "none is suggested" in form.text


async def test_a_prefix_typed_in_the_form_gets_a_clear_message_not_a_502(tmp_path: Path) -> None:
    async with make_rig(tmp_path, "clean-pair-59-on-97530.json", allowlist=[EHR]) as rig:
        answer = await rig.client.get("/smart/launch", params={"iss": EHR})
    assert answer.status_code == 400
    assert "does not answer as a SMART on FHIR server" in answer.text
    assert "base URL" in answer.text
    assert 'id="launch-error"' in answer.text
    assert 'class="panel launch-form"' in answer.text  # the form again, to correct it
