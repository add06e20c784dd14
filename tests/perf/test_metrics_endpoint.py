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
