"""The card budget (issue 13): what a therapist sees for each sample under the default card
policy, recorded in ``sample_bundles/scenarios.json`` (``cards``) and held here.

Each scenario is sent to the service in process as ``therapy-cds invoke`` sends it (its hook,
:func:`plugin.hook_request.build_hook_request`, no FHIR access). The number of cards must be
exactly the recorded count -- a new card is a decision, not a drift -- and no card's detail may
be longer than the recorded length. Every card also keeps to the text rules: a summary under 140
characters naming the date, no internal rule-book reference, the units table at most once.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scenario_support import bundle, scenarios

from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.services import DISCHARGE_SERVICE, EXTENSION_KEY, ORDER_SIGN_SERVICE
from plugin.settings import Settings

pytestmark = pytest.mark.anyio

SCENARIOS = scenarios()
BASE = "https://cds.example.org"
#: Rule-book ids (R-B3, I-4.4, S1a ...) belong in the catalogue, not in a card.
RULE_BOOK_REFERENCE = re.compile(r"\b(?:R-[A-Z]\d+[a-z]?|I-\d+(?:\.\d+)?|S\d+[a-z]?)\b")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
        yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        database_url=f"sqlite:///{tmp_path / 'budget.db'}",
        log_level="WARNING",
    )
    async for c in _client(settings):
        yield c


@pytest.fixture
async def public_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        public_base_url=BASE,
        database_url=f"sqlite:///{tmp_path / 'public.db'}",
        log_level="WARNING",
    )
    async for c in _client(settings):
        yield c


async def _cards(
    client: httpx.AsyncClient, scenario: dict[str, Any], policy: str | None = None
) -> list[dict[str, Any]]:
    hook = scenario["hook"]
    request = build_hook_request(bundle(scenario["file"]), hook)
    if policy is not None:
        request["extension"] = {EXTENSION_KEY: {"cardPolicy": policy}}
    service = ORDER_SIGN_SERVICE if hook == "order-sign" else DISCHARGE_SERVICE
    response = await client.post(f"/cds-services/{service}", json=request)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["file"] for s in SCENARIOS])
async def test_each_sample_keeps_its_card_budget(
    client: httpx.AsyncClient, scenario: dict[str, Any]
) -> None:
    budget = scenario["cards"]
    cards = await _cards(client, scenario)
    assert len(cards) == budget["count"]
    assert max((len(c.get("detail", "")) for c in cards), default=0) <= budget["longest_detail"]
    for policy in ("problems", "summary", "all"):
        shown = cards if policy == "problems" else await _cards(client, scenario, policy)
        for card in shown:
            assert 0 < len(card["summary"]) < 140
            text = card["summary"] + card.get("detail", "")
            assert not RULE_BOOK_REFERENCE.search(text), (policy, text)
        # the units table at most once per visit
        tables = sum(c.get("detail", "").count("| code |") for c in shown)
        assert tables <= len(scenario["expected"][scenario["payer_rule"]]["visits"]), policy
    for card in cards:
        if card["source"]["topic"]["code"] != "units-summary":
            dates = {v["date"] for v in scenario["expected"]["cms"]["visits"]}
            assert any(day in card["summary"] for day in dates), card["summary"]


async def test_the_budget_in_all() -> None:
    """The README's budget: at most 1 card per sample by default, details under 900."""
    assert max(s["cards"]["count"] for s in SCENARIOS) <= 1
    assert max(s["cards"]["longest_detail"] for s in SCENARIOS) < 900


async def test_cards_link_to_the_catalogue_only_with_a_public_base_url(
    client: httpx.AsyncClient, public_client: httpx.AsyncClient
) -> None:
    scenario = next(s for s in SCENARIOS if s["file"] == "overlapping-time-blocks.json")
    (card,) = await _cards(public_client, scenario)
    urls = [link["url"] for link in card["links"] if "/rules" in link["url"]]
    assert urls == [
        f"{BASE}/rules#E-PAIR-SAME-TIMEBLOCK",
        f"{BASE}/rules#W-OVERLAP",
    ]
    assert all(link["type"] == "absolute" for link in card["links"] if link["url"] in urls)
    # without one no such link: CDS Hooks links must be absolute, and the service does not
    # guess its own address from the request
    (card,) = await _cards(client, scenario)
    assert not [link for link in card.get("links", []) if "/rules" in link["url"]]
