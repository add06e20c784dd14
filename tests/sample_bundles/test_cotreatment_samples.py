"""The co-treatment samples (PT 97140 and OT 97530 on one date) through ``check`` and order-sign.

``check`` shows the pair status on both visits and the finding on the OT visit (column 2);
order-sign answers the OT charge being signed with the card naming both disciplines and, when
mechanical, the modifier on the 97530 charge. When the PT visit is not in what the service is
given (prefetch of the OT encounter only, no FHIR access) nothing is guessed: no pair finding,
and the note says the pair with another discipline was not checked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scenario_support import BUNDLES, bundle
from typer.testing import CliRunner

from plugin.app import create_app
from plugin.cli import app as cli_app
from plugin.hook_request import build_hook_request
from plugin.services import EXTENSION_KEY, ORDER_SIGN_SERVICE
from plugin.settings import Settings

pytestmark = pytest.mark.anyio

EXPECTED = {
    "co-treatment-pt-ot-xp.json": ("SUPPORTED", []),
    "co-treatment-no-modifier.json": ("NOT_SUPPORTED", ["E-PAIR-NO-MODIFIER"]),
    "co-treatment-overlap.json": ("NOT_SUPPORTED", ["E-PAIR-SAME-TIMEBLOCK"]),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        database_url=f"sqlite:///{tmp_path / 'cotreat.db'}",
        log_level="WARNING",
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as c:
        yield c


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_check_shows_the_pair_on_both_visits(sample: str) -> None:
    status, ot_rules = EXPECTED[sample]
    result = CliRunner().invoke(cli_app, ["check", str(BUNDLES / sample), "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    visits = {v["discipline"]: v for v in json.loads(result.stdout)["visits"]}
    assert {d: v["pair"] for d, v in visits.items()} == {"OT": status, "PT": status}
    assert [f["rule"] for f in visits["OT"]["findings"]] == ot_rules
    assert visits["PT"]["findings"] == []
    for finding in visits["OT"]["findings"]:
        assert finding["message"].startswith("Co-treatment (PT 97140, OT 97530 on this visit")
        assert set(finding["codes"]) == {"97140", "97530"}
    table = CliRunner().invoke(cli_app, ["check", str(BUNDLES / sample)])
    assert table.stdout.count(f"pair: {status} (co-treatment: PT 97140, OT 97530)") == 2


async def _sign(
    client: httpx.AsyncClient, request: dict[str, Any], policy: str | None = None
) -> list[dict[str, Any]]:
    if policy is not None:
        request["extension"] = {EXTENSION_KEY: {"cardPolicy": policy}}
    response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=request)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


async def test_order_sign_suggests_xp_on_the_97530_charge(client: httpx.AsyncClient) -> None:
    request = build_hook_request(bundle("co-treatment-no-modifier.json"), "order-sign")
    assert request["context"]["encounterId"] == "enc-elias-cotreat-ot"
    (card,) = await _sign(client, request)
    assert card["indicator"] == "critical"
    assert card["source"]["topic"]["code"] == "E-PAIR-NO-MODIFIER"
    assert card["summary"] == (
        "Co-treatment PT 97140 + OT 97530 on 2025-03-18: no 59/XP/XU on OT 97530; it will be denied"
    )
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    assert action["type"] == "update"
    changed = action["resource"]
    assert changed["id"] == "chg-elias-cotreat-ot"
    assert "XP" in [c["code"] for d in changed["orderDetail"] for c in d["coding"]]
    summaries = [c for c in await _sign(client, request, "summary") if c["indicator"] == "info"]
    assert len(summaries) == 2
    for summary in summaries:
        assert "pair: **NOT_SUPPORTED** (co-treatment: PT 97140, OT 97530)" in summary["detail"]


async def test_order_sign_supported_and_overlap(client: httpx.AsyncClient) -> None:
    supported = build_hook_request(bundle("co-treatment-pt-ot-xp.json"), "order-sign")
    assert await _sign(client, supported) == []
    overlap = build_hook_request(bundle("co-treatment-overlap.json"), "order-sign")
    (card,) = await _sign(client, overlap)
    assert card["source"]["topic"]["code"] == "E-PAIR-SAME-TIMEBLOCK"
    assert "PT 97140 and OT 97530" in card["summary"]
    assert "overlap by 10 min" in card["summary"]
    assert "same billing provider assumed" in card["detail"]
    assert card.get("suggestions", []) == [], "which discipline keeps the time is not mechanical"


async def test_without_the_other_visit_nothing_is_guessed(client: httpx.AsyncClient) -> None:
    request = build_hook_request(bundle("co-treatment-no-modifier.json"), "order-sign")
    procedures = request["prefetch"]["procedures"]
    procedures["entry"] = [
        e
        for e in procedures["entry"]
        if e["resource"]["resourceType"] != "Procedure"
        or e["resource"]["encounter"]["reference"] == "Encounter/enc-elias-cotreat-ot"
    ]
    request["context"]["draftOrders"]["entry"] = [
        e
        for e in request["context"]["draftOrders"]["entry"]
        if e["resource"]["id"] == "chg-elias-cotreat-ot"
    ]
    assert await _sign(client, request) == []
    (summary,) = await _sign(client, request, "summary")
    assert "pair: **NOT_APPLICABLE**" in summary["detail"]
    assert "a 97140/97530 pair with another discipline was not checked" in summary["detail"]
