"""``/metrics``, ``/healthz`` and ``/readyz``: what operators scrape and probe."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.settings import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles"
SERVICE = "therapy-timed-codes"
MARKER = "ZZMARKER-4711"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return create_app(
        Settings(
            require_auth=False,
            dev_mode=True,
            database_url=f"sqlite:///{tmp_path / 'metrics.db'}",
            log_level="WARNING",
        )
    )


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.anyio
async def test_metrics_count_latency_prefetch_findings_and_feedback(
    client: httpx.AsyncClient,
) -> None:
    bundle = json.loads((SAMPLES / "pair-no-modifier.json").read_text())
    body = build_hook_request(bundle)
    response = await client.post(f"/cds-services/{SERVICE}", json=body)
    assert response.status_code == 200
    card = next(c for c in response.json()["cards"] if c.get("suggestions"))
    feedback = {
        "feedback": [
            {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2025-03-04T15:00Z"}
        ]
    }
    for _ in range(2):
        stored = await client.post(f"/cds-services/{SERVICE}/feedback", json=feedback)
        assert stored.status_code == 200
    missing = await client.post(f"/cds-services/{MARKER}", json=body)
    assert missing.status_code == 404

    scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert MARKER not in scraped.text  # label values come from closed sets only
    samples = _samples(scraped.text)
    histogram = "therapy_cds_request_duration_seconds_count"
    assert _value(samples, histogram, service=SERVICE, endpoint="invoke") == 1
    assert _value(samples, histogram, service=SERVICE, endpoint="feedback") == 2
    assert _value(samples, histogram, service="-", endpoint="invoke") == 1
    assert (
        _value(samples, "therapy_cds_responses_total", service="-", endpoint="invoke", status="404")
        == 1
    )
    prefetch = "therapy_cds_prefetch_keys_total"
    for key in ("patient", "encounter", "procedures", "carePlans"):
        assert _value(samples, prefetch, service=SERVICE, key=key, state="present") == 1, key
    assert (
        _value(
            samples,
            "therapy_cds_findings_total",
            service=SERVICE,
            rule="E-PAIR-NO-MODIFIER",
            severity="error",
        )
        == 1
    )
    feedback_items = "therapy_cds_feedback_items_total"
    assert _value(samples, feedback_items, service=SERVICE, result="stored") == 1
    assert _value(samples, feedback_items, service=SERVICE, result="duplicate") == 1


@pytest.mark.anyio
async def test_missing_prefetch_is_counted_as_a_miss(client: httpx.AsyncClient) -> None:
    bundle = json.loads((SAMPLES / "pair-no-modifier.json").read_text())
    body = build_hook_request(bundle)
    del body["prefetch"]["carePlans"]
    await client.post(f"/cds-services/{SERVICE}", json=body)
    samples = _samples((await client.get("/metrics")).text)
    name = "therapy_cds_prefetch_keys_total"
    assert _value(samples, name, service=SERVICE, key="carePlans", state="missing") == 1
    assert _value(samples, name, service=SERVICE, key="procedures", state="present") == 1


@pytest.mark.anyio
async def test_wrong_methods_are_counted_and_preflights_are_not(client: httpx.AsyncClient) -> None:
    """The runtime's answers are counted, a 405 too; a CORS preflight (answered before the
    runtime) and a path that is no endpoint are not."""
    assert (await client.get(f"/cds-services/{SERVICE}")).status_code == 405
    assert (await client.put("/cds-services")).status_code == 405
    preflight = await client.options(
        f"/cds-services/{SERVICE}",
        headers={"Origin": "https://ehr.example.org", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code in (204, 403)
    assert (await client.post(f"/cds-services/{SERVICE}/x/y", json={})).status_code == 404
    samples = _samples((await client.get("/metrics")).text)
    responses = "therapy_cds_responses_total"
    assert _value(samples, responses, service=SERVICE, endpoint="invoke", status="405") == 1
    assert _value(samples, responses, service="-", endpoint="discovery", status="405") == 1
    counted = sum(value for (name, _), value in samples.items() if name == responses)
    assert counted == 2


@pytest.mark.anyio
async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok"}


@pytest.mark.anyio
async def test_readiness_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    broken = tmp_path / "gone"
    broken.mkdir()
    app = create_app(
        Settings(
            require_auth=False,
            dev_mode=True,
            database_url=f"sqlite:///{broken / 'x.db'}",
            log_level="WARNING",
        )
    )
    (broken / "x.db").unlink()
    for extra in broken.iterdir():
        extra.unlink()
    broken.rmdir()
    app.state.engine.dispose()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert (await c.get("/healthz")).status_code == 200
        ready = await c.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"


def test_findings_of_one_rule_are_counted_each_and_across_calls() -> None:
    """A call's findings are added per (rule, severity) in one step: the totals still count
    every finding, and a label set seen again keeps counting on the same series."""
    from plugin.metrics import ServiceMetrics
    from plugin.rules.catalogue import RuleId
    from plugin.rules.findings import make_finding

    metrics = ServiceMetrics()

    def finding(rule: RuleId) -> Any:
        return make_finding(rule, codes=("97140",), resources=(), message="m")

    twice = [finding(RuleId.W_OVERLAP), finding(RuleId.W_OVERLAP), finding(RuleId.I_COMBINE_LINES)]
    metrics.observe_findings(SERVICE, twice)
    metrics.observe_findings(SERVICE, twice[:1])
    samples = _samples(metrics.render().decode())
    name = "therapy_cds_findings_total"
    assert _value(samples, name, service=SERVICE, rule="W-OVERLAP", severity="warning") == 3
    assert _value(samples, name, service=SERVICE, rule="I-COMBINE-LINES", severity="info") == 1


# ------------------------------------------------------------------ who may read what


TOKEN = "scrape-me-0123456789abcdef"


def _production(tmp_path: Path, **overrides: Any) -> Settings:
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps([{"iss": "https://ehr.example.org", "jwks": {"keys": []}}]))
    return Settings(
        trusted_issuers_file=issuers,
        public_base_url="https://cds.example.org",
        session_key="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        database_url=f"sqlite:///{tmp_path / 'prod.db'}",
        log_level="WARNING",
        **overrides,
    )


async def _statuses(settings: Settings, headers: dict[str, str] | None = None) -> dict[str, int]:
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        return {
            path: (await c.get(path, headers=headers or {})).status_code
            for path in ("/metrics", "/docs", "/openapi.json")
        }


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("THERAPY_CDS_")]:
        monkeypatch.delenv(key)


@pytest.mark.anyio
async def test_production_serves_no_metrics_and_no_docs_by_default(tmp_path: Path) -> None:
    """Issue 17 item 14: /metrics, /docs and /openapi.json answered anyone in production."""
    statuses = await _statuses(_production(tmp_path))
    assert statuses == {"/metrics": 404, "/docs": 404, "/openapi.json": 404}


@pytest.mark.anyio
async def test_development_serves_metrics_and_docs(tmp_path: Path) -> None:
    settings = Settings(
        dev_mode=True, require_auth=False, database_url=f"sqlite:///{tmp_path / 'dev.db'}"
    )
    assert await _statuses(settings) == {"/metrics": 200, "/docs": 200, "/openapi.json": 200}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong-token-0123456789", 401),
        (f"Basic {TOKEN}", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Bearer {TOKEN}", 200),
    ],
)
async def test_a_metrics_token_protects_metrics(
    tmp_path: Path, authorization: str | None, status: int
) -> None:
    settings = _production(tmp_path, metrics_token=TOKEN)
    headers = {"Authorization": authorization} if authorization else {}
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        response = await c.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert TOKEN not in response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "THERAPY_CDS_METRICS_TOKEN" in response.text
    else:
        assert "therapy_cds_request_duration_seconds" in response.text


@pytest.mark.anyio
async def test_the_settings_turn_each_endpoint_on_or_off(tmp_path: Path) -> None:
    on = await _statuses(_production(tmp_path, metrics=True, api_docs=True))
    assert on == {"/metrics": 200, "/docs": 200, "/openapi.json": 200}
    dev_off = Settings(
        dev_mode=True,
        require_auth=False,
        metrics=False,
        api_docs=False,
        database_url=f"sqlite:///{tmp_path / 'dev.db'}",
    )
    assert await _statuses(dev_off) == {"/metrics": 404, "/docs": 404, "/openapi.json": 404}


def test_a_short_metrics_token_is_refused_without_echo(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        _production(tmp_path, metrics_token="short-secret")
    assert "at least 16 characters" in str(info.value)
    assert "short-secret" not in str(info.value)
