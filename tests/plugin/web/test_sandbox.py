"""/sandbox and its helpers in process: who may see it, what the helpers build and refuse."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from web_support import ROOT, dev_settings

from plugin.app import create_app
from plugin.services import EXTENSION_KEY

pytestmark = pytest.mark.anyio
BUNDLES = ROOT / "sample_bundles"


def _bundle(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BUNDLES / name).read_text(encoding="utf-8"))
    return data


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(dev_settings(tmp_path))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def test_the_page_lists_every_scenario_and_loads_only_its_own_assets(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/sandbox")
    assert response.status_code == 200
    html = response.text
    manifest = json.loads((BUNDLES / "scenarios.json").read_text(encoding="utf-8"))
    for scenario in manifest["scenarios"]:
        assert f'value="{scenario["file"]}"' in html
    assert "https://" not in html.split("<body", 1)[0]  # nothing fetched from elsewhere
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'self'" in csp
    for asset in ("/assets/app.css", "/assets/sandbox.js", "/assets/markdown.js"):
        assert (await client.get(asset)).status_code == 200


async def test_a_sample_is_served_by_manifest_name_only(client: httpx.AsyncClient) -> None:
    ok = await client.get("/sandbox/samples/pair-no-modifier.json")
    assert ok.status_code == 200
    assert ok.json()["resourceType"] == "Bundle"
    for name in ("..%2Fpyproject.toml", "scenarios.json", "nope.json"):
        assert (await client.get(f"/sandbox/samples/{name}")).status_code == 404


async def test_request_helper_builds_the_hook_request_with_the_rule_extension(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/sandbox/api/request",
        json={"bundle": _bundle("pair-no-modifier.json"), "hook": "order-sign", "payerRule": "ama"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["serviceId"] == "therapy-timed-codes"
    request = body["request"]
    assert request["hook"] == "order-sign"
    assert set(request["prefetch"]) == {
        "patient",
        "encounter",
        "procedures",
        "carePlans",
        "therapyHistory",
        "progressReports",
        "coverage",
    }
    assert request["extension"] == {
        EXTENSION_KEY: {"payerRule": "ama", "pairRule": "cms", "cardPolicy": "problems"}
    }

    discharge = await client.post(
        "/sandbox/api/request",
        json={"bundle": _bundle("discharge-claim-lines.json"), "hook": "encounter-discharge"},
    )
    assert discharge.json()["serviceId"] == "therapy-timed-codes-discharge"
    # no payer rule chosen on the page ("coverage"): the patient's Coverage decides
    assert discharge.json()["request"]["extension"] == {
        EXTENSION_KEY: {"pairRule": "cms", "cardPolicy": "problems"}
    }


async def test_what_the_page_sends_the_service_answers_with_the_expected_cards(
    client: httpx.AsyncClient,
) -> None:
    built = await client.post(
        "/sandbox/api/request", json={"bundle": _bundle("overlapping-time-blocks.json")}
    )
    answer = await client.post(
        f"/cds-services/{built.json()['serviceId']}", json=built.json()["request"]
    )
    assert answer.status_code == 200
    # the service's default policy, said in the request: one card for the one problem
    assert built.json()["request"]["extension"][EXTENSION_KEY]["cardPolicy"] == "problems"
    (card,) = answer.json()["cards"]
    assert card["source"]["topic"]["code"] == "E-PAIR-SAME-TIMEBLOCK"
    assert "Same cause: **W-OVERLAP**" in card["detail"]
    built = await client.post(
        "/sandbox/api/request",
        json={"bundle": _bundle("overlapping-time-blocks.json"), "cardPolicy": "summary"},
    )
    answer = await client.post(
        f"/cds-services/{built.json()['serviceId']}", json=built.json()["request"]
    )
    topics = [card["source"]["topic"]["code"] for card in answer.json()["cards"]]
    assert topics == ["E-PAIR-SAME-TIMEBLOCK", "units-summary"]
    bad = await client.post(
        "/sandbox/api/request",
        json={"bundle": _bundle("overlapping-time-blocks.json"), "cardPolicy": "loud"},
    )
    assert bad.status_code == 400
    assert "cardPolicy" in bad.text


async def test_the_extension_switches_the_payer_rule(client: httpx.AsyncClient) -> None:
    # cms-vs-ama-24-plus-23: E-UNITS-EXCEED under CMS, clean under AMA (manifest).
    topics = {}
    for payer in ("cms", "ama"):
        built = await client.post(
            "/sandbox/api/request",
            json={"bundle": _bundle("cms-vs-ama-24-plus-23.json"), "payerRule": payer},
        )
        answer = await client.post(
            "/cds-services/therapy-timed-codes", json=built.json()["request"]
        )
        topics[payer] = {c["source"]["topic"]["code"] for c in answer.json()["cards"]}
    assert "E-UNITS-EXCEED" in topics["cms"]
    assert "E-UNITS-EXCEED" not in topics["ama"]


async def test_timeline_helper_draws_each_procedure_and_lists_the_findings(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/sandbox/api/timeline", json={"bundle": _bundle("overlapping-time-blocks.json")}
    )
    assert response.status_code == 200
    view = response.json()
    assert view["timeZone"] == "UTC\u221205:00"
    [visit] = view["visits"]
    assert visit["pair"] == "NOT_SUPPORTED"
    assert 'data-ref="Procedure/proc-dario-overlap-1"' in visit["svg"]
    assert 'data-ref="Procedure/proc-dario-overlap-2"' in visit["svg"]
    assert "09:10" in visit["svg"]  # local clock of the recorded offset, not UTC
    assert {f["rule"] for f in visit["findings"]} == {"E-PAIR-SAME-TIMEBLOCK", "W-OVERLAP"}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"bundle": {"resourceType": "Bundle", "entry": [{"resource": ', 400, "not valid JSON"),
        (b'["Patient/secret-123"]', 400, "JSON object"),
        (b'{"bundle": {"resourceType": "Patient", "id": "secret-123"}}', 400, "FHIR Bundle"),
        (b'{"bundle": {"resourceType": "Bundle"}, "hook": "secret-123"}', 400, "'hook'"),
        (
            b'{"bundle": {"resourceType": "Bundle", "entry": [{"resource": {"id": "secret-123"}}]}'
            b"}",
            422,
            "entry[0]",
        ),
    ],
)
async def test_bad_input_gets_a_clear_error_that_never_echoes_the_body(
    client: httpx.AsyncClient, body: bytes, status: int, says: str
) -> None:
    response = await client.post(
        "/sandbox/api/request", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert says in _message(response)
    assert "secret-123" not in response.text


def _message(response: httpx.Response) -> str:
    """The helper's error: ``{"error": ...}`` about the content, an OperationOutcome (what the
    CDS Hooks endpoints answer) about the body itself. The page shows both."""
    body = response.json()
    if "error" in body:
        return str(body["error"])
    assert body["resourceType"] == "OperationOutcome"
    return "; ".join(issue["diagnostics"] for issue in body["issue"])


HELPERS = ["/sandbox/api/request", "/sandbox/api/timeline", "/sandbox/api/apply"]
BUNDLE_HEAD = '{"bundle": {"resourceType": "Bundle", "entry": [{"resource": '


@pytest.mark.parametrize("path", HELPERS)
@pytest.mark.parametrize(
    ("what", "raw", "says"),
    [
        ("arrays 5,000 deep", BUNDLE_HEAD + "[" * 5_000 + "]" * 5_000 + "}]}}", "levels deep"),
        ("objects 65 deep", BUNDLE_HEAD + '{"a":' * 65 + "1" + "}" * 65 + "}]}}", "levels deep"),
        ("a 5,000-digit number", BUNDLE_HEAD + '{"n": ' + "7" * 5_000 + "}}]}}", "too large"),
        ("a lone surrogate", BUNDLE_HEAD + '{"id": "\\udfff"}}]}}', "not valid Unicode"),
        ("NaN", BUNDLE_HEAD + '{"total": NaN}}]}}', "not valid JSON"),
    ],
)
async def test_json_shapes_from_issue_17_are_a_400_naming_the_limit(
    client: httpx.AsyncClient, path: str, what: str, raw: str, says: str
) -> None:
    """Issue 17 item 8: each of these was a 500 from the helpers (RecursionError, the integer
    conversion limit) or went on into the analysis (NaN, a lone surrogate)."""
    response = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, what
    assert response.headers["content-type"] == "application/fhir+json"
    assert says in _message(response), what


@pytest.mark.parametrize("path", HELPERS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_not_sent_as_json_is_a_415(
    client: httpx.AsyncClient, path: str, content_type: str | None
) -> None:
    """Issue 17 item 12: a cross-site page could run the timeline (and so item 1) against a
    developer's `make serve` with a text/plain POST, which needs no CORS preflight."""
    raw = json.dumps({"bundle": _bundle("pair-no-modifier.json")})
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(path, content=raw, headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in _message(response)


async def test_an_oversized_body_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERAPY_CDS_SANDBOX_MAX_BYTES", "1000")
    app = create_app(dev_settings(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        response = await c.post(
            "/sandbox/api/timeline", json={"bundle": _bundle("pair-no-modifier.json")}
        )
    assert response.status_code == 413


async def test_the_helpers_log_no_patient_data(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bundle = _bundle("pair-no-modifier.json")
    await client.post("/sandbox/api/timeline", json={"bundle": bundle})
    await client.post("/sandbox/api/request", json={"bundle": bundle})
    draft = next(e["resource"] for e in bundle["entry"] if e["resource"].get("status") == "draft")
    update = {"type": "update", "description": "d", "resource": draft}
    applied = await client.post("/sandbox/api/apply", json={"bundle": bundle, "actions": [update]})
    assert applied.status_code == 200
    text = caplog.text
    assert "pat-bram-nomod" not in text
    assert "proc-bram-nomod" not in text


# ------------------------------------------------------------------------ who may see it


async def _status(app: FastAPI, path: str) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        return (await c.get(path)).status_code


def _issuers_file(tmp_path: Path) -> Path:
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps([{"iss": "https://ehr.example.org", "jwks": {"keys": []}}]))
    return path


async def test_with_client_authentication_on_the_sandbox_is_not_served(tmp_path: Path) -> None:
    settings = dev_settings(
        tmp_path,
        require_auth=True,
        dev_mode=False,
        trusted_issuers_file=_issuers_file(tmp_path),
        public_base_url="https://cds.example.org",
        session_key="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )
    app = create_app(settings)
    for path in ("/sandbox", "/sandbox/samples/pair-no-modifier.json", "/"):
        assert await _status(app, path) == 404
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        helper = await c.post("/sandbox/api/timeline", json={"bundle": {"resourceType": "Bundle"}})
    assert helper.status_code in (404, 405)
    assert await _status(app, "/rules") == 200  # the catalogue is public documentation


async def test_explicitly_enabled_with_authentication_it_asks_for_the_client_jwt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERAPY_CDS_SANDBOX", "true")
    settings = dev_settings(
        tmp_path,
        require_auth=True,
        dev_mode=False,
        trusted_issuers_file=_issuers_file(tmp_path),
        public_base_url="https://cds.example.org",
        session_key="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        page = await c.get("/sandbox")
        assert page.status_code == 200
        assert 'id="jwt"' in page.text
        assert 'data-auth="on"' in page.text
        # The service itself still refuses the call without a JWT: no bypass.
        built = await c.post(
            "/sandbox/api/request", json={"bundle": _bundle("pair-no-modifier.json")}
        )
        answer = await c.post("/cds-services/therapy-timed-codes", json=built.json()["request"])
        assert answer.status_code == 401


async def test_explicitly_disabled_in_development_it_is_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERAPY_CDS_SANDBOX", "false")
    assert await _status(create_app(dev_settings(tmp_path)), "/sandbox") == 404


async def test_a_bundle_the_mapping_trips_on_is_a_422_not_a_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plugin.web.sandbox as sandbox

    def trip(*_: object, **__: object) -> None:
        raise TypeError("unhashable type: 'list' (secret-123)")

    monkeypatch.setattr(sandbox, "analyse_bundle", trip)
    response = await client.post(
        "/sandbox/api/timeline", json={"bundle": {"resourceType": "Bundle", "type": ["x"]}}
    )
    assert response.status_code == 422
    assert "secret-123" not in response.text


async def test_the_timeline_applies_the_configured_procedure_cap(tmp_path: Path) -> None:
    """The sandbox answers what the services answer: the cap is the setting, not a default."""
    bundle = _bundle("pair-no-modifier.json")
    procedures = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Procedure")
    settings = dev_settings(tmp_path, max_procedures_per_visit=procedures - 1)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        response = await c.post("/sandbox/api/timeline", json={"bundle": bundle})
    assert response.status_code == 413
    assert f"{procedures - 1}" in _message(response)


async def test_a_deployment_without_samples_says_so_on_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-samples"
    empty.mkdir()
    monkeypatch.setenv("THERAPY_CDS_SAMPLE_BUNDLES_DIR", str(empty))
    app = create_app(dev_settings(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        html = (await c.get("/sandbox")).text
    assert 'id="no-samples"' in html
    assert "This deployment has no sample bundles" in html
    assert str(empty) not in html  # the server's folder is not shown to the browser
    assert '.json" data-hook' not in html


async def test_the_page_with_samples_has_no_missing_samples_note(
    client: httpx.AsyncClient,
) -> None:
    assert 'id="no-samples"' not in (await client.get("/sandbox")).text
