"""Property tests: no JSON shape makes the mapper or the grouping raise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_builders import bundle, care_plan, claim, encounter, procedure, service_request
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings import (
    InputError,
    group_visits,
    load_bytes,
    map_bundle,
    map_cds_request,
    map_document,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = [
    "status",
    "code",
    "subject",
    "encounter",
    "performedPeriod",
    "occurrencePeriod",
    "performedDateTime",
    "basedOn",
    "performer",
    "bodySite",
    "extension",
    "reasonCode",
    "contained",
    "id",
    "quantityQuantity",
    "orderDetail",
    "category",
    "item",
    "procedure",
    "patient",
    "period",
    "actualPeriod",
    "class",
    "resourceType",
]
BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "Procedure": procedure,
    "ServiceRequest": service_request,
    "Claim": claim,
    "CarePlan": care_plan,
    "Encounter": encounter,
}
datetimes = st.sampled_from(
    [
        "2025-03-04T09:00:00-05:00",
        "2025-03-04T09:00:00",
        "2025-03-04",
        "2025-03",
        "2025",
        "2025-02-30",
        "garbage",
        "",
        "2025-03-04T24:00:00Z",
    ]
)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=json_values, kind=st.sampled_from(sorted(BUILDERS)))
def test_any_value_in_any_field_is_survivable(field: str, value: Any, kind: str) -> None:
    res = BUILDERS[kind]()
    res[field] = value
    record = map_bundle(bundle(res, procedure(id="other")))
    group_visits(record)


@settings(max_examples=200, deadline=None)
@given(start=datetimes, end=datetimes)
def test_any_period_is_survivable(start: str, end: str) -> None:
    record = map_bundle(bundle(procedure(start=start, end=end)))
    group_visits(record)
    for service in record.services:
        if service.start is not None:
            assert service.start.utcoffset() is not None


@settings(max_examples=200, deadline=None)
@given(context=json_values, prefetch=json_values)
def test_any_cds_request_body_is_survivable(context: Any, prefetch: Any) -> None:
    group_visits(map_cds_request({"hook": "order-sign", "context": context, "prefetch": prefetch}))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_load_or_raise_input_error(raw: bytes) -> None:
    message = None
    try:
        document = load_bytes(raw, "input.json")
    except InputError as error:
        message = str(error)
    if message is not None:
        assert "\n" not in message
        assert message.startswith("input.json: ")
        return
    group_visits(map_document(document))


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_any_value_in_nested_codings_and_bundle_fields_is_survivable(value: Any) -> None:
    """Unhashable values (objects, lists) where a string is expected must not raise."""
    res = procedure()
    res["code"]["coding"][0]["system"] = value
    res["extension"] = [{"url": value, "valueCoding": {"system": value, "code": "GP"}}]
    charge = service_request()
    charge["orderDetail"] = [{"coding": [{"system": value, "code": value}]}]
    page = bundle(res, charge)
    page["type"] = value
    page["link"] = [{"relation": value, "url": value}]
    group_visits(map_bundle(page))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            out += _paths(child, (*prefix, index))
    return out


def _visit() -> dict[str, Any]:
    return bundle(
        encounter(),
        care_plan(),
        procedure(modifiers=("GP", "59"), billed_units=1, delivery="individual", body_site="1"),
        service_request(occurrence="2025-03-04"),
        claim(),
    )


VISIT_PATHS = _paths(_visit())


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(VISIT_PATHS), value=json_values)
def test_any_value_anywhere_in_a_visit_is_survivable(path: tuple[Any, ...], value: Any) -> None:
    page = _visit()
    node: Any = page
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    group_visits(map_bundle(page))


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(VISIT_PATHS), value=json_values)
def test_strict_mode_survives_any_value_anywhere(path: tuple[Any, ...], value: Any) -> None:
    page = _visit()
    node: Any = page
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    group_visits(map_bundle(page, strict=True))
