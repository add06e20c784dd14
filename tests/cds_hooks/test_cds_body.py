"""Request bodies (cds_hooks/body.py): media type, strict JSON, nesting depth, number sizes.

Issue 17 items 8 and 12: valid JSON nested a few hundred levels deep, a 5,000-digit number, a
lone surrogate or NaN reached code that recursed or converted them and answered 500; a
``text/plain`` POST (which a cross-site page can send without a CORS preflight) was served.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from cdsh_support import MARKER, MemoryFeedbackStore, make_app, order_sign_request
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_hooks.body import MAX_JSON_DEPTH, json_depth_exceeds

pytestmark = pytest.mark.anyio

POST_URL = "/cds-services/probe-order-sign"
PATHS = [POST_URL, POST_URL + "/", "/cds-services//probe-order-sign", POST_URL + "/feedback"]
JSON = {"content-type": "application/json"}


def nested(depth: int, leaf: Any = MARKER) -> Any:
    """``{"n": {"n": ... leaf}}``, ``depth`` objects deep."""
    value = leaf
    for _ in range(depth):
        value = {"n": value}
    return value


def nested_text(depth: int) -> str:
    """The JSON text of :func:`nested` (``json.dumps`` itself recurses on deep values)."""
    return '{"n":' * depth + json.dumps(MARKER) + "}" * depth


def body_for(path: str, extra: Any) -> dict[str, Any]:
    """A valid body for ``path`` carrying ``extra`` in a free-form member."""
    if path.endswith("/feedback"):
        item = {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2025-03-04T10:00:00Z"}
        return {"feedback": [{**item, "extension": extra}]}
    return order_sign_request(extension={"x": extra})


def raw_with(path: str, token: str) -> bytes:
    """The body for ``path`` with the JSON text ``token`` in place of a free-form value."""
    return json.dumps(body_for(path, "@@")).replace('"@@"', token).encode()


def outcome(response: httpx.Response) -> str:
    body = response.json()
    assert response.headers["content-type"] == "application/fhir+json"
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0]["diagnostics"])


# ---------------------------------------------------------------- depth, numbers, text


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_TRICKY_TEXT = st.text(alphabet=st.sampled_from(list('[]{}"\\:,ab \n')), max_size=6)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY_TEXT, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(value=_JSON, limit=st.integers(0, 10), indent=st.sampled_from([None, 1]))
def test_depth_on_the_text_is_the_depth_of_the_value(
    value: Any, limit: int, indent: int | None
) -> None:
    """Brackets and quotes inside strings, escapes and white space do not fool the count."""
    raw = json.dumps(value, indent=indent).encode()
    assert json_depth_exceeds(raw, limit) == (_depth(value) > limit)


@pytest.mark.parametrize("path", PATHS)
async def test_nesting_up_to_the_limit_is_accepted_and_beyond_is_a_400(path: str) -> None:
    store = MemoryFeedbackStore()
    app = make_app(store=store)
    # how many levels down the free-form member sits
    base = _depth(body_for(path, nested(20))) - 20
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        at_limit = body_for(path, nested(MAX_JSON_DEPTH - base))
        assert _depth(at_limit) == MAX_JSON_DEPTH
        assert (await c.post(path, json=at_limit)).status_code == 200
        over = body_for(path, nested(MAX_JSON_DEPTH - base + 1))
        response = await c.post(path, json=over)
    assert response.status_code == 400
    assert f"more than {MAX_JSON_DEPTH} levels deep" in outcome(response)
    assert MARKER not in response.text


# each row: what the issue sent, the JSON text put in a free-form member, expected diagnostics
SHAPES = [
    ("objects 250 deep", nested_text(250), f"more than {MAX_JSON_DEPTH} levels"),
    ("objects 1,000 deep", nested_text(1_000), f"more than {MAX_JSON_DEPTH} levels"),
    ("arrays 5,000 deep", "[" * 5_000 + "]" * 5_000, f"more than {MAX_JSON_DEPTH} levels"),
    ("a 5,000-digit integer", "9" * 5_000, "number too large"),
    ("a 400-digit negative", "-" + "9" * 400, "number too large"),
    ("1e400", "1e400", "number too large"),
    ("a lone high surrogate", '"\\ud800"', "not valid Unicode"),
    ("a lone low surrogate", '"\\udc00 x"', "not valid Unicode"),
    ("NaN", "NaN", "not valid JSON"),
    ("Infinity", "-Infinity", "not valid JSON"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("what", "token", "expected"), SHAPES, ids=[s[0] for s in SHAPES])
async def test_json_shapes_beyond_the_limits_are_a_400_naming_the_limit(
    client: httpx.AsyncClient, path: str, what: str, token: str, expected: str
) -> None:
    response = await client.post(path, content=raw_with(path, token), headers=JSON)
    assert response.status_code == 400, what
    assert expected in outcome(response), what
    assert MARKER not in response.text


async def test_invalid_utf8_and_a_byte_order_mark_are_a_400(client: httpx.AsyncClient) -> None:
    raw = json.dumps(order_sign_request()).encode()
    for body, expected in ((raw[:-1] + b'"\xff"}', "Unicode"), (b"\xef\xbb\xbf" + raw, "mark")):
        response = await client.post(POST_URL, content=body, headers=JSON)
        assert response.status_code == 400
        assert expected in outcome(response)


async def test_a_large_but_finite_number_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(POST_URL, content=raw_with(POST_URL, "9" * 300), headers=JSON)
    assert response.status_code == 200


# ---------------------------------------------------------------- media type


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
        "application/jsonp",
        "text/json",
    ],
)
async def test_a_body_not_sent_as_json_is_a_415(path: str, content_type: str | None) -> None:
    """Issue 17 item 12: a cross-site page can POST these (and a body with no Content-Type)
    without a CORS preflight; in development, with no client authentication, they stored
    feedback and ran the services."""
    store = MemoryFeedbackStore()
    app = make_app(store=store)
    headers = {"content-type": content_type} if content_type is not None else {}
    raw = json.dumps(body_for(path, 1)).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.post(path, content=raw, headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in outcome(response)
    assert response.json()["issue"][0]["code"] == "not-supported"
    assert store.items == {}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/fhir+json",
    ],
)
async def test_json_media_types_are_accepted(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    raw = json.dumps(body_for(path, 1)).encode()
    response = await client.post(path, content=raw, headers={"content-type": content_type})
    assert response.status_code == 200


async def test_the_openapi_document_lists_413_and_415() -> None:
    document = make_app().openapi()
    for path in ("/cds-services/probe-order-sign", "/cds-services/{service_id}/feedback"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"413", "415"} <= set(responses)
