"""W-PROGRESS-REPORT-DUE through the services and ``check`` (R-E6): the visit history comes in
the ``therapyHistory`` / ``progressReports`` prefetch keys, or from the EHR's FHIR server when
they are absent (respx stands in for it); without it nothing is claimed and the answer says so."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from typer.testing import CliRunner

from plugin.app import create_app
from plugin.cli import app as cli_app
from plugin.hook_request import build_hook_request
from plugin.services import EXTENSION_KEY, HISTORY_KEYS, ORDER_SIGN_SERVICE, PREFETCH
from plugin.settings import Settings

pytestmark = pytest.mark.anyio

SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles"
FHIR = "https://ehr.example.org/fhir"
RULE = "W-PROGRESS-REPORT-DUE"
NOTE = "Progress report interval not checked: no visit history"
Json = dict[str, Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        database_url=f"sqlite:///{tmp_path / 'i15.db'}",
        fhir_server_allowlist=[FHIR],
        log_level="WARNING",
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as c:
        yield c


def _request(name: str, *, history: bool, policy: str = "summary") -> Json:
    data = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    request: Json = build_hook_request(data, "order-sign")
    if not history:
        for key in HISTORY_KEYS:
            del request["prefetch"][key]
    request["extension"] = {EXTENSION_KEY: {"cardPolicy": policy}}
    return request


def _searchset(bundle: Json, resource_type: str) -> Json:
    entries = [
        {"fullUrl": f"{FHIR}/{resource_type}/{e['resource']['id']}", "resource": e["resource"]}
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == resource_type
    ]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def _topics(cards: list[Json]) -> set[str]:
    return {c["source"]["topic"]["code"] for c in cards}


def _summary(cards: list[Json]) -> Json:
    (card,) = [c for c in cards if c["source"]["topic"]["code"] == "units-summary"]
    return card


def test_the_history_keys_are_declared_within_the_template_subset() -> None:
    assert PREFETCH["therapyHistory"] == "Encounter?patient={{context.patientId}}"
    assert PREFETCH["progressReports"] == (
        "DocumentReference?patient={{context.patientId}}&type=11506-3,11507-1,11508-9,11512-1"
    )


async def test_with_the_history_prefetched_the_tenth_day_is_flagged(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        f"/cds-services/{ORDER_SIGN_SERVICE}",
        json=_request("progress-report-due.json", history=True, policy="problems"),
    )
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert card["source"]["topic"]["code"] == RULE
    assert card["indicator"] == "warning"
    assert card["summary"] == (
        "97140, 97530 on 2025-03-04: treatment day 10 since the plan of care start; a progress"
        " report is due (every 10 treatment days)"
    )
    assert len(card["summary"]) < 140


async def test_a_report_in_the_window_means_no_card(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/cds-services/{ORDER_SIGN_SERVICE}",
        json=_request("progress-report-written.json", history=True, policy="problems"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["cards"] == []


async def test_without_history_and_fhir_access_nothing_is_claimed_and_the_summary_says_so(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        f"/cds-services/{ORDER_SIGN_SERVICE}",
        json=_request("progress-report-due.json", history=False),
    )
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert RULE not in _topics(cards)
    assert NOTE in _summary(cards)["detail"]


async def test_absent_history_keys_are_fetched_from_the_fhir_server(
    client: httpx.AsyncClient,
) -> None:
    data = json.loads((SAMPLES / "progress-report-due.json").read_text(encoding="utf-8"))
    request = _request("progress-report-due.json", history=False)
    request["fhirServer"] = FHIR
    request["fhirAuthorization"] = {
        "access_token": "t0ken",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Encounter.rs user/DocumentReference.rs user/Procedure.rs",
        "subject": "therapy-cds",
    }
    with respx.mock(assert_all_mocked=True) as mock:
        encounters = mock.get(url__startswith=f"{FHIR}/Encounter?").respond(
            json=_searchset(data, "Encounter")
        )
        reports = mock.get(url__startswith=f"{FHIR}/DocumentReference?").respond(
            json=_searchset(data, "DocumentReference")
        )
        mock.get(url__startswith=f"{FHIR}/Procedure?").respond(json=_searchset(data, "Procedure"))
        response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=request)
    assert response.status_code == 200, response.text
    assert encounters.call_count == 1
    assert dict(encounters.calls.last.request.url.params) == {"patient": "pat-noor-progress"}
    assert reports.calls.last.request.url.params["type"] == "11506-3,11507-1,11508-9,11512-1"
    cards = response.json()["cards"]
    assert RULE in _topics(cards)
    assert NOTE not in _summary(cards)["detail"]


async def test_a_failed_history_fetch_degrades_to_not_checked(client: httpx.AsyncClient) -> None:
    request = _request("progress-report-due.json", history=False)
    request["fhirServer"] = FHIR
    request["fhirAuthorization"] = {
        "access_token": "t0ken",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Encounter.rs",
        "subject": "therapy-cds",
    }
    with respx.mock(assert_all_mocked=True) as mock:
        mock.get(url__startswith=f"{FHIR}/Encounter?").respond(500)
        mock.get(url__startswith=f"{FHIR}/DocumentReference?").respond(403)
        mock.get(url__startswith=f"{FHIR}/Procedure?").respond(500)
        response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=request)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert RULE not in _topics(cards)
    assert NOTE in _summary(cards)["detail"]


@pytest.mark.parametrize(("history", "due"), [(True, True), (False, False)])
def test_check_over_a_request_file_reads_its_history_or_says_it_has_none(
    tmp_path: Path, history: bool, due: bool
) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(_request("progress-report-due.json", history=history)))
    result = CliRunner().invoke(cli_app, ["check", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"visits", "findings", "tables"}  # the contract, and the tables
    (visit,) = document["visits"]
    assert (RULE in {f["rule"] for f in visit["findings"]}) is due
    assert (NOTE in result.stderr) is not history
    text = CliRunner().invoke(cli_app, ["check", str(path)])
    assert (NOTE in " ".join(text.stdout.split())) is not history


def test_check_over_the_samples_flags_only_the_due_one() -> None:
    for name, due in (("progress-report-due.json", True), ("progress-report-written.json", False)):
        result = CliRunner().invoke(cli_app, ["check", str(SAMPLES / name), "--format", "json"])
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert NOTE not in result.stderr
        (visit,) = document["visits"]
        assert (RULE in {f["rule"] for f in visit["findings"]}) is due
