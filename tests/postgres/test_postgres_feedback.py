"""Feedback limits hold the same on PostgreSQL and SQLite (issue 17 item 9).

On PostgreSQL, items the API schema allowed failed with a 500 ``DataError`` (a card id over
128 characters, a reason code over 128, a system over 255, a NUL in the comment) and took the
valid items of the same batch with them. Now the API checks the limits the columns have (one
definition, ``cds_hooks.models``), every item is stored or refused on its own, and both
databases give the same answers and keep the same rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds_hooks.models import (
    FEEDBACK_COMMENT_MAX,
    FEEDBACK_ID_MAX,
    FEEDBACK_SYSTEM_MAX,
    FEEDBACK_TIMESTAMP_MAX,
)
from plugin.app import create_app
from plugin.settings import Settings

pytestmark = pytest.mark.anyio
FEEDBACK = "/cds-services/therapy-timed-codes/feedback"
ITEM = {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2025-03-04T15:00:00Z"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(
        Settings(dev_mode=True, require_auth=False, database_url=database_url, log_level="ERROR")
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
        yield app, client
    app.state.engine.dispose()


def _item(card: str, **members: Any) -> dict[str, Any]:
    return {**ITEM, "card": card, **members}


def _reason(**coding: str) -> dict[str, Any]:
    return {"overrideReason": {"reason": coding}}


async def test_items_the_postgres_columns_refused_are_a_400_and_the_rest_is_stored(
    service: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = service
    batch = [
        _item("c" * 200),
        _item("long-code", **_reason(code="x" * 200, system="http://s")),
        _item("long-system", **_reason(code="x", system="s" * 300)),
        _item("nul", overrideReason={"userComment": "a\x00b"}),
        _item("nul-in-code", **_reason(code="a\x00", system="http://s")),
        _item("long-time", outcomeTimestamp="2" * 41),
        _item("valid", **_reason(code="x", system="http://s")),
    ]
    response = await client.post(FEEDBACK, json={"feedback": batch})
    assert response.status_code == 400, response.text
    issues = response.json()["issue"]
    assert len(issues) == 7  # six refused, one informational
    assert issues[-1]["diagnostics"].startswith("1 of 7 item(s) were stored")
    rows = app.state.feedback_store.outcomes()
    assert [(r["card_uuid"], r["override_reason_code"]) for r in rows] == [("valid", "x")]


async def test_values_at_every_limit_are_stored(service: tuple[Any, httpx.AsyncClient]) -> None:
    """Limits count characters, as PostgreSQL's varchar does: non-ASCII text at the limit
    (two or three bytes a character) fits."""
    app, client = service
    card = "é" * FEEDBACK_ID_MAX
    item = _item(
        card,
        outcomeTimestamp="2025-03-04T15:00:00.123456789+05:30".ljust(FEEDBACK_TIMESTAMP_MAX, "0"),
        acceptedSuggestions=[{"id": "ü" * FEEDBACK_ID_MAX}],
        overrideReason={
            "reason": {"code": "€" * FEEDBACK_ID_MAX, "system": "s" * FEEDBACK_SYSTEM_MAX},
            "userComment": "✓" * FEEDBACK_COMMENT_MAX,
        },
    )
    response = await client.post(FEEDBACK, json={"feedback": [item]})
    assert (response.status_code, response.json()) == (200, {})
    (row,) = app.state.feedback_store.outcomes()
    assert row["card_uuid"] == card
    assert row["override_reason_system"] == "s" * FEEDBACK_SYSTEM_MAX
    assert len(row["user_comment"]) == FEEDBACK_COMMENT_MAX


async def test_a_reason_nested_1000_deep_is_a_400(service: tuple[Any, httpx.AsyncClient]) -> None:
    """Issue 17 item 8: ``reason.system`` nested 1,000 deep was a 500 (RecursionError while
    fingerprinting the item)."""
    app, client = service
    system = '{"s":' * 1_000 + '"x"' + "}" * 1_000
    raw = (
        '{"feedback": [{"card": "c", "outcome": "overridden", '
        '"outcomeTimestamp": "2025-03-04T15:00:00Z", '
        '"overrideReason": {"reason": {"code": "x", "system": ' + system + "}}}]}"
    )
    response = await client.post(
        FEEDBACK, content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "levels deep" in response.json()["issue"][0]["diagnostics"]
    assert app.state.feedback_store.outcomes() == []
