"""Hostile shapes, not just malformed ones: the work and the answer of a call stay bounded.

The shapes that once hung a worker or grew an answer with the square of its input:
- dates at the ends of the calendar (year 1 with a positive offset, year 9999, leap seconds);
- hundreds of mutually overlapping services in one visit;
- deep nesting in every free-form member (notes, extensions, orderDetail, feedback reasons);
- Markdown and HTML in every string the cards may quote.

Every call must answer below 500, within ``FUZZ_CALL_SECONDS`` (generous: a loaded CI machine
is slow, not wrong), with an answer no larger than ``ANSWER_SLACK`` bytes plus twice the
request; and no Markdown or HTML from the request may become a link, image or tag in a card's
rendered detail (rendered by markdown-it-py in CommonMark mode, raw HTML allowed, as a lenient
EHR would render it; the summary and labels are plain text).
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fuzz_support import DISCHARGE, EXAMPLES, ORDER_SIGN, Caller, caller, sample_requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

SEEDS = sample_requests()
CALL_SECONDS = float(os.environ.get("FUZZ_CALL_SECONDS", "20"))
#: Room for a visit's cards and their fixed text, whatever the request's size.
ANSWER_SLACK = 64 * 1024
#: The most overlapping services one example sends (``make fuzz`` may raise it).
OVERLAP_MAX = int(os.environ.get("FUZZ_OVERLAP_MAX", "600"))
#: Statuses a hostile but well-formed request may get: analysed, refused, too large.
ANSWERED = frozenset({200, 400, 412, 413, 415, 422})

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=False,
)
# Large requests: fewer examples, each one does more.
FUZZ_LARGE = settings(FUZZ, max_examples=max(3, EXAMPLES // 8))

CPT = "http://www.ama-assn.org/go/cpt"
DATE_MEMBERS = frozenset(
    {"start", "end", "performedDateTime", "occurrenceDateTime", "authoredOn", "date", "recorded"}
)
HOSTILE_DATES = [
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01",
    "9999-12-31T23:59:59+00:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31",
    "1899-12-31T23:59:00Z",
    "2201-01-01T00:00:00Z",
    "2025-06-30T23:59:60Z",
    "2025-03-04T09:00:00.999999999999-05:00",
    "2025-03-04T09:00:00+14:59",
    "+002025-03-04T09:00:00Z",
]
MARKUP = [
    "[re-enter your password](https://evil.example/phish)",
    "![pixel](https://evil.example/p.png)",
    "<https://evil.example/auto>",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="https://evil.example">click</a>',
    "`` ` ``[x](https://evil.example/code)",
    "[x]\n\n[x]: https://evil.example/ref",
    "stopped\n|",
    "| a | b |\n|---|---|\n| [c](https://evil.example/t) | d |",
    "javascript:alert(1)",
    "**bold** _em_ # heading\n> quote\n- item",
]
#: What a rendered card detail may never contain when the request planted markup.
FORBIDDEN_HTML = re.compile(
    r"<script|<img|<a href=\"(?:https://evil|javascript:)|src=\"https://evil", re.IGNORECASE
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def client() -> Iterator[Caller]:
    yield from caller()


def _timed_post(
    client: Caller, path: str, body: bytes, content_type: str = "application/json"
) -> httpx.Response:
    started = time.perf_counter()
    response = client.post(path, body, content_type)
    elapsed = time.perf_counter() - started
    assert response.status_code < 500, response.text[:500]
    assert "Traceback" not in response.text
    for line in client.records:
        assert "Traceback" not in line, line[:300]
    assert elapsed <= CALL_SECONDS, f"{path} took {elapsed:.1f} s for {len(body)} bytes"
    assert len(response.content) <= ANSWER_SLACK + 2 * len(body), (
        f"{path}: {len(response.content)} bytes answered to {len(body)} bytes"
    )
    return response


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    else:
        yield path, node


def _containers(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict | list):
        yield path
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            yield from _containers(value, (*path, key))


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> None:
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value


#: Stands where a raw JSON text is spliced into a dumped request (deep nesting cannot be
#: dumped by the json module, which recurses).
SLOT = "QQRAWSLOT"


def _nested(depth: int, kind: str) -> bytes:
    """``depth`` levels of arrays or objects around a string, as JSON text."""
    if kind == "list":
        return b"[" * depth + b'"x"' + b"]" * depth
    return b'{"a":' * depth + b'"x"' + b"}" * depth


def _splice(tree: Any, raw: bytes) -> bytes:
    """The request with the ``SLOT`` string replaced by the raw JSON text."""
    return _dumps(tree).replace(f'"{SLOT}"'.encode(), raw, 1)


# ------------------------------------------------------------------ dates at the calendar's ends


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.one_of(
            st.sampled_from(HOSTILE_DATES),
            st.datetimes().map(lambda d: d.isoformat() + "+05:00"),
            st.datetimes().map(lambda d: d.isoformat() + "Z"),
        ),
        min_size=1,
        max_size=6,
    ),
    st.randoms(use_true_random=False),
)
def test_dates_at_the_ends_of_the_calendar(
    client: Caller, seed: tuple[str, dict[str, Any]], dates: list[str], rnd: Any
) -> None:
    service, request = seed
    tree = copy.deepcopy(request)
    targets = [path for path, _ in _leaves(tree) if path and path[-1] in DATE_MEMBERS]
    if not targets:
        return
    for date in dates:
        _set(tree, rnd.choice(targets), date)
    response = _timed_post(client, f"/cds-services/{service}", _dumps(tree))
    assert response.status_code in ANSWERED


def _bundle_of(request: dict[str, Any]) -> dict[str, Any]:
    """The FHIR resources of a hook request, as the Bundle the sandbox takes."""
    resources: list[Any] = []
    for value in (request.get("prefetch") or {}).values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            resources += [e.get("resource") for e in value.get("entry") or []]
        elif isinstance(value, dict):
            resources.append(value)
    orders = request.get("context", {}).get("draftOrders") or {}
    resources += [e.get("resource") for e in orders.get("entry") or []]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources if isinstance(r, dict)],
    }


@FUZZ
@given(st.sampled_from(SEEDS), st.sampled_from(HOSTILE_DATES), st.sampled_from(HOSTILE_DATES))
def test_sandbox_timeline_with_dates_at_the_ends_of_the_calendar(
    client: Caller, seed: tuple[str, dict[str, Any]], start: str, end: str
) -> None:
    bundle = _bundle_of(seed[1])
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource.get("resourceType") == "Procedure":
            period = "occurrencePeriod" if "occurrencePeriod" in resource else "performedPeriod"
            resource[period] = {"start": start, "end": end}
            break
    response = _timed_post(client, "/sandbox/api/timeline", _dumps({"bundle": bundle}))
    assert response.status_code in ANSWERED


# ------------------------------------------------------------------ many overlapping services


def _overlapping_request(count: int, hook: str) -> dict[str, Any]:
    codes = ["97140", "97530", "97110", "97112"]
    procedures = []
    for index in range(count):
        procedures.append(
            {
                "resourceType": "Procedure",
                "id": f"p{index}",
                "status": "completed",
                "code": {"coding": [{"system": CPT, "code": codes[index % len(codes)]}]},
                "subject": {"reference": "Patient/p1"},
                "encounter": {"reference": "Encounter/e1"},
                "performedPeriod": {
                    "start": "2025-03-04T09:00:00-05:00",
                    "end": f"2025-03-04T09:{20 + index % 30:02d}:00-05:00",
                },
            }
        )
    context: dict[str, Any] = {"userId": "Practitioner/t1", "patientId": "p1", "encounterId": "e1"}
    if hook == "order-sign":
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "resource": {
                        "resourceType": "ServiceRequest",
                        "id": f"sr{code}",
                        "status": "draft",
                        "intent": "order",
                        "code": {"coding": [{"system": CPT, "code": code}]},
                        "subject": {"reference": "Patient/p1"},
                        "encounter": {"reference": "Encounter/e1"},
                        "quantityQuantity": {"value": 2},
                    }
                }
                for code in codes
            ],
        }
    return {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": context,
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1"},
            "encounter": {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "subject": {"reference": "Patient/p1"},
                "period": {
                    "start": "2025-03-04T09:00:00-05:00",
                    "end": "2025-03-04T10:00:00-05:00",
                },
            },
            "procedures": {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": p} for p in procedures],
            },
            "carePlans": None,
        },
    }


@FUZZ_LARGE
@given(st.integers(2, OVERLAP_MAX), st.sampled_from([ORDER_SIGN, DISCHARGE]))
def test_many_overlapping_services_answer_linearly(
    client: Caller, count: int, service: str
) -> None:
    hook = "order-sign" if service == ORDER_SIGN else "encounter-discharge"
    body = _dumps(_overlapping_request(count, hook))
    response = _timed_post(client, f"/cds-services/{service}", body)
    assert response.status_code in ANSWERED
    if response.status_code == 200:
        topics = [card["source"]["topic"]["code"] for card in response.json()["cards"]]
        # One visit of four codes: the cards are bounded by the codes and the rules, never by
        # the number of overlapping pairs (one W-OVERLAP card lists them).
        assert topics.count("W-OVERLAP") <= 1, topics
        assert len(topics) <= 40, topics


@FUZZ_LARGE
@given(st.integers(2, OVERLAP_MAX))
def test_many_overlapping_services_in_the_sandbox_timeline(client: Caller, count: int) -> None:
    bundle = _bundle_of(_overlapping_request(count, "order-sign"))
    response = _timed_post(client, "/sandbox/api/timeline", _dumps({"bundle": bundle}))
    assert response.status_code in ANSWERED


# ------------------------------------------------------------------ deep nesting


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.integers(20, 3000),
    st.sampled_from(["list", "dict"]),
    st.randoms(use_true_random=False),
)
def test_deep_nesting_in_any_member(
    client: Caller, seed: tuple[str, dict[str, Any]], depth: int, kind: str, rnd: Any
) -> None:
    service, request = seed
    tree = copy.deepcopy(request)
    paths = [path for path in _containers(tree) if path]
    _set(tree, rnd.choice(paths), SLOT)
    response = _timed_post(client, f"/cds-services/{service}", _splice(tree, _nested(depth, kind)))
    assert response.status_code in ANSWERED


@FUZZ
@given(st.integers(20, 3000), st.sampled_from(["list", "dict"]), st.sampled_from(["note", "ext"]))
def test_deep_nesting_in_free_form_members_of_a_draft_order(
    client: Caller, depth: int, kind: str, member: str
) -> None:
    request = _overlapping_request(2, "order-sign")
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    if member == "note":
        order["note"] = [{"text": "x", "extension": [SLOT]}]
    else:
        order["extension"] = [{"url": "urn:x", "valueString": "x", "extension": SLOT}]
    body = _splice(request, _nested(depth, kind))
    response = _timed_post(client, f"/cds-services/{ORDER_SIGN}", body)
    assert response.status_code in ANSWERED


@FUZZ
@given(st.integers(20, 3000), st.sampled_from(["list", "dict"]))
def test_deep_nesting_in_feedback(client: Caller, depth: int, kind: str) -> None:
    item = {
        "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
        "outcome": "overridden",
        "outcomeTimestamp": "2025-03-04T10:00:00Z",
        "overrideReason": {"reason": {"code": "x", "system": SLOT}},
    }
    body = _splice({"feedback": [item]}, _nested(depth, kind))
    response = _timed_post(client, f"/cds-services/{ORDER_SIGN}/feedback", body)
    assert response.status_code in ANSWERED


@FUZZ
@given(
    st.sampled_from(["/sandbox/api/timeline", "/sandbox/api/request", "/sandbox/api/apply"]),
    st.one_of(
        st.integers(20, 3000).map(lambda d: _nested(d, "list")),
        st.integers(20, 3000).map(lambda d: _nested(d, "dict")),
        st.integers(300, 6000).map(lambda digits: b"9" * digits),
        st.integers(300, 6000).map(lambda digits: b"1e" + b"9" * digits),
    ),
)
def test_sandbox_helpers_on_hostile_json(client: Caller, path: str, value: bytes) -> None:
    bundle = _bundle_of(SEEDS[0][1])
    bundle["entry"][0]["resource"]["extension"] = [SLOT]
    body = _splice({"bundle": bundle}, value)
    response = _timed_post(client, path, body)
    assert response.status_code in ANSWERED


@pytest.mark.parametrize(
    "body",
    [
        b'{"bundle": {"resourceType": "Bundle", "entry": [{"resource": {"id": "\\ud800"}}]}}',
        b'{"bundle": {"resourceType": "Bundle", "entry": [{"resource": {"x": NaN}}]}}',
        b'{"bundle": {"resourceType": "Bundle", "entry": [{"resource": {"x": Infinity}}]}}',
    ],
    ids=["lone-surrogate", "nan", "infinity"],
)
@pytest.mark.parametrize(
    "path", ["/sandbox/api/timeline", "/sandbox/api/request", "/sandbox/api/apply"]
)
def test_sandbox_helpers_on_json_python_would_accept(
    client: Caller, path: str, body: bytes
) -> None:
    response = _timed_post(client, path, body)
    assert response.status_code in ANSWERED


#: Any JSON value, small: what a hostile suggestion may hold where an id or a member should be.
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.sampled_from(["create", "update", "delete", "remove", 7]),
    st.sampled_from(["id", "status", "code", "quantityQuantity", "orderDetail", "extension"]),
    ANY_JSON,
)
def test_sandbox_apply_with_hostile_actions(
    client: Caller, seed: tuple[str, dict[str, Any]], kind: Any, member: str, value: Any
) -> None:
    """The apply helper applies, or refuses with a reason, whatever the action holds."""
    bundle = _bundle_of(seed[1])
    drafts = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"].get("resourceType") == "ServiceRequest"
        and e["resource"].get("status") == "draft"
    ]
    resource = dict(drafts[0]) if drafts else {"resourceType": "ServiceRequest", "status": "draft"}
    resource[member] = value
    action = {"type": kind, "description": "d", "resource": resource, "resourceId": value}
    body = _dumps({"bundle": bundle, "actions": [action, value]})
    response = _timed_post(client, "/sandbox/api/apply", body)
    assert response.status_code in ANSWERED


# ------------------------------------------------------------------ Markdown and HTML everywhere

RENDER = MarkdownIt("commonmark", {"html": True})


def _rendered_details(response: httpx.Response) -> list[str]:
    if response.status_code != 200:
        return []
    rendered = []
    for card in response.json().get("cards", []):
        rendered.append(RENDER.render(card.get("detail") or ""))
    return rendered


#: Members whose values decide what the request means; markup there changes the visit itself.
STRUCTURAL = frozenset({"resourceType", "hook", "hookInstance", "system", "url", "reference"})


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.sampled_from(MARKUP),
    st.sampled_from(["replace", "append"]),
    st.floats(0.1, 1.0),
    st.randoms(use_true_random=False),
)
def test_markup_in_any_string_never_becomes_markup_in_a_card(
    client: Caller,
    seed: tuple[str, dict[str, Any]],
    markup: str,
    how: str,
    share: float,
    rnd: Any,
) -> None:
    service, request = seed
    tree = copy.deepcopy(request)
    strings = [
        path
        for path, value in _leaves(tree)
        if isinstance(value, str) and path and path[-1] not in STRUCTURAL
    ]
    for path in strings:
        if rnd.random() <= share:
            parent = tree
            for step in path[:-1]:
                parent = parent[step]
            old = parent[path[-1]]
            parent[path[-1]] = markup if how == "replace" else f"{old}{markup}"
    response = _timed_post(client, f"/cds-services/{service}", _dumps(tree))
    assert response.status_code in ANSWERED
    for html in _rendered_details(response):
        assert not FORBIDDEN_HTML.search(html), html[:600]
