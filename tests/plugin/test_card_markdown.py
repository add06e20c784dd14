"""Issue 17, item 4: FHIR data never becomes Markdown structure in a card.

Every string in a sample visit's resources (the prefetched Procedures, Encounter, Patient,
CarePlans and the draft orders) is replaced in turn -- and, separately, suffixed -- with a
payload of Markdown and HTML: a phishing link, an image, a script tag, an anchor, code spans,
a table, a heading, emphasis, bare URLs, line breaks. Each request is sent to the service. Its
cards are rendered with a CommonMark renderer that passes raw HTML through (as a lenient EHR
would) and compared, tag for tag, with the cards of the same request carrying a harmless word
at that place: the payload must add no element at all -- no link, no image, no script, no
table, no heading -- in any summary, detail, suggestion label or action description, and the
answer must stay a valid CDS Hooks response.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from markdown_it import MarkdownIt

from cds_hooks.models import CdsResponse
from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.markdown import quote_markdown
from plugin.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_bundles"
# Visits whose cards quote the most: the pair and overlap findings with suggestions, group
# delivery (a replaced code), an inactive plan (its status), an ignored status.
SAMPLE_FILES = ("overlapping-time-blocks.json", "group-delivery-97530.json", "plan-not-active.json")
PAYLOAD = (
    "[re-enter your password](https://evil.example/phish) ![x](https://evil.example/i.png)"
    ' <script>alert(1)</script> <a href="https://evil.example">a</a> <img src=x onerror=alert(1)>'
    " `code` ``two`` *em* _em_ **b** ~~s~~ www.evil.example mail@evil.example &lt;b&gt;"
    "\n| a | b |\n|---|---|\n| c | d |\n# heading\n> quote\n- item\n1. item\n    indented\n|"
)
# The payload with every Markdown and HTML character made a letter: the same length, spaces,
# line breaks, slashes, dots and colons (so references and URLs parse the same way), and so the
# same findings and cards, none of the structure.
HARMLESS = re.sub(r"[^A-Za-z0-9\s/.:]", "x", PAYLOAD)
MARKERS = ("evil", "script", "heading", "indented", "quote")
# Every element the cards' own Markdown makes: paragraphs, bold, italics, code, the units
# table and the summary card's bullet list.
OUR_TAGS = {
    *("p", "strong", "em", "code", "table", "thead", "tbody", "tr", "th", "td", "ul", "li"),
    *("/p", "/strong", "/em", "/code", "/table", "/thead", "/tbody", "/tr", "/th", "/td"),
    *("/ul", "/li"),
}
SERVICE = "/cds-services/therapy-timed-codes"
RENDER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
TAG = re.compile(r"<(/?[A-Za-z][A-Za-z0-9]*)")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        dev_mode=True, require_auth=False, database_url=f"sqlite:///{tmp_path / 'cds.db'}"
    )
    transport = httpx.ASGITransport(create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
        yield client


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_leaves(item, (*path, index))
    elif isinstance(value, str):
        yield path


def _with(request: dict[str, Any], path: tuple[Any, ...], value: str) -> dict[str, Any]:
    changed = copy.deepcopy(request)
    holder = changed
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return changed


def _texts(body: dict[str, Any]) -> list[tuple[str, str]]:
    """Every text of the answer a person reads, with where it is."""
    found = []
    for n, card in enumerate(body["cards"]):
        found.append((f"cards[{n}].summary", card["summary"]))
        found.append((f"cards[{n}].detail", card.get("detail", "")))
        for s, suggestion in enumerate(card.get("suggestions", [])):
            found.append((f"cards[{n}].suggestions[{s}].label", suggestion["label"]))
            for a, action in enumerate(suggestion.get("actions", [])):
                found.append(
                    (f"cards[{n}].suggestions[{s}].actions[{a}]", action.get("description", ""))
                )
        for link in card.get("links", []):
            found.append((f"cards[{n}].links", link["label"]))
    return found


def _outside_code_spans(markdown: str) -> str:
    """The Markdown with its code spans (a backtick run up to the next run of the same length,
    CommonMark 6.1) cut out: inside them nothing is a link, even in GitHub-flavoured Markdown."""
    out, at = [], 0
    for run in re.finditer(r"`+", markdown):
        if run.start() < at:
            continue
        close = re.compile(rf"(?<!`){run.group()}(?!`)").search(markdown, run.end())
        if close is None:
            continue
        out.append(markdown[at : run.start()])
        at = close.end()
    return "".join(out) + markdown[at:]


def _tags(markdown: str) -> list[str]:
    return TAG.findall(RENDER.render(markdown))


async def _answer(client: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any] | None:
    response = await client.post(SERVICE, json=request)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["resourceType"] == "OperationOutcome"
        return None
    body: dict[str, Any] = response.json()
    CdsResponse.model_validate(body)  # still a valid CDS Hooks response
    return body


def _requests() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in SAMPLE_FILES:
        bundle = json.loads((SAMPLES / name).read_text())
        yield name, build_hook_request(bundle, hook_instance="5b0f2c1e-8d7a-4c3b-9e2f-1a0b9c8d7e6f")


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "request_body"), list(_requests()), ids=SAMPLE_FILES)
async def test_markdown_and_html_in_any_fhir_string_add_no_structure_to_cards(
    client: httpx.AsyncClient, name: str, request_body: dict[str, Any]
) -> None:
    leaves = [("prefetch", *path) for path in _string_leaves(request_body["prefetch"], ())] + [
        ("context", "draftOrders", *path)
        for path in _string_leaves(request_body["context"]["draftOrders"], ())
    ]
    assert len(leaves) > 40
    reached = 0
    for path in leaves:
        holder: Any = request_body
        for step in path:
            holder = holder[step]
        original = str(holder)
        for make in (lambda _: PAYLOAD, lambda value: value + PAYLOAD):
            hostile = await _answer(client, _with(request_body, path, make(original)))
            if hostile is None:
                continue
            hostile_texts = _texts(hostile)
            for where, text in hostile_texts:
                # only the elements the cards make themselves, whatever the payload did
                assert set(_tags(text)) <= OUR_TAGS, (name, path, where)
                bare = _outside_code_spans(text)
                # bare URLs and www. names are broken for GitHub-flavoured autolinking too
                assert not re.search(r"(?i)https://evil|www\.evil|[^\\]@evil", bare), (
                    name,
                    path,
                    where,
                )
            if not any(marker in text for _, text in hostile_texts for marker in MARKERS):
                continue  # nothing of the payload reached a card
            reached += 1
            harmless = await _answer(
                client, _with(request_body, path, make(original).replace(PAYLOAD, HARMLESS))
            )
            assert harmless is not None, (name, path)
            harmless_texts = _texts(harmless)
            assert [w for w, _ in hostile_texts] == [w for w, _ in harmless_texts], (name, path)
            for (where, text), (_, calm) in zip(hostile_texts, harmless_texts, strict=True):
                assert _tags(text) == _tags(calm), (name, path, where)
    assert reached > 0, "no payload reached a card: the test would prove nothing"


@pytest.mark.parametrize(
    "text",
    [
        "[re-enter your password](https://evil.example/phish)",
        "stopped\n|",
        "<script>alert(1)</script>",
        "a `tick` and ``two`` and ```three```",
        "`starts and ends`",
        "- 1. # > = + | * _ ~ ! & { } $ ^",
        "12) list",
        "Procedure/p1",
    ],
)
def test_quoted_text_and_code_render_as_exactly_the_characters(text: str) -> None:
    flat = " ".join(text.split())
    for code in (False, True):
        html = RENDER.render(quote_markdown(text, code=code))
        assert TAG.findall(html) == (["p", "code", "/code", "/p"] if code else ["p", "/p"])
        inner = re.sub(r"</?(p|code)>", "", html).strip()
        shown = (
            inner.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", '"')
            .replace("&amp;", "&")
        )
        assert shown == flat


def test_ordinary_values_are_left_as_they_are() -> None:
    for value in ("Procedure/p-1", "97530", "ServiceRequest/sr.2", "The plan of care for 97110"):
        assert quote_markdown(value) == value
    assert quote_markdown("Procedure/p-1", code=True) == "`Procedure/p-1`"
