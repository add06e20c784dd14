"""Apply a card's suggestion to a CDS Hooks request as an EHR would, and compare the answers.

Shared by the sample-bundle test (``test_suggestions_fix.py``) and the generated-visit property
(``tests/fuzz/test_fuzz_suggestions.py``).

What an EHR does with an accepted suggestion (CDS Hooks 2.0, "Action"): ``update`` replaces the
resource with the same type and id, ``delete`` removes the resource ``resourceId`` names,
``create`` adds the resource. The draft orders of order-sign sit in ``context.draftOrders``;
the same resource may also sit in a prefetch Bundle (or be a prefetch value itself), and an EHR
changes it there too, since it is one record.

What "fixed" means, read from the cards only (so it keeps working whatever the card wording):
each error or warning card is keyed by ``(source.topic.code, indicator)``. A card may stand for
several findings with one cause (one card per problem): the rule ids it stands for are its topic
plus any finding id it carries elsewhere outside its suggestions (a list in the detail, a link
to the catalogue entry, an extension). :func:`addressed` reads them all. After the suggestion is
applied and the hook is called again,

* the topic's card count drops by one (two cards may share a topic, e.g. one E-UNITS-EXCEED per
  code; the fixed one goes), unless the topic is one of :data:`RECORD_FINDINGS`,
* no new error or warning: every other card's key appears at most as often as before, unless
  its finding was already named by as many cards before (it stood on another card, say the
  accepted one, and now stands under its own topic: it was told, it is not new),
* every other finding the accepted card stood for is named by fewer cards than before, except
  :data:`RECORD_FINDINGS`, which must be named by no more.

A finding riding on a card as a note (``Note (ID): ...``: nothing to act on, e.g. advice not to
bill a code the charges do not bill) is not one the card stands for.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from plugin.rules.catalogue import CATALOGUE, RuleId, Severity

Json = dict[str, Any]
CardKey = tuple[str, str]

#: Error and warning finding ids of the catalogue.
PROBLEM_IDS = frozenset(r.value for r in RuleId if CATALOGUE[r].severity is not Severity.INFO)
_RULE_ID = re.compile(r"\b[EW]-[A-Z0-9]+(?:-[A-Z0-9]+)*\b")
_NOTE = re.compile(r"Note \([EWI]-[A-Z0-9]+(?:-[A-Z0-9]+)*\)")
#: Findings about the documented record itself: overlapping time blocks, times not recorded. A
#: billing edit does not change the record (the therapist corrects or adds the times; until
#: then the minutes stay counted once, or not at all), so a suggestion that fixes the billing
#: they caused leaves them standing.
RECORD_FINDINGS = frozenset(
    {"W-OVERLAP", "E-PAIR-SAME-TIMEBLOCK", "W-MISSING-END", "W-MISSING-START", "W-NO-DURATION"}
)


def problem_cards(cards: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [c for c in cards if c.get("indicator") in ("critical", "warning")]


def card_key(card: Mapping[str, Any]) -> CardKey:
    return str(card["source"]["topic"]["code"]), str(card["indicator"])


def keys(cards: Iterable[Mapping[str, Any]]) -> Counter[CardKey]:
    return Counter(card_key(c) for c in problem_cards(cards))


def addressed(card: Mapping[str, Any]) -> set[str]:
    """The finding ids a card stands for: its topic, and any error/warning id it names outside
    its suggestions (the other findings of a card that groups one cause's findings)."""
    rest = {k: v for k, v in card.items() if k != "suggestions"}
    text = _NOTE.sub("", orjson.dumps(rest).decode())
    named = set(_RULE_ID.findall(text)) & PROBLEM_IDS
    return {str(card["source"]["topic"]["code"])} | named


def _entries(holder: object) -> list[Json]:
    if isinstance(holder, dict) and isinstance(holder.get("entry"), list):
        return [e for e in holder["entry"] if isinstance(e, dict)]
    return []


def _ref(resource: object) -> str | None:
    if isinstance(resource, dict) and isinstance(resource.get("id"), str):
        return f"{resource.get('resourceType')}/{resource['id']}"
    return None


def _bundles(request: Json) -> list[Json]:
    """The Bundles of the request an EHR keeps records in: draftOrders and prefetch values."""
    found = [request.get("context", {}).get("draftOrders")]
    found += list((request.get("prefetch") or {}).values())
    return [b for b in found if isinstance(b, dict) and b.get("resourceType") == "Bundle"]


def _replace(request: Json, ref: str, resource: Json | None) -> int:
    """Replace (or, with ``None``, remove) every copy of ``ref``; returns how many were found."""
    found = 0
    for bundle in _bundles(request):
        kept = []
        for entry in _entries(bundle):
            if _ref(entry.get("resource")) == ref:
                found += 1
                if resource is None:
                    continue
                entry = {**entry, "resource": copy.deepcopy(resource)}
            kept.append(entry)
        if "entry" in bundle:
            bundle["entry"] = kept
    prefetch = request.get("prefetch") or {}
    for key, value in list(prefetch.items()):
        if _ref(value) == ref:
            found += 1
            prefetch[key] = copy.deepcopy(resource)
    return found


def apply_suggestion(request: Json, suggestion: Mapping[str, Any]) -> Json:
    """A copy of ``request`` with every action of ``suggestion`` applied, under a new
    hookInstance (a new firing of the hook)."""
    changed = copy.deepcopy(request)
    changed["hookInstance"] = str(uuid.uuid4())
    for action in suggestion.get("actions", ()):
        kind = action["type"]
        if kind == "update":
            resource = action["resource"]
            ref = _ref(resource)
            assert ref is not None, f"update without a resource id: {action['description']}"
            assert _replace(changed, ref, resource), f"update of {ref}, not in the request"
        elif kind == "delete":
            ref = action["resourceId"]
            assert _replace(changed, ref, None), f"delete of {ref}, not in the request"
        elif kind == "create":
            drafts = changed["context"].setdefault(
                "draftOrders", {"resourceType": "Bundle", "type": "collection"}
            )
            drafts.setdefault("entry", []).append({"resource": copy.deepcopy(action["resource"])})
        else:
            raise AssertionError(f"unknown action type {kind!r}")
    return changed


def replaced_drafts(request: Json, cards: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The drafts a suggestion bills under another code, by reference, with the topic of the
    card that does it. The other cards leave those drafts alone (``plugin.cards.cards_for``:
    two cards never propose conflicting edits of one charge), so their suggestions may fix
    only part of their finding until that one is accepted."""
    codes = {
        _ref(e.get("resource")): orjson.dumps(e["resource"].get("code"))
        for e in _entries(request.get("context", {}).get("draftOrders"))
    }
    found = {}
    for card in problem_cards(cards):
        for suggestion in card.get("suggestions", ()):
            for action in suggestion.get("actions", ()):
                ref = _ref(action.get("resource"))
                if ref in codes and orjson.dumps(action["resource"].get("code")) != codes[ref]:
                    found[ref] = card_key(card)[0]
    return found


def fix_problems(
    card: Mapping[str, Any],
    before: Iterable[Mapping[str, Any]],
    after: Iterable[Mapping[str, Any]],
    *,
    partial: bool = False,
) -> list[str]:
    """What is wrong with the answer ``after`` accepting ``card``'s suggestion (empty: fixed).
    ``partial``: the suggestion leaves a draft to another card (:func:`replaced_drafts`), so
    only "no new error or warning" is asked of it."""
    was, now = keys(before), keys(after)
    topic = card_key(card)
    problems = []
    if now[topic] >= was[topic] and not partial and topic[0] not in RECORD_FINDINGS:
        problems.append(f"{topic[0]} ({topic[1]}) is still there")
    stood_for = addressed(card) - {topic[0]}
    for key, count in now.items():
        if key == topic or count <= was[key]:
            continue
        if _naming(after, key[0]) > _naming(before, key[0]) or not _naming(before, key[0]):
            problems.append(f"new {key[1]} card {key[0]}")
    for rule in sorted(stood_for):
        left = _naming(after, rule)
        if left > _naming(before, rule) or (
            left == _naming(before, rule) and rule not in RECORD_FINDINGS
        ):
            problems.append(f"{rule}, which the card also stood for, is still there")
    return problems


def _naming(cards: Iterable[Mapping[str, Any]], rule: str) -> int:
    return sum(rule in addressed(c) for c in problem_cards(cards))
