"""The wire rule, checked on every outgoing model from its own fields, and the response schemas
derived from the same models.

Every :class:`WireModel` subclass is built three ways from its field annotations (required
members only; every optional member set to ``None`` or an empty value; every member set), then
sent: no ``null`` and no empty string, array or object anywhere (A-2..A-4), every required
member present, every optional member present exactly when it has a value, and the object
valid against the schema derived from the model.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import jsonschema_rs
import pytest
from pydantic import Field
from pydantic.fields import FieldInfo

from cds_hooks import models
from cds_hooks.models import WireModel, is_empty
from cds_hooks.wire_schema import (
    action_schema,
    card_schema,
    coding_schema,
    discovery_schema,
    response_schema,
    wire_schema,
)


def _wire_models() -> list[type[WireModel]]:
    found: list[type[WireModel]] = []
    pending = list(WireModel.__subclasses__())
    while pending:
        model = pending.pop()
        if model not in found:
            found.append(model)
            pending.extend(model.__subclasses__())
    return sorted(found, key=lambda m: m.__name__)


WIRE_MODELS = [m for m in _wire_models() if m.__module__ == models.__name__]


def _wire_name(name: str, field: FieldInfo) -> str:
    return field.serialization_alias or field.alias or name


def _non_null(annotation: Any) -> Any:
    """``X`` of ``X | None``; Annotated metadata dropped."""
    if get_origin(annotation) is Annotated:
        return _non_null(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [a for a in get_args(annotation) if a is not type(None)]
        assert len(kept) == 1, f"unexpected union {annotation}"
        return _non_null(kept[0])
    return annotation


def _value(annotation: Any) -> Any:
    """A present (non-empty) value of ``annotation``, as accepted by the model."""
    kind = _non_null(annotation)
    origin = get_origin(kind)
    if origin is Literal:
        return get_args(kind)[0]
    if origin is tuple:
        return (_value(get_args(kind)[0]),)
    if origin is dict:
        value_type = get_args(kind)[1]
        if value_type is Any:  # free-form JSON: nested empties are pruned, the rest is kept
            return {"kept": {"value": 1, "gone": None, "empty": []}, "dropped": {"x": ""}}
        return {"key": _value(value_type)}
    if kind is str:
        return "x"
    if kind is bool:
        return False  # falsy, yet a value: it must be sent
    if isinstance(kind, type) and issubclass(kind, WireModel):
        return _full(kind)
    raise AssertionError(f"no sample value for {annotation!r}: extend _value")


def _empty(annotation: Any) -> list[Any]:
    """The empty values a member of ``annotation`` accepts: ``None`` and ``""``/``()``/``{}``."""
    kind = _non_null(annotation)
    values: list[Any] = [None] if _non_null(annotation) is not annotation else []
    if kind is str:
        values.append("")
    elif get_origin(kind) is tuple:
        values.append(())
    elif get_origin(kind) is dict:
        values.append({})
    return values


def _required(model: type[WireModel]) -> dict[str, Any]:
    return {
        name: _value(field.annotation)
        for name, field in model.model_fields.items()
        if field.is_required()
    }


def _full(model: type[WireModel]) -> WireModel:
    return model(**{name: _value(f.annotation) for name, f in model.model_fields.items()})


def _assert_sendable(value: Any, path: str) -> None:
    assert not is_empty(value), f"null or empty at {path}"
    if isinstance(value, dict):
        for key, item in value.items():
            _assert_sendable(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _assert_sendable(item, f"{path}[{index}]")


def _check(model: type[WireModel], instance: WireModel, present: set[str]) -> None:
    wire = instance.to_wire()
    assert json.loads(instance.encode()) == wire
    assert instance.model_dump(mode="json", by_alias=True) == wire
    assert set(wire) == present, model.__name__
    _assert_sendable(wire, model.__name__)
    assert jsonschema_rs.validator_for(wire_schema(model)).is_valid(wire), model.__name__


def test_every_outgoing_model_is_checked() -> None:
    exported = {
        m for m in vars(models).values() if isinstance(m, type) and issubclass(m, WireModel)
    }
    assert set(WIRE_MODELS) == exported - {WireModel}
    assert {"Card", "CdsResponse", "DiscoveryResponse", "Action"} <= {
        m.__name__ for m in WIRE_MODELS
    }


@pytest.mark.parametrize("model", WIRE_MODELS, ids=lambda m: m.__name__)
def test_required_members_only(model: type[WireModel]) -> None:
    required = {_wire_name(n, f) for n, f in model.model_fields.items() if f.is_required()}
    assert required, f"{model.__name__} has no required member"
    _check(model, model(**_required(model)), required)


@pytest.mark.parametrize("model", WIRE_MODELS, ids=lambda m: m.__name__)
def test_optional_members_that_are_null_or_empty_are_left_out(model: type[WireModel]) -> None:
    required = {_wire_name(n, f) for n, f in model.model_fields.items() if f.is_required()}
    optional = {n: f for n, f in model.model_fields.items() if not f.is_required()}
    for position in (0, -1):  # None where accepted, then the type's own empty value
        members = {name: _empty(f.annotation)[position] for name, f in optional.items()}
        _check(model, model(**_required(model), **members), required)


@pytest.mark.parametrize("model", WIRE_MODELS, ids=lambda m: m.__name__)
def test_every_member_with_a_value_is_sent(model: type[WireModel]) -> None:
    every = {_wire_name(n, f) for n, f in model.model_fields.items()}
    instance = _full(model)
    _check(model, instance, every)
    for name, field in model.model_fields.items():
        if (
            get_origin(_non_null(field.annotation)) is dict
            and get_args(_non_null(field.annotation))[1] is Any
        ):
            assert instance.to_wire()[_wire_name(name, field)] == {"kept": {"value": 1}}


@pytest.mark.parametrize("model", WIRE_MODELS, ids=lambda m: m.__name__)
def test_required_array_members_are_sent_even_when_empty(model: type[WireModel]) -> None:
    arrays = [
        name
        for name, f in model.model_fields.items()
        if f.is_required() and get_origin(_non_null(f.annotation)) is tuple
    ]
    for name in arrays:  # {"cards": []}, {"services": []}: the empty arrays A-3 allows
        wire = model(**{**_required(model), name: ()}).to_wire()
        assert wire[_wire_name(name, model.model_fields[name])] == []


def test_an_optional_member_must_default_to_empty() -> None:
    with pytest.raises(TypeError, match="must default to None or an empty value"):

        class Badge(WireModel):
            label: str
            colour: str = Field(default="blue")

    class Fine(WireModel):
        label: str
        colour: str | None = None

    assert Fine(label="x", colour="").to_wire() == {"label": "x"}


def test_the_derived_schema_refuses_what_the_wire_never_sends() -> None:
    card = {"summary": "x", "indicator": "info", "source": {"label": "l"}}
    valid = jsonschema_rs.validator_for(response_schema()).is_valid
    assert valid({"cards": [card]})
    assert valid({"cards": []})
    assert not valid({})
    assert not valid({"cards": [{**card, "detail": None}]})
    assert not valid({"cards": [{**card, "detail": ""}]})
    assert not valid({"cards": [{**card, "links": []}]})
    assert not valid({"cards": [{**card, "summary": "x" * 140}]})
    assert not valid({"cards": [{**card, "indicator": "success"}]})
    assert not jsonschema_rs.validator_for(discovery_schema()).is_valid({})


# ------------------------------------------------------- against the hand-written constants

_LIMITS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "pattern")
_WIRE_RULE_BOUNDS = ("minLength", "minItems", "minProperties")


def test_the_openapi_document_uses_the_derived_schemas() -> None:
    """The document FastAPI serves carries the schemas derived from the wire models (no
    hand-written copy to drift): the invoke answer and the discovery document."""
    from cdsh_support import make_app

    document = make_app().openapi()
    paths = document["paths"]
    invoke = next(p["post"] for url, p in paths.items() if url.startswith("/cds-services/"))
    discovery = paths["/cds-services"]["get"]
    assert invoke["responses"]["200"]["content"]["application/json"]["schema"] == (
        response_schema()
    )
    assert discovery["responses"]["200"]["content"]["application/json"]["schema"] == (
        discovery_schema()
    )


def test_schemas_are_plain_json() -> None:
    for derive in (coding_schema, action_schema, card_schema, response_schema, discovery_schema):
        text = json.dumps(derive())
        assert "$ref" not in text
        assert "$defs" not in text
        assert '"null"' not in text
