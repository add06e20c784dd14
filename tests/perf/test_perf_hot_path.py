"""Guards for the per-request fast paths the service benchmark relies on.

- update suggestions are no longer rebuilt through the full FHIR models per request: every
  suggestion the service makes for the sample bundles and the benchmark payloads still
  validates through them (R-22), and malformed drafts get no suggestion;
- the sweep-line minute attribution gives exactly what the quadratic definition gives;
- the response sends nothing null or empty, free-form resources pruned all the way down;
- card uuids computed without UUID objects are exactly uuid5 in the service namespace.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_hooks.models import Action, Card, CdsResponse, Coding, Source, Suggestion
from fhir_mappings.model import CPT_SYSTEM, FhirVersion, TimedService, TimingKind
from fhir_mappings.writeback import ChargeChange, apply_changes, sound_update, valid_fhir
from plugin import cards
from plugin.rules.intervals import (
    LISTED_OVERLAPS,
    Overlap,
    attribute_minutes,
    intersection,
    usable_interval,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_bundles"
sys.path.insert(0, str(ROOT / "bench"))

from payloads import order_sign_request  # noqa: E402


def _suggested_resources(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for card in body.get("cards", []):
        for suggestion in card.get("suggestions", []):
            for action in suggestion.get("actions", []):
                if action.get("resource") is not None:
                    yield action["resource"]


def _is_r5(resource: dict[str, Any]) -> bool:
    return isinstance(resource.get("code"), dict) and "concept" in resource["code"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def app() -> Any:
    from plugin.app import create_app
    from plugin.settings import Settings

    settings = Settings(
        require_auth=False, dev_mode=True, database_url="sqlite://", log_level="WARNING"
    )
    return create_app(settings)


def _requests() -> Iterator[tuple[str, dict[str, Any]]]:
    from plugin.hook_request import build_hook_request

    for path in sorted(SAMPLES.glob("*.json")):
        bundle = json.loads(path.read_text())
        if bundle.get("resourceType") != "Bundle":
            continue
        yield path.name, build_hook_request(bundle)
    for size in (10, 100):
        yield f"bench-{size}", order_sign_request(size)


@pytest.mark.anyio
async def test_every_suggested_update_is_valid_fhir(app: Any) -> None:
    from fhir.resources.R4B.servicerequest import ServiceRequest as R4ServiceRequest
    from fhir.resources.servicerequest import ServiceRequest as R5ServiceRequest

    checked = 0
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name, request in _requests():
            response = await client.post("/cds-services/therapy-timed-codes", json=request)
            assert response.status_code == 200, name
            for resource in _suggested_resources(response.json()):
                model = R5ServiceRequest if _is_r5(resource) else R4ServiceRequest
                model.model_validate(resource)  # full models, as before the fast path
                checked += 1
    assert checked >= 5


def _draft() -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "chg-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": CPT_SYSTEM, "code": "97530"}]},
        "quantityQuantity": {"value": 2, "unit": "unit"},
    }


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"status": None}, "status is required"),
        ({"intent": ""}, "intent is required"),
        ({"subject": None}, "subject is required"),
        ({"subject": {}}, "an empty Reference"),
        ({"resourceType": "Procedure"}, "not a ServiceRequest"),
        ({"quantityQuantity": {"value": "two"}}, "quantity value is not a number"),
        ({"quantityQuantity": {"value": True}}, "quantity value is a boolean"),
        ({"orderDetail": ["59"]}, "orderDetail holds no CodeableConcepts"),
        ({"extension": [{"valueCode": "x"}]}, "extension without url"),
        ({"code": {"coding": "97530"}}, "coding is not a list"),
    ],
)
def test_malformed_drafts_are_not_sound(change: dict[str, Any], why: str) -> None:
    draft = {**_draft(), **change}
    draft = {k: v for k, v in draft.items() if v is not None}
    updated = apply_changes(draft, [ChargeChange(add_modifier="59")], None)
    assert not sound_update(updated, None), why


@pytest.mark.parametrize(
    "change",
    [
        ChargeChange(units=1),
        ChargeChange(add_modifier="59"),
        ChargeChange(add_modifier="XE"),
        ChargeChange(remove_modifier="59"),
        ChargeChange(code="97150", units=1),
    ],
)
@pytest.mark.parametrize("version", [None, FhirVersion.R5])
def test_sound_update_agrees_with_the_full_models(
    change: ChargeChange, version: FhirVersion | None
) -> None:
    draft = _draft()
    if version is FhirVersion.R5:
        draft["code"] = {"concept": draft["code"]}
    updated = apply_changes(draft, [change], version)
    assert sound_update(updated, version)
    assert valid_fhir(updated, version)


# ------------------------------------------------------------------ minute attribution

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
POOL = ["97110", "97140", "97530", "97150", "97010"]


def _one_on_one(code: str) -> bool:
    return code not in ("97150", "97010")


def _reference_attribution(
    services: list[TimedService], pair: tuple[str, str] | None
) -> tuple[dict[str, int], list[Overlap]]:
    """The quadratic definition: every elementary segment, every pair of intervals."""
    intervals = [i for i in (usable_interval(s) for s in services) if i is not None]
    kept: dict[str, timedelta] = {i.code: timedelta(0) for i in intervals}
    exclusive = [i for i in intervals if _one_on_one(i.code)]
    for i in intervals:
        if not _one_on_one(i.code):
            kept[i.code] += i.length

    def winner(active: frozenset[str]) -> str | None:
        if len(active) == 1:
            return next(iter(active))
        if pair is not None and active == frozenset(pair):
            return pair[0]
        return None

    points = sorted({p for i in exclusive for p in (i.start, i.end)})
    for left, right in pairwise(points):
        active = frozenset(i.code for i in exclusive if i.start <= left and i.end >= right)
        code = winner(active) if active else None
        if code is not None:
            kept[code] += right - left
    # Every pair, in the order the sweep lists them: by the later span's place in start order.
    order = sorted(
        (i for i in exclusive if i.end > i.start), key=lambda i: (i.start, i.end, i.ref, i.code)
    )
    overlaps = []
    for y, b in enumerate(order):
        for a in order[:y]:
            shared = intersection(a, b)
            if shared > timedelta(0):
                refs = tuple(sorted((a.ref, b.ref)))
                overlaps.append(
                    Overlap(
                        refs=(refs[0], refs[1]),
                        codes=tuple(sorted({a.code, b.code})),
                        start=max(a.start, b.start),
                        end=min(a.end, b.end),
                        kept_by=winner(frozenset({a.code, b.code})),
                    )
                )
    return {c: int(v.total_seconds() // 60) for c, v in kept.items()}, overlaps


specs = st.lists(
    st.tuples(st.sampled_from(POOL), st.integers(0, 90), st.integers(0, 40)),
    min_size=0,
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(specs, st.sampled_from([None, ("97140", "97530")]))
def test_sweep_attribution_equals_the_quadratic_definition(
    raw: list[tuple[str, int, int]], pair: tuple[str, str] | None
) -> None:
    services = [
        TimedService(
            ref=f"Procedure/p{i}",
            code=code,
            system=CPT_SYSTEM,
            status="completed",
            timing=TimingKind.PERIOD,
            start=T0 + timedelta(minutes=at),
            end=T0 + timedelta(minutes=at + length),
            service_date=T0.date(),
            spans_midnight=False,
            patient="Patient/p1",
            encounter="Encounter/e1",
        )
        for i, (code, at, length) in enumerate(raw)
    ]
    result = attribute_minutes(services, is_one_on_one=_one_on_one, pair=pair)
    minutes, overlaps = _reference_attribution(services, pair)
    assert dict(result.minutes) == minutes
    # every pair is counted; the first LISTED_OVERLAPS are built, in time order
    assert result.overlap_count == len(overlaps)
    assert list(result.overlaps) == overlaps[:LISTED_OVERLAPS]


@pytest.mark.anyio
async def test_every_answer_matches_the_derived_response_schema(app: Any) -> None:
    """Every sample and benchmark answer, suggestions included, is valid against the schema
    derived from the wire models (what the OpenAPI document states)."""
    import jsonschema_rs

    from cds_hooks.wire_schema import response_schema

    validator = jsonschema_rs.validator_for(response_schema())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name, request in _requests():
            response = await client.post("/cds-services/therapy-timed-codes", json=request)
            assert response.status_code == 200, name
            errors = [error.message for error in validator.iter_errors(response.json())]
            assert errors == [], name


# ------------------------------------------------------------------ serialisation


def test_response_prunes_nested_empties_once() -> None:
    action = Action(
        type="update",
        description="set units",
        resource={"resourceType": "ServiceRequest", "note": [], "x": {"y": None, "z": ""}},
    )
    card = Card(
        summary="s",
        indicator="info",
        source=Source(label="l", topic=Coding(code="c", system="s", display=None)),
        suggestions=(Suggestion(label="fix", actions=(action,)),),
        selection_behavior="at-most-one",
    )
    body = CdsResponse(cards=(card,)).model_dump(mode="json", by_alias=True)
    assert body == {
        "cards": [
            {
                "summary": "s",
                "indicator": "info",
                "source": {"label": "l", "topic": {"code": "c", "system": "s"}},
                "suggestions": [
                    {
                        "label": "fix",
                        "actions": [
                            {
                                "type": "update",
                                "description": "set units",
                                "resource": {"resourceType": "ServiceRequest"},
                            }
                        ],
                    }
                ],
                "selectionBehavior": "at-most-one",
            }
        ]
    }
    assert CdsResponse(cards=()).model_dump(mode="json", by_alias=True) == {"cards": []}


@pytest.mark.parametrize("member", ["orderDetail", "extension"])
@pytest.mark.parametrize("version", [None, FhirVersion.R5])
def test_a_draft_member_that_is_not_a_list_gets_no_suggestion(
    member: str, version: FhirVersion | None
) -> None:
    draft = {**_draft(), member: {"coding": "not a list"}}
    updated = apply_changes(draft, [ChargeChange(add_modifier="59")], version)
    assert not sound_update(updated, version)


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=60))
def test_card_uuids_are_rfc4122_name_based(name: str) -> None:
    """The fast card-uuid path is exactly ``uuid.uuid5`` in the service's namespace."""
    import uuid

    assert cards.uuid5_text(name) == str(uuid.uuid5(cards._UUID_NAMESPACE, name))
