"""JSON Schemas of the outgoing CDS Hooks objects, derived from the wire models.

Each schema is pydantic's serialisation schema of a model (by alias), made self-contained
for the OpenAPI document and stated the way the wire rule of :class:`~cds_hooks.models.WireModel`
sends it: an optional member is left out rather than sent as ``null`` or empty, so where it
is present it is never ``null`` and never an empty string, array or object. Constraints come
from the model fields (``Card.summary`` at most 139 characters, the ``indicator`` enum, the
non-empty ``Coding`` members...), so the document cannot drift from what is sent.
"""

from __future__ import annotations

from typing import Any

from cds_hooks.models import Action, Card, CdsResponse, Coding, DiscoveryResponse, WireModel

__all__ = [
    "action_schema",
    "card_schema",
    "coding_schema",
    "discovery_schema",
    "inline_definitions",
    "response_schema",
    "wire_schema",
]

_NULL = {"type": "null"}
#: The lower bound the wire rule puts on a present optional member, by JSON type.
_NON_EMPTY = {"string": "minLength", "array": "minItems", "object": "minProperties"}


def inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` made self-contained for the OpenAPI document: every ``#/$defs/`` reference
    replaced by its definition (members beside the reference kept) and pydantic's titles (class
    names) dropped. Used for the wire models here and for the request bodies
    (:mod:`cds_hooks.openapi`)."""
    definitions: dict[str, Any] = schema.get("$defs", {})

    def inline(value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(
                    {**definitions[ref.removeprefix("#/$defs/")], **_without(value, "$ref")}
                )
            return {
                key: inline(item)
                for key, item in value.items()
                if key != "$defs" and not (key == "title" and isinstance(item, str))
            }
        if isinstance(value, list):
            return [inline(item) for item in value]
        return value

    inlined: dict[str, Any] = inline(schema)
    return inlined


def wire_schema(model: type[WireModel]) -> dict[str, Any]:
    """The JSON Schema of ``model`` as sent on the wire, with its ``$defs`` inlined."""
    schema = inline_definitions(model.model_json_schema(by_alias=True, mode="serialization"))

    def node(value: dict[str, Any]) -> dict[str, Any]:
        is_model = "properties" in value
        required = set(value.get("required", ()))
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "default":
                continue  # Python defaults say nothing about the wire
            if is_model and key == "description":
                continue  # a model's docstring is written for its readers in the code
            if key == "additionalProperties" and isinstance(item, bool):
                continue  # the models refuse unknown members when built; clients may not
            if key == "properties":
                out[key] = {name: member(sub, name in required) for name, sub in item.items()}
            elif key in ("items", "additionalProperties") and isinstance(item, dict):
                out[key] = node(item)
            elif key == "anyOf":
                out[key] = [node(branch) for branch in item]
            else:
                out[key] = item
        return out

    def member(value: dict[str, Any], required: bool) -> dict[str, Any]:
        out = node(value)
        if required:
            return out
        branches = out.get("anyOf")
        if isinstance(branches, list) and _NULL in branches:
            kept = [branch for branch in branches if branch != _NULL]
            out = _without(out, "anyOf")
            out = {**kept[0], **out} if len(kept) == 1 else {**out, "anyOf": kept}
        bound = _NON_EMPTY.get(out.get("type", ""))
        if bound is not None and not ({"enum", "const", "properties"} & out.keys()):
            # enum values and models (with their required members) are never empty anyway
            out[bound] = max(out.get(bound, 0), 1)
        return out

    return node(schema)


def _without(value: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != key}


def coding_schema() -> dict[str, Any]:
    """A CDS Hooks Coding (a card's topic, an override reason)."""
    return wire_schema(Coding)


def action_schema() -> dict[str, Any]:
    """An action of a suggestion or of ``systemActions``."""
    return wire_schema(Action)


def card_schema() -> dict[str, Any]:
    """One card."""
    return wire_schema(Card)


def response_schema() -> dict[str, Any]:
    """The answer of a service call: ``{"cards": [...], "systemActions": [...]}``."""
    return wire_schema(CdsResponse)


def discovery_schema() -> dict[str, Any]:
    """The discovery document: ``{"services": [...]}``."""
    return wire_schema(DiscoveryResponse)
