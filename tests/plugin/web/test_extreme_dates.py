"""Issue 17, items 1 and 8: extreme dates through the pages and the service, and heavy page work
off the event loop.

Reproductions: a Procedure whose ``performedPeriod.end`` is ``9999-12-31T23:59:59+00:00`` posted to
``/sandbox/api/timeline`` never returned (one tick per 120 minutes of span) and stalled every
other call; a Procedure starting ``0001-01-01T00:00:00+05:00`` gave a 500 (OverflowError).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from web_support import ROOT, dev_settings

from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.web.timeline import MAX_SVG_CHARS

pytestmark = pytest.mark.anyio

SAMPLE = ROOT / "sample_bundles" / "pair-no-modifier.json"
PROCEDURE = "proc-bram-nomod-1"  # 97140, 10:00-10:15 -05:00


def _bundle(**period: str) -> dict[str, Any]:
    """The sample visit with one Procedure's performedPeriod members replaced."""
    bundle: dict[str, Any] = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for entry in bundle["entry"]:
        if entry["resource"].get("id") == PROCEDURE:
            entry["resource"]["performedPeriod"].update(period)
    return bundle


REPRODUCTIONS = {
    "end 9999-12-31": {"end": "9999-12-31T23:59:59+00:00"},
    "start 0001-01-01+05:00": {"start": "0001-01-01T00:00:00+05:00"},
    "start 1850": {"start": "1850-03-04T10:00:00-05:00"},
    "over 24 hours": {"end": "2025-03-06T10:00:00-05:00"},
}


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(dev_settings(tmp_path))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", timeout=60
    ) as c:
        yield c


def _refused(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f["resources"] == [f"Procedure/{PROCEDURE}"]]


@pytest.mark.parametrize("period", REPRODUCTIONS.values(), ids=REPRODUCTIONS.keys())
async def test_the_sandbox_timeline_answers_at_once_with_the_mapping_issue(
    client: httpx.AsyncClient, period: dict[str, str]
) -> None:
    started = time.perf_counter()
    response = await client.post("/sandbox/api/timeline", json={"bundle": _bundle(**period)})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert elapsed < 5  # before: never returned (the 9999 end), or a 500 (the year-1 start)
    assert len(response.content) < 50_000  # before: 6.5 MB for a 10-year span
    body = response.json()
    assert body["mappingIssues"] == 1
    (visit,) = body["visits"]
    assert visit["date"] == "2025-03-04"
    assert len(visit["svg"]) <= MAX_SVG_CHARS
    assert f'data-ref="Procedure/{PROCEDURE}"' not in visit["svg"]  # never drawn
    (finding,) = [f for f in _refused(visit["findings"]) if f["rule"] == "W-NO-DURATION"]
    assert "outside what a visit can be" in finding["message"]
    assert visit["minutes"] == {"97530": 23}  # the other service still counts


@pytest.mark.parametrize("service", ["therapy-timed-codes", "therapy-timed-codes-discharge"])
@pytest.mark.parametrize("period", REPRODUCTIONS.values(), ids=REPRODUCTIONS.keys())
async def test_the_service_answers_with_a_card_not_a_500(
    client: httpx.AsyncClient, service: str, period: dict[str, str]
) -> None:
    hook = "order-sign" if service == "therapy-timed-codes" else "encounter-discharge"
    request = build_hook_request(_bundle(**period), hook)  # type: ignore[arg-type]
    response = await client.post(f"/cds-services/{service}", json=request)
    assert response.status_code == 200  # before: 500 for the year-1 start
    cards = response.json()["cards"]
    text = json.dumps(cards)
    assert "W-NO-DURATION" in text
    assert "outside what a visit can be" in text
    assert "4194353" not in text  # before: the 9999 end counted 4,194,353,339 minutes


def _many_visits(count: int) -> dict[str, Any]:
    """One patient, ``count`` visits on consecutive days, three overlapping services each:
    ordinary data, linear work (about 1 s for 400 visits here)."""
    entries: list[dict[str, Any]] = [{"resource": {"resourceType": "Patient", "id": "p1"}}]
    blocks = (("97110", "10:00", "10:20"), ("97140", "10:15", "10:40"), ("97530", "10:30", "10:55"))
    for day_index in range(count):
        day = (date(2024, 1, 1) + timedelta(days=day_index)).isoformat()
        for index, (code, start, end) in enumerate(blocks):
            entries.append(
                {
                    "resource": {
                        "resourceType": "Procedure",
                        "id": f"v{day_index}-{index}",
                        "status": "completed",
                        "subject": {"reference": "Patient/p1"},
                        "code": {
                            "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]
                        },
                        "performedPeriod": {
                            "start": f"{day}T{start}:00-05:00",
                            "end": f"{day}T{end}:00-05:00",
                        },
                    }
                }
            )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


async def test_healthz_answers_while_a_heavy_timeline_is_being_drawn(
    client: httpx.AsyncClient,
) -> None:
    # The analysis runs on a worker thread: the event loop answers /healthz meanwhile. Run on the
    # event loop (as before), /healthz could only answer once the heavy request was done.
    visits = 400
    body = json.dumps({"bundle": _many_visits(visits)}).encode()
    headers = {"content-type": "application/json"}
    heavy = asyncio.create_task(client.post("/sandbox/api/timeline", content=body, headers=headers))
    await asyncio.sleep(0.1)
    assert not heavy.done(), "the heavy request ended before /healthz was sent: make it heavier"
    health = await client.get("/healthz")
    # /healthz answered while the heavy request was still being analysed: it did not wait.
    assert not heavy.done(), "healthz waited for the heavy request"
    response = await heavy
    assert health.status_code == 200
    assert response.status_code == 200
    assert len(response.json()["visits"]) == visits


async def test_a_heavy_bundle_is_still_bounded_per_visit(client: httpx.AsyncClient) -> None:
    bundle = _many_visits(40)
    # every service of one visit stretched to a 20-year span: refused, never drawn
    for entry in bundle["entry"][1:4]:
        entry["resource"]["performedPeriod"]["end"] = "2044-01-01T00:00:00Z"
    response = await client.post("/sandbox/api/timeline", json={"bundle": copy.deepcopy(bundle)})
    assert response.status_code == 200
    body = response.json()
    assert body["mappingIssues"] == 3
    assert max(len(v["svg"]) for v in body["visits"]) < 10_000
