"""Issue 17, item 2: the answer grows with the request, never with the pairs of overlapping
Procedures, and a visit over the Procedure cap is refused with a clear error everywhere.

The requests are the reproduction's shape (``bench/overlap_flood.py``): Procedures of 97140 and
97530 spread over 8 hours, 14 minutes each, so the overlapping pairs grow with n squared.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from plugin.app import create_app
from plugin.cli import app as cli_app
from plugin.settings import MAX_PROCEDURES_PER_VISIT, Settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from overlap_flood import flood_bundle, flood_request  # noqa: E402

SERVICE = "/cds-services/therapy-timed-codes"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        dev_mode=True,
        require_auth=False,
        database_url=f"sqlite:///{tmp_path / 'cds.db'}",
        **extra,
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(tmp_path))
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
        yield client


@pytest.fixture
async def roomy_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A service whose cap lets the issue's 1,600-Procedure request through."""
    app = create_app(_settings(tmp_path, max_procedures_per_visit=2000))
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
        yield client


def _topics(cards: list[dict[str, Any]]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in cards]


@pytest.mark.anyio
async def test_over_the_cap_the_service_answers_413_saying_the_cap_and_what_to_do(
    client: httpx.AsyncClient,
) -> None:
    started = time.perf_counter()
    response = await client.post(SERVICE, json=flood_request(800))
    assert time.perf_counter() - started < 10
    assert response.status_code == 413
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    assert issue["code"] == "too-costly"
    text = issue["diagnostics"]
    assert "800 therapy Procedures" in text
    assert f"more than the {MAX_PROCEDURES_PER_VISIT} one visit may have" in text
    assert "THERAPY_CDS_MAX_PROCEDURES_PER_VISIT" in text
    assert "Send one visit per call" in text


@pytest.mark.anyio
async def test_at_the_cap_the_visit_is_analysed_with_one_overlap_card(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(SERVICE, json=flood_request(MAX_PROCEDURES_PER_VISIT))
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    # the overlaps are one problem: one card, W-OVERLAP grouped under the pair finding
    assert _topics(cards).count("E-PAIR-SAME-TIMEBLOCK") == 1
    assert "W-OVERLAP" not in _topics(cards)
    assert len(cards) < 10
    overlap = next(c for c in cards if c["source"]["topic"]["code"] == "E-PAIR-SAME-TIMEBLOCK")
    assert "**W-OVERLAP**" in overlap["detail"].split("Same cause: ", 1)[1].split("\n")[0]
    assert "more not listed" in overlap["detail"]  # the Documentation list is cut


@pytest.mark.anyio
async def test_the_answer_grows_with_the_request_not_with_the_pairs(
    roomy_client: httpx.AsyncClient,
) -> None:
    """800 -> 1,600 Procedures: the pairs grow four times (18,000 -> 75,000); the answer used to
    (24 MB -> 106 MB of cards, one per pair). Now it stays one card per finding, and a few KB."""
    sizes = {}
    for n in (800, 1600):
        response = await roomy_client.post(SERVICE, json=flood_request(n))
        assert response.status_code == 200, response.text
        cards = response.json()["cards"]
        assert _topics(cards).count("E-PAIR-SAME-TIMEBLOCK") == 1
        assert sum("**W-OVERLAP**" in c.get("detail", "") for c in cards) == 1
        assert len(cards) < 10
        sizes[n] = len(response.content)
    assert sizes[1600] < 100_000
    assert sizes[1600] < 2 * sizes[800] + 10_000


def _flood_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / f"flood-{n}.json"
    path.write_text(json.dumps(flood_bundle(n)))
    return path


def test_check_refuses_a_visit_over_the_cap_in_one_line(tmp_path: Path) -> None:
    path = _flood_file(tmp_path, MAX_PROCEDURES_PER_VISIT + 1)
    result = CliRunner().invoke(cli_app, ["check", str(path), "--format", "json"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0]
    assert f"{MAX_PROCEDURES_PER_VISIT + 1} therapy Procedures" in lines[0]
    assert "THERAPY_CDS_MAX_PROCEDURES_PER_VISIT" in lines[0]


def test_check_with_a_raised_cap_folds_the_overlaps_into_one_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERAPY_CDS_MAX_PROCEDURES_PER_VISIT", "1000")
    path = _flood_file(tmp_path, 800)
    result = CliRunner().invoke(cli_app, ["check", str(path), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    (visit,) = json.loads(result.stdout)["visits"]
    overlaps = [f for f in visit["findings"] if f["rule"] == "W-OVERLAP"]
    assert len(overlaps) == 1
    # the contract's shape; every overlapping Procedure listed (at most the cap)
    assert set(overlaps[0]) == {"rule", "severity", "codes", "resources", "message"}
    assert len(overlaps[0]["resources"]) == 800
    assert overlaps[0]["codes"] == ["97140", "97530"]


def test_audit_rejects_a_visit_over_the_cap_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERAPY_CDS_MAX_PROCEDURES_PER_VISIT", "50")
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "big.json").write_text(json.dumps(flood_bundle(51)))
    (inputs / "small.json").write_text(json.dumps(flood_bundle(4)))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli_app, ["audit", str(inputs), "--out", str(out), "-q", "-j", "1"])
    assert result.exit_code == 0, result.output
    rejected = (out / "rejected.csv").read_text()
    assert "too-many-procedures" in rejected
    assert "51 therapy Procedures, more than the 50 one visit may have" in rejected
    assert "big.json" in rejected
    assert "small.json" not in rejected
    visits = (out / "visits.csv").read_text().strip().splitlines()
    assert len(visits) == 2  # the header and the small file's visit
