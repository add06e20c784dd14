"""The payer rule from Coverage through every entry point (issue 15): the ``coverage`` prefetch
key (sent, fetched from fhirServer when absent, failing without failing the call), the request
extension and ``check --payer-rule`` as overrides, the reason on the cards, in ``check`` (text
and JSON), the sandbox timeline, and escaping of payer names."""

from __future__ import annotations

import copy
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
from plugin.services import EXTENSION_KEY, ORDER_SIGN_SERVICE, PREFETCH
from plugin.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_bundles"
MEDICARE = "coverage-medicare-part-b.json"
COMMERCIAL = "coverage-commercial-ama.json"
EXAMPLE_MAPPING = SAMPLES / "payer-rules-example.toml"
FHIR = "https://ehr.example.org/fhir"
MEDICARE_REASON = "Medicare Part B coverage → CMS 8-minute rule"
AMA_REASON = "Harbor Mutual PPO coverage → AMA per-code rule"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("THERAPY_CDS_")]:
        monkeypatch.delenv(key)


def _bundle(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    return loaded


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        dev_mode=True,
        require_auth=False,
        database_url=f"sqlite:///{tmp_path / 'cds.db'}",
        log_level="WARNING",
        **overrides,
    )


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
        yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(_settings(tmp_path)):
        yield c


@pytest.fixture
async def mapped_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(_settings(tmp_path, payer_rules_file=EXAMPLE_MAPPING)):
        yield c


async def _cards(
    client: httpx.AsyncClient, request: dict[str, Any], policy: str = "all"
) -> list[dict[str, Any]]:
    request.setdefault("extension", {}).setdefault(EXTENSION_KEY, {})["cardPolicy"] = policy
    response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=request)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def _summary(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in cards if c["source"]["topic"]["code"] == "units-summary")


def _with_fhir(request: dict[str, Any]) -> dict[str, Any]:
    request["fhirServer"] = FHIR
    request["fhirAuthorization"] = {
        "access_token": "opaque-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "therapy-cds",
    }
    return request


def test_both_services_declare_the_coverage_key() -> None:
    assert PREFETCH["coverage"] == "Coverage?patient={{context.patientId}}&status=active"
    for key in ("patient", "encounter", "procedures", "carePlans"):
        assert key in PREFETCH


async def test_discovery_lists_the_coverage_key(client: httpx.AsyncClient) -> None:
    services = (await client.get("/cds-services")).json()["services"]
    assert len(services) == 2
    for service in services:
        assert service["prefetch"]["coverage"] == PREFETCH["coverage"]


# ---- the prefetched Coverage decides, and every card that shows the units says why


async def test_a_medicare_coverage_gives_the_cms_rule_and_says_so(
    client: httpx.AsyncClient,
) -> None:
    cards = await _cards(client, build_hook_request(_bundle(MEDICARE)))
    summary = _summary(cards)
    assert summary["summary"].endswith("CMS)")
    assert "Medicare Part B coverage → CMS 8-minute rule" in summary["detail"]
    # the units card (E-UNITS-EXCEED) carries the table and the same reason
    problems = await _cards(client, build_hook_request(_bundle(MEDICARE)), policy="problems")
    (units_card,) = problems
    assert units_card["indicator"] == "critical"
    assert "Medicare Part B coverage → CMS 8-minute rule" in units_card["detail"]


async def test_a_commercial_payer_mapped_to_ama(mapped_client: httpx.AsyncClient) -> None:
    cards = await _cards(mapped_client, build_hook_request(_bundle(COMMERCIAL)))
    summary = _summary(cards)
    assert summary["summary"].endswith("AMA)")
    assert AMA_REASON in summary["detail"]
    assert not [c for c in cards if c["indicator"] == "critical"]  # billed per code: as allowed


async def test_without_the_mapping_the_commercial_payer_gets_the_default(
    client: httpx.AsyncClient,
) -> None:
    cards = await _cards(client, build_hook_request(_bundle(COMMERCIAL)))
    detail = _summary(cards)["detail"]
    assert "Harbor Mutual Insurance (example) coverage not in the payer mapping" in detail
    assert "default CMS 8-minute rule" in detail


async def test_the_request_extension_overrides_the_coverage(
    mapped_client: httpx.AsyncClient,
) -> None:
    request = build_hook_request(_bundle(COMMERCIAL))
    request["extension"] = {EXTENSION_KEY: {"payerRule": "cms"}}
    detail = _summary(await _cards(mapped_client, request))["detail"]
    assert "request extension → CMS 8-minute rule" in detail
    # an extension without payerRule leaves the Coverage in charge
    request = build_hook_request(_bundle(COMMERCIAL))
    request["extension"] = {EXTENSION_KEY: {"pairRule": "cms"}}
    assert AMA_REASON in _summary(await _cards(mapped_client, request))["detail"]


async def test_a_payer_name_is_escaped_in_the_card(client: httpx.AsyncClient) -> None:
    data = _bundle(COMMERCIAL)
    for entry in data["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Coverage":
            resource["payor"][0]["display"] = "**Evil** [click](http://x.test) <b>|"
    detail = _summary(await _cards(client, build_hook_request(data)))["detail"]
    assert "**Evil**" not in detail
    assert "[click](" not in detail
    assert "\\*\\*Evil\\*\\*" in detail


# ---- the key absent: fetched from fhirServer; failing, or without access: the default


async def test_an_absent_key_is_fetched_from_the_fhir_server(tmp_path: Path) -> None:
    request = _with_fhir(build_hook_request(_bundle(MEDICARE)))
    coverage = request["prefetch"].pop("coverage")
    patient = request["context"]["patientId"]
    settings = _settings(tmp_path, fhir_server_allowlist=[FHIR])
    with respx.mock(assert_all_called=False) as ehr:
        search = ehr.get(f"{FHIR}/Coverage", params={"patient": patient, "status": "active"})
        search.respond(json=coverage)
        same_day = ehr.get(f"{FHIR}/Procedure").respond(json=request["prefetch"]["procedures"])
        async for client in _client(settings):
            cards = await _cards(client, request)
    assert search.called
    assert search.calls.last.request.headers["Authorization"] == "Bearer opaque-token"
    assert same_day.called
    assert "Medicare Part B coverage → CMS 8-minute rule" in _summary(cards)["detail"]


@pytest.mark.parametrize("answer", [500, 404, "timeout"])
async def test_a_failed_coverage_fetch_never_fails_the_call(
    tmp_path: Path, answer: int | str
) -> None:
    request = _with_fhir(build_hook_request(_bundle(COMMERCIAL)))
    request["prefetch"].pop("coverage")
    settings = _settings(
        tmp_path,
        fhir_server_allowlist=[FHIR],
        payer_rules_file=EXAMPLE_MAPPING,
        payer_rule="cms",
        fhir_timeout_seconds=0.2,
        fhir_deadline_seconds=0.5,
    )
    with respx.mock(assert_all_called=False) as ehr:
        route = ehr.get(f"{FHIR}/Coverage")
        if answer == "timeout":
            route.side_effect = httpx.ReadTimeout("slow")
        else:
            route.respond(status_code=int(answer), json={"resourceType": "OperationOutcome"})
        ehr.get(f"{FHIR}/Procedure").respond(json=request["prefetch"]["procedures"])
        async for client in _client(settings):
            cards = await _cards(client, request)
    assert route.called
    detail = _summary(cards)["detail"]
    assert "coverage could not be read (the FHIR search failed) → default CMS" in detail
    assert "AMA" not in _summary(cards)["summary"]


async def test_without_the_key_and_without_fhir_access_the_default_applies(
    mapped_client: httpx.AsyncClient,
) -> None:
    request = build_hook_request(_bundle(COMMERCIAL))
    request["prefetch"].pop("coverage")
    detail = _summary(await _cards(mapped_client, request))["detail"]
    assert "coverage not prefetched (and no FHIR access) → default CMS" in detail


async def test_a_null_key_means_no_coverage(mapped_client: httpx.AsyncClient) -> None:
    request = build_hook_request(_bundle(COMMERCIAL))
    request["prefetch"]["coverage"] = None
    detail = _summary(await _cards(mapped_client, request))["detail"]
    assert "no active coverage on 2025-03-25 → default CMS" in detail


# ---- check: text and JSON, --payer-rule as an override, a bad mapping file


def _check(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli_app, ["check", *args], env=env)


def test_check_json_and_text_say_which_rule_and_why() -> None:
    result = _check(str(SAMPLES / MEDICARE), "--format", "json")
    assert result.exit_code == 0, result.output
    (visit,) = json.loads(result.stdout)["visits"]
    assert (visit["payer_rule"], visit["payer_rule_reason"]) == ("cms", MEDICARE_REASON)
    text = _check(str(SAMPLES / MEDICARE), env={"COLUMNS": "200"})
    assert f"payer rule: {MEDICARE_REASON}" in text.stdout


def test_check_uses_the_mapping_file_and_the_option_overrides_it() -> None:
    env = {"THERAPY_CDS_PAYER_RULES_FILE": str(EXAMPLE_MAPPING)}
    result = _check(str(SAMPLES / COMMERCIAL), "--format", "json", env=env)
    (visit,) = json.loads(result.stdout)["visits"]
    assert (visit["payer_rule"], visit["payer_rule_reason"]) == ("ama", AMA_REASON)
    assert visit["units"] == {"97140": 2, "97530": 2}
    forced = _check(str(SAMPLES / COMMERCIAL), "--format", "json", "--payer-rule", "cms", env=env)
    (visit,) = json.loads(forced.stdout)["visits"]
    assert visit["payer_rule"] == "cms"
    assert visit["payer_rule_reason"] == "chosen with --payer-rule → CMS 8-minute rule"


def test_check_refuses_a_bad_mapping_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "payers.toml"
    bad.write_text('[[payer]]\nlabel = "x"\nrule = "cms"\n', encoding="utf-8")
    result = _check(str(SAMPLES / MEDICARE), env={"THERAPY_CDS_PAYER_RULES_FILE": str(bad)})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "THERAPY_CDS_PAYER_RULES_FILE" in lines[0]
    assert "give at least one of" in lines[0]
    assert "Traceback" not in result.output


def test_a_date_outside_every_coverage_period_gets_the_default() -> None:
    data = _bundle(MEDICARE)
    for entry in data["entry"]:
        if entry["resource"]["resourceType"] == "Coverage":
            entry["resource"]["period"] = {"start": "2026-01-01"}
    path_data = copy.deepcopy(data)
    from fhir_mappings import map_bundle
    from plugin.pipeline import check_record

    result = check_record(map_bundle(path_data), payer_rule="ama", pair_rule="cms")
    (visit,) = result.analysis.visits
    assert visit.payer_rule == "ama"
    assert visit.payer_rule_reason == "no active coverage on 2025-03-24 → default AMA per-code rule"


# ---- the sandbox


async def test_the_sandbox_uses_coverage_unless_a_rule_is_chosen(tmp_path: Path) -> None:
    async for client in _client(_settings(tmp_path, payer_rules_file=EXAMPLE_MAPPING)):
        data = _bundle(COMMERCIAL)
        timeline = await client.post("/sandbox/api/timeline", json={"bundle": data})
        assert timeline.status_code == 200, timeline.text
        (visit,) = timeline.json()["visits"]
        assert (visit["payerRule"], visit["payerRuleReason"]) == ("ama", AMA_REASON)
        chosen = await client.post(
            "/sandbox/api/timeline", json={"bundle": data, "payerRule": "cms"}
        )
        (visit,) = chosen.json()["visits"]
        assert visit["payerRuleReason"] == "chosen in the sandbox → CMS 8-minute rule"
        built = await client.post("/sandbox/api/request", json={"bundle": data})
        assert "payerRule" not in built.json()["request"]["extension"][EXTENSION_KEY]
        built = await client.post("/sandbox/api/request", json={"bundle": data, "payerRule": "ama"})
        assert built.json()["request"]["extension"][EXTENSION_KEY]["payerRule"] == "ama"
        refused = await client.post(
            "/sandbox/api/timeline", json={"bundle": data, "payerRule": "medicare"}
        )
        assert refused.status_code == 400
