"""Every suggestion on every sample fixes what it claims (issue 13).

For each sample bundle the hook request is built as ``invoke`` and the sandbox build it
(:func:`plugin.hook_request.build_hook_request`) and posted to the real app. Then, for every
suggestion of every card, its actions are applied to the request as an EHR would (update /
delete / create of the draft orders, and of the same resource wherever it sits in prefetch),
the hook is called again, and the answer must no longer carry the finding the card addresses,
with no new error or warning (:func:`suggestion_support.fix_problems` says exactly what is
compared, and why it holds when one card stands for several findings of one cause).

order-sign is exercised for every sample (R4 and the R5 one); encounter-discharge for the
samples whose hook it is, where the same property holds for any suggestion its cards carry.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from scenario_support import bundle, scenarios
from suggestion_support import apply_suggestion, fix_problems, problem_cards

from fhir_mappings import map_bundle
from plugin.app import create_app
from plugin.hook_request import Hook, build_hook_request
from plugin.services import DISCHARGE_SERVICE, ORDER_SIGN_SERVICE
from plugin.settings import Settings

Json = dict[str, Any]
R5_SAMPLE = "r5-three-codes.json"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CPT = "http://www.ama-assn.org/go/cpt"


def _draft(data: Json, code: str) -> Json:
    for entry in data["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "ServiceRequest" and resource.get("status") == "draft":
            codings = resource["code"].get("concept", resource["code"])["coding"]
            if any(c["code"] == code for c in codings):
                resource_: Json = resource
                return resource_
    raise AssertionError(f"no draft {code}")


def _parameters(draft: Json) -> list[Json]:
    parameters: list[Json] = draft["orderDetail"][0]["parameter"]
    return parameters


def _modifier_parameter(draft: Json, code: str) -> Json:
    return next(
        p for p in _parameters(draft) if p["valueCodeableConcept"]["coding"][0]["code"] == code
    )


def _r5_59_on_97140(data: Json) -> None:
    moved = _modifier_parameter(_draft(data, "97530"), "59")
    _parameters(_draft(data, "97530")).remove(moved)
    _parameters(_draft(data, "97140")).append(moved)


def _r5_no_59(data: Json) -> None:
    _parameters(_draft(data, "97530")).remove(_modifier_parameter(_draft(data, "97530"), "59"))


def _r5_xu_beside_59(data: Json) -> None:
    xu = {"system": HCPCS, "code": "XU", "display": "Unusual non-overlapping service"}
    parameter = {"code": {"text": "billing modifier"}, "valueCodeableConcept": {"coding": [xu]}}
    _parameters(_draft(data, "97530")).append(parameter)


def _r5_too_many_units(data: Json) -> None:
    _draft(data, "97530")["quantityQuantity"]["value"] = 3


#: The R5 sample is clean; these edits of its draft orders give R5 visits with problems whose
#: suggestions rewrite R5 ``orderDetail.parameter`` modifiers and units.
R5_VARIANTS = {
    "59-on-97140": _r5_59_on_97140,
    "no-59": _r5_no_59,
    "xu-beside-59": _r5_xu_beside_59,
    "3-units-of-97530": _r5_too_many_units,
}
CASES = (
    [("order-sign", s["file"]) for s in scenarios()]
    + [
        ("encounter-discharge", s["file"])
        for s in scenarios()
        if s["hook"] == "encounter-discharge"
    ]
    + [("order-sign", f"{R5_SAMPLE}+{variant}") for variant in R5_VARIANTS]
)
#: Samples whose problems have a mechanical fix: each must carry at least one suggestion, so
#: the property above is exercised and cannot hold by there being nothing to apply.
WITH_SUGGESTIONS = {
    "billed-units-exceed.json",
    "modifier-59-with-xu.json",
    "modifier-on-97140-column-1.json",
    "pair-no-modifier.json",
    "group-delivery-97530.json",
    "under-8-minutes.json",
    *(f"{R5_SAMPLE}+{variant}" for variant in R5_VARIANTS),
}


def sample_bundle(case: str) -> Json:
    name, _, variant = case.partition("+")
    data = bundle(name)
    if variant:
        R5_VARIANTS[variant](data)
    return data


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        database_url=f"sqlite:///{tmp_path / 'suggestions.db'}",
        log_level="WARNING",
    )
    # The app in process, without its lifespan (nothing here needs its background work).
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as c:
        yield c


async def call(client: httpx.AsyncClient, request: Json) -> list[Json]:
    service = ORDER_SIGN_SERVICE if request["hook"] == "order-sign" else DISCHARGE_SERVICE
    response = await client.post(f"/cds-services/{service}", json=request)
    assert response.status_code == 200, response.text
    cards: list[Json] = response.json()["cards"]
    return cards


async def test_the_listed_samples_exist() -> None:
    assert {c.partition("+")[0] for c in WITH_SUGGESTIONS} <= {s["file"] for s in scenarios()}
    assert any(s["file"] == R5_SAMPLE and s["fhir_version"] == "R5" for s in scenarios())


def modifiers(draft: Json) -> set[str]:
    """The modifiers the mapper reads from one draft ServiceRequest."""
    record = map_bundle(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}
    )
    return {m for charge in record.charges for m in charge.modifiers}


def _strings(node: object, key: str = "") -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(v, k)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v, key)]
    return [node] if isinstance(node, str) and key not in ("url", "system") else []


def mentions(draft: Json, modifier: str) -> int:
    """How many strings where modifiers are kept (orderDetail, extension) name ``modifier``."""
    kept = [draft.get("orderDetail"), draft.get("extension")]
    return sum(modifier in re.findall(r"[A-Z0-9]+", s.upper()) for s in _strings(kept))


def coded(draft: Json, modifier: str) -> int:
    """How many codings where modifiers are kept carry ``modifier`` as their code."""
    kept = orjson.dumps([draft.get("orderDetail"), draft.get("extension")]).decode()
    return kept.count(f'"code":"{modifier}"')


def check_modifier_edits(request: Json, suggestion: Json) -> list[str]:
    """An updated draft keeps no trace of a removed modifier, carries an added one once, and
    leaves every other modifier as it was."""
    drafts = {
        e["resource"]["id"]: e["resource"]
        for e in request["context"].get("draftOrders", {}).get("entry", ())
    }
    problems = []
    for action in suggestion["actions"]:
        if action["type"] != "update" or action["resource"]["id"] not in drafts:
            continue
        old, new = drafts[action["resource"]["id"]], action["resource"]
        was, now = modifiers(old), modifiers(new)
        for gone in sorted(was - now):
            if mentions(new, gone):
                problems.append(f"{new['id']}: removed modifier {gone} still shows")
        for added in sorted(now - was):
            if coded(new, added) != 1:
                problems.append(
                    f"{new['id']}: added modifier {added} is there {coded(new, added)} times"
                )
        for same in sorted(was & now):
            if mentions(new, same) != mentions(old, same):
                problems.append(f"{new['id']}: modifier {same} was changed")
    return problems


@pytest.mark.parametrize(("hook", "sample"), CASES)
async def test_every_suggestion_fixes_its_finding(
    client: httpx.AsyncClient, hook: Hook, sample: str
) -> None:
    request = build_hook_request(sample_bundle(sample), hook)
    before = await call(client, request)
    tried = 0
    failures = []
    for card in problem_cards(before):
        for suggestion in card.get("suggestions", ()):
            tried += 1
            failures += check_modifier_edits(request, suggestion)
            after = await call(client, apply_suggestion(request, suggestion))
            failures += [
                f"{card['source']['topic']['code']} / {suggestion['label']!r}: {problem}"
                for problem in fix_problems(card, before, after)
            ]
    assert not failures, "\n".join(failures)
    if hook == "order-sign" and sample in WITH_SUGGESTIONS:
        assert tried, f"{sample}: no card carries a suggestion"
