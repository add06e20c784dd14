"""Cards shown and feedback on PostgreSQL (issue 13): two app instances (two workers) on one
database add up, feedback is attributed across them, and the report reads the same numbers as
on SQLite. The additive upsert and the schema upgrade are the dialect-specific parts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from typer.testing import CliRunner

from plugin.app import create_app
from plugin.cli import app as cli
from plugin.hook_request import build_hook_request
from plugin.services import ORDER_SIGN_SERVICE
from plugin.settings import Settings
from plugin.storage import make_engine

pytestmark = pytest.mark.anyio
SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles"
INVOKE = f"/cds-services/{ORDER_SIGN_SERVICE}"
SIGNED = ("pair-no-modifier.json", "overlapping-time-blocks.json", "under-8-minutes.json")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _app(url: str) -> FastAPI:
    return create_app(
        Settings(dev_mode=True, require_auth=False, database_url=url, log_level="ERROR")
    )


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cds.test")


async def _sign(client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    bundle = json.loads((SAMPLES / name).read_text())
    response = await client.post(INVOKE, json=build_hook_request(bundle, hook="order-sign"))
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def _topic(card: dict[str, Any]) -> str:
    topic: str = card["source"]["topic"]["code"]
    return topic


async def test_two_workers_on_postgres_add_up_and_the_report_attributes_feedback(
    pg_url: str,
) -> None:
    first, second = _app(pg_url), _app(pg_url)
    cards: list[dict[str, Any]] = []
    async with _client(first) as one, _client(second) as two:
        for name in SIGNED:
            cards += await _sign(one, name) + await _sign(two, name)
        first.state.cards_shown.flush()
        second.state.cards_shown.flush()
        cards += await _sign(one, SIGNED[0])
        overridden = cards[-1]
        item = {
            "card": overridden["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2025-03-04T15:00:00Z",
            "overrideReason": {"reason": {"code": "payer-exception", "system": "https://x"}},
        }
        # received by the other worker before the showing one flushed
        response = await two.post(f"{INVOKE}/feedback", json={"feedback": [item]})
        assert response.status_code == 200
        first.state.cards_shown.flush()
    result = CliRunner().invoke(cli, ["feedback", "--database-url", pg_url, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    report = {item["finding"]: item for item in json.loads(result.stdout)["findings"]}
    shown = Counter(_topic(card) for card in cards)
    assert {finding: item["shown"] for finding, item in report.items()} == dict(shown)
    mine = report[_topic(overridden)]
    assert mine["overridden"] == 1
    assert mine["override_reasons"] == [{"code": "payer-exception", "count": 1}]
    assert next(iter(report)) == _topic(overridden)
    for app in (first, second):
        app.state.engine.dispose()


async def test_a_0_1_0_feedback_table_on_postgres_is_upgraded(pg_url: str) -> None:
    engine = make_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE feedback (id SERIAL PRIMARY KEY, fingerprint VARCHAR(64) NOT NULL"
                " UNIQUE, service_id VARCHAR(128) NOT NULL, card_uuid VARCHAR(128) NOT NULL,"
                " outcome VARCHAR(16) NOT NULL, outcome_timestamp VARCHAR(40) NOT NULL,"
                " accepted_suggestions TEXT, override_reason_system VARCHAR(255),"
                " override_reason_code VARCHAR(128), user_comment TEXT,"
                " received_at TIMESTAMP WITH TIME ZONE NOT NULL)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO feedback (fingerprint, service_id, card_uuid, outcome,"
                " outcome_timestamp, received_at) VALUES ('f', 's', 'c', 'accepted',"
                " '2024-12-30T09:00:00Z', '2024-12-30 09:00:00+00')"
            )
        )
    engine.dispose()
    app = _app(pg_url)
    (row,) = app.state.feedback_store.outcomes()
    assert row["week"] == "2025-W01"
    app.state.engine.dispose()
    again = _app(pg_url)  # a second start-up finds nothing to do
    assert again.state.feedback_store.count() == 1
    again.state.engine.dispose()
