"""/sandbox/api/apply: a suggestion's actions applied to the bundle's draft orders, as an EHR does.

The suggestions come from the service's own answer on the sample bundles (picked by indicator
and by having actions, never by their text); applying one and firing again must clear the
finding it addresses. Actions on anything that is not a draft order of the request are refused
with a reason per action, and then nothing is applied.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from web_support import ROOT, dev_settings

from plugin.app import create_app
from plugin.web.sandbox import SuggestionRefusedError, apply_actions

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


async def _cards(client: httpx.AsyncClient, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    built = await client.post("/sandbox/api/request", json={"bundle": bundle})
    assert built.status_code == 200, built.text
    answer = await client.post(
        f"/cds-services/{built.json()['serviceId']}", json=built.json()["request"]
    )
    assert answer.status_code == 200, answer.text
    cards: list[dict[str, Any]] = answer.json()["cards"]
    return cards


def _critical_with_actions(cards: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The topic of the first critical card with a suggestion, and that suggestion's actions."""
    for card in cards:
        suggestions = card.get("suggestions") or []
        if card["indicator"] == "critical" and suggestions and suggestions[0].get("actions"):
            return card["source"]["topic"]["code"], suggestions[0]["actions"]
    raise AssertionError("no critical card with a suggestion")


def _drafts(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        e["resource"]["id"]: e["resource"]
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == "ServiceRequest" and e["resource"]["status"] == "draft"
    }


@pytest.mark.parametrize(
    ("sample", "change"),
    [
        ("pair-no-modifier.json", "updated"),
        ("billed-units-exceed.json", "updated"),
        ("under-8-minutes.json", "removed"),
    ],
)
async def test_accepting_the_critical_suggestion_clears_its_finding(
    client: httpx.AsyncClient, sample: str, change: str
) -> None:
    bundle = _bundle(sample)
    topic, actions = _critical_with_actions(await _cards(client, bundle))
    response = await client.post("/sandbox/api/apply", json={"bundle": bundle, "actions": actions})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["change"] for c in body["changes"]] == [change] * len(actions)
    again = await _cards(client, body["bundle"])
    assert topic not in {c["source"]["topic"]["code"] for c in again}
    assert not [c for c in again if c["indicator"] == "critical"]


async def test_an_update_reports_the_line_before_and_after(client: httpx.AsyncClient) -> None:
    bundle = _bundle("pair-no-modifier.json")
    _, actions = _critical_with_actions(await _cards(client, bundle))
    response = await client.post("/sandbox/api/apply", json={"bundle": bundle, "actions": actions})
    (change,) = response.json()["changes"]
    target = actions[0]["resource"]["id"]
    assert change["ref"] == f"ServiceRequest/{target}"
    before, after = change["before"], change["after"]
    assert before["code"] == after["code"] == "97530"
    assert before["units"] == after["units"]
    assert set(after["modifiers"]) - set(before["modifiers"]) == {"59"}
    # The draft was replaced in place: same entry (fullUrl kept), same number of entries.
    old = next(e for e in bundle["entry"] if e["resource"].get("id") == target)
    new = next(e for e in response.json()["bundle"]["entry"] if e["resource"].get("id") == target)
    assert new["fullUrl"] == old["fullUrl"]
    assert new["resource"] == actions[0]["resource"]
    assert len(response.json()["bundle"]["entry"]) == len(bundle["entry"])


@pytest.mark.parametrize("resource_id", ["ServiceRequest/chg-nils-exceed-2", "chg-nils-exceed-2"])
def test_delete_takes_a_relative_reference_or_a_bare_id(resource_id: str) -> None:
    bundle = _bundle("billed-units-exceed.json")
    action = {"type": "delete", "description": "remove it", "resourceId": resource_id}
    applied = apply_actions(bundle, "order-sign", [action])
    assert set(_drafts(applied.bundle)) == {"chg-nils-exceed-1"}
    assert applied.changes == [
        {
            "ref": "ServiceRequest/chg-nils-exceed-2",
            "change": "removed",
            "before": {"code": "97530", "units": 2, "modifiers": ["GP", "59"]},
            "after": None,
        }
    ]
    assert len(applied.bundle["entry"]) == len(bundle["entry"]) - 1


def test_create_adds_a_draft_with_a_fresh_id_and_the_input_is_not_modified() -> None:
    bundle = _bundle("under-8-minutes.json")
    original = copy.deepcopy(bundle)
    template = _drafts(bundle)["chg-yara-under8-1"]
    created = {k: v for k, v in copy.deepcopy(template).items() if k != "id"}
    created["quantityQuantity"] = {"value": 1, "unit": "unit"}
    created["code"] = {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97150"}]}
    applied = apply_actions(
        bundle,
        "order-sign",
        [
            {
                "type": "delete",
                "description": "d",
                "resourceId": "ServiceRequest/chg-yara-under8-1",
            },
            {"type": "create", "description": "c", "resource": created},
        ],
    )
    assert bundle == original
    drafts = _drafts(applied.bundle)
    (new_id,) = drafts
    assert new_id != "chg-yara-under8-1"
    assert [(c["ref"], c["change"]) for c in applied.changes] == [
        ("ServiceRequest/chg-yara-under8-1", "removed"),
        (f"ServiceRequest/{new_id}", "added"),
    ]
    assert applied.changes[1]["after"] == {"code": "97150", "units": 1, "modifiers": ["GP"]}


def _refused(bundle: dict[str, Any], actions: list[Any], hook: str = "order-sign") -> list[str]:
    with pytest.raises(SuggestionRefusedError) as caught:
        apply_actions(bundle, hook, actions)
    return [f"{index}: {reason}" for index, reason in caught.value.reasons]


def test_actions_on_anything_but_this_requests_draft_orders_are_refused() -> None:
    bundle = _bundle("billed-units-exceed.json")
    signed = copy.deepcopy(bundle)
    for entry in signed["entry"]:
        if entry["resource"].get("id") == "chg-nils-exceed-2":
            entry["resource"]["status"] = "active"  # already signed: not a draft order
    drafts = _drafts(bundle)
    update = {"type": "update", "description": "u", "resource": drafts["chg-nils-exceed-2"]}
    procedure = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Procedure"
    )
    reasons = _refused(
        signed,
        [
            {"type": "update", "description": "ok", "resource": drafts["chg-nils-exceed-1"]},
            update,
            {"type": "update", "description": "p", "resource": procedure},
            {"type": "delete", "description": "p", "resourceId": f"Procedure/{procedure['id']}"},
            {"type": "delete", "description": "x", "resourceId": "ServiceRequest/not-there"},
            {"type": "delete", "description": "x"},
            {"type": "create", "description": "c", "resource": drafts["chg-nils-exceed-1"]},
            {
                "type": "create",
                "description": "c",
                "resource": {**drafts["chg-nils-exceed-1"], "id": "new", "status": "active"},
            },
            {"type": "remove", "description": "?"},
            "update",
        ],
    )
    assert reasons == [
        "2: update: its ServiceRequest is not a draft order of this request",
        "3: update: the resource is not a ServiceRequest",
        "4: delete: 'resourceId' names no ServiceRequest",
        "5: delete: its ServiceRequest is not a draft order of this request",
        "6: delete: 'resourceId' names no ServiceRequest",
        "7: create: the ServiceRequest's id is missing or already used",
        "8: create: the ServiceRequest must have status 'draft'",
        "9: not an action of type create, update or delete",
        "10: not an action of type create, update or delete",
    ]


def test_a_deleted_draft_cannot_be_updated_after() -> None:
    bundle = _bundle("billed-units-exceed.json")
    draft = _drafts(bundle)["chg-nils-exceed-1"]
    reasons = _refused(
        bundle,
        [
            {"type": "delete", "description": "d", "resourceId": "chg-nils-exceed-1"},
            {"type": "update", "description": "u", "resource": draft},
        ],
    )
    assert reasons == ["2: update: its ServiceRequest is not a draft order of this request"]


def test_a_discharge_request_has_no_draft_orders_to_change() -> None:
    bundle = _bundle("billed-units-exceed.json")
    action = {"type": "delete", "description": "d", "resourceId": "chg-nils-exceed-1"}
    assert _refused(bundle, [action], hook="encounter-discharge") == [
        "1: an encounter-discharge request has no draft orders to change"
    ]


async def test_a_refused_suggestion_is_a_422_naming_each_action_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    bundle = _bundle("billed-units-exceed.json")
    drafts = _drafts(bundle)
    actions = [
        {"type": "delete", "description": "fine", "resourceId": "ServiceRequest/chg-nils-exceed-1"},
        {"type": "delete", "description": "no", "resourceId": "ServiceRequest/secret-123"},
    ]
    response = await client.post("/sandbox/api/apply", json={"bundle": bundle, "actions": actions})
    assert response.status_code == 422
    body = response.json()
    assert body["refused"] == [
        {"action": 2, "reason": "delete: its ServiceRequest is not a draft order of this request"}
    ]
    assert "action 2" in body["error"]
    assert "secret-123" not in response.text
    assert "bundle" not in body
    assert set(drafts) == set(_drafts(bundle))


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"bundle": {"resourceType": "Bundle"}}, 400, "'actions' must be a non-empty list"),
        ({"bundle": {"resourceType": "Bundle"}, "actions": []}, 400, "non-empty list"),
        ({"bundle": {"resourceType": "Bundle"}, "actions": {"type": "delete"}}, 400, "list"),
        ({"bundle": [], "actions": [{}]}, 400, "'bundle' must be a FHIR Bundle"),
        ({"bundle": {"resourceType": "Bundle"}, "actions": [{}], "hook": "x"}, 400, "'hook'"),
        (
            {"bundle": {"resourceType": "Bundle", "entry": [{"resource": {}}]}, "actions": [{}]},
            422,
            "entry[0]",
        ),
    ],
)
async def test_bad_input_gets_a_clear_error(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, says: str
) -> None:
    response = await client.post("/sandbox/api/apply", json=body)
    assert response.status_code == status
    assert says in response.json()["error"]
