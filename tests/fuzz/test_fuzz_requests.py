"""Hypothesis fuzzing of the CDS Hooks endpoints with FHIR-shaped and malformed requests.

Whatever arrives: never a 5xx, never a traceback in a body or a log line, and the request's
content (a planted marker) never comes back in an error response or reaches the logs.
Real requests built from the sample bundles are the seeds; the strategies delete members,
replace values anywhere in the tree with arbitrary JSON, swap types, generate FHIR-shaped
Procedures and ServiceRequests with odd times and codes, and send bytes that are not JSON.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import timedelta, timezone
from typing import Any

import pytest
from fuzz_support import DISCHARGE, EXAMPLES, MARKER, ORDER_SIGN, Caller, caller, sample_requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SEEDS = sample_requests()


def _dumps(value: Any) -> bytes:
    # The standard library, not orjson: integers beyond 64 bits must reach the service too.
    return json.dumps(value).encode()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),  # a loaded CI machine is slow, not wrong
    derandomize=False,
)
#: Members whose values a service legitimately logs or returns as ids (never patient content).
ID_MEMBERS = frozenset({"id", "reference", "fullUrl", "hookInstance", "card"})


@pytest.fixture(scope="module")
def client() -> Iterator[Caller]:
    yield from caller()


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.just(MARKER),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _set(tree: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    if not path:
        return value
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return tree


def _plant(node: Any, key: str | None = None) -> Any:
    """Every string value (outside id-like members) gets the marker appended."""
    if isinstance(node, dict):
        return {k: _plant(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_plant(v, key) for v in node]
    if isinstance(node, str) and key not in ID_MEMBERS:
        return node + MARKER
    return node


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[str, Any]:
    service, seed = draw(st.sampled_from(SEEDS))
    tree: Any = _plant(copy.deepcopy(seed)) if draw(st.booleans()) else copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(tree))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "retype"]))
        if action == "delete" and path:
            tree = _set(tree, path, None, delete=True)
        elif action == "retype":
            tree = _set(tree, path, draw(st.sampled_from([None, [], {}, "", 0, MARKER, True])))
        else:
            tree = _set(tree, path, draw(json_value))
    return service, tree


def _check(client: Caller, response: Any) -> None:
    assert response.status_code < 500, response.text[:500]
    body = response.text
    assert "Traceback" not in body
    if response.status_code != 200:
        assert MARKER not in body, body[:500]
    for line in client.records:
        assert "Traceback" not in line
        assert MARKER not in line, line[:300]


@FUZZ
@given(mutated_requests())
def test_mutated_sample_requests_never_5xx_or_echo(client: Caller, case: tuple[str, Any]) -> None:
    service, tree = case
    response = client.post(f"/cds-services/{service}", _dumps(tree))
    _check(client, response)


# ------------------------------------------------------------------ FHIR-shaped resources

fhir_time = st.one_of(
    st.sampled_from(
        [
            "2025-03-04T09:00:00-05:00",
            "2025-03-04T09:00:00Z",
            "2025-03-04T23:55:00+14:00",
            "2025-03-04",
            "2025-03",
            "2025",
            "2025-02-30T09:00:00Z",
            "24:00",
            "",
            MARKER,
            # issue 17: extreme dates (no UTC instant, placeholders, far past and future)
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-01:00",
            "9999-12-31T23:59:59+00:00",
            "0001-01-01",
            "1899-12-31T23:59:59Z",
            "2201-01-01T00:00:00Z",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    st.builds(
        lambda moment, minutes: moment.replace(
            tzinfo=timezone(timedelta(minutes=minutes))
        ).isoformat(),
        st.datetimes(),
        st.integers(-14 * 60, 14 * 60),
    ),
    st.text(max_size=25),
    st.integers(),
    st.none(),
)
cpt = st.sampled_from(["97110", "97140", "97530", "97150", "97010", "G0283", "99999", MARKER, ""])
coding = st.fixed_dictionaries(
    {"system": st.sampled_from(["http://www.ama-assn.org/go/cpt", "urn:x", MARKER]), "code": cpt}
)
procedure = st.fixed_dictionaries(
    {
        "resourceType": st.just("Procedure"),
        "id": st.text(max_size=8),
        "status": st.sampled_from(["completed", "in-progress", "entered-in-error", MARKER]),
        "code": st.one_of(
            st.fixed_dictionaries({"coding": st.lists(coding, max_size=3)}), json_value
        ),
        "subject": st.just({"reference": "Patient/p1"}),
    },
    optional={
        "performedPeriod": st.fixed_dictionaries(
            {}, optional={"start": fhir_time, "end": fhir_time}
        ),
        "performedDateTime": fhir_time,
        "occurrencePeriod": st.fixed_dictionaries(
            {}, optional={"start": fhir_time, "end": fhir_time}
        ),
        "encounter": st.sampled_from([{"reference": "Encounter/e1"}, {}, MARKER]),
        "extension": json_value,
        "basedOn": st.lists(st.sampled_from([{"reference": "CarePlan/cp1"}, {}, {"x": MARKER}])),
    },
)
service_request = st.fixed_dictionaries(
    {
        "resourceType": st.just("ServiceRequest"),
        "id": st.text(min_size=1, max_size=8),
        "status": st.sampled_from(["draft", "active", MARKER]),
        "intent": st.sampled_from(["order", "plan", ""]),
        "code": st.fixed_dictionaries({"coding": st.lists(coding, max_size=2)}),
        "subject": st.just({"reference": "Patient/p1"}),
    },
    optional={
        "quantityQuantity": st.one_of(
            st.fixed_dictionaries(
                {"value": st.one_of(st.integers(-5, 50), st.floats(), json_leaf)}
            ),
            json_value,
        ),
        "orderDetail": json_value,
        "occurrenceDateTime": fhir_time,
        "encounter": st.just({"reference": "Encounter/e1"}),
    },
)


def _searchset(resources: list[Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


@FUZZ
@given(
    st.lists(procedure, max_size=8),
    st.lists(service_request, min_size=1, max_size=5),
    st.sampled_from([ORDER_SIGN, DISCHARGE]),
    st.sampled_from(["4.0.1", "5.0.0", None]),
)
def test_fhir_shaped_visits_never_5xx(
    client: Caller,
    procedures: list[Any],
    drafts: list[Any],
    service: str,
    version: str | None,
) -> None:
    hook = "order-sign" if service == ORDER_SIGN else "encounter-discharge"
    context: dict[str, Any] = {
        "userId": "Practitioner/t1",
        "patientId": "p1",
        "encounterId": "e1",
    }
    if hook == "order-sign":
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in drafts],
        }
    encounter: dict[str, Any] = {"resourceType": "Encounter", "id": "e1", "status": "finished"}
    if version is not None:
        encounter["meta"] = {"profile": [f"http://hl7.org/fhir/{version}/StructureDefinition/x"]}
    request = {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": context,
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1"},
            "encounter": encounter,
            "procedures": _searchset(procedures),
            "carePlans": None,
        },
    }
    response = client.post(f"/cds-services/{service}", _dumps(request))
    _check(client, response)


# ------------------------------------------------------------------ not even JSON


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: (t + MARKER).encode()),
        st.sampled_from(SEEDS).map(lambda s: _dumps(s[1])[: len(_dumps(s[1])) // 2]),
        json_value.map(lambda v: _dumps(v)),
    ),
    st.sampled_from(
        [
            f"/cds-services/{ORDER_SIGN}",
            f"/cds-services/{DISCHARGE}",
            f"/cds-services/{ORDER_SIGN}/feedback",
            f"/cds-services//{ORDER_SIGN}",
        ]
    ),
    st.sampled_from(["application/json", "text/plain", "application/fhir+json", ""]),
)
def test_arbitrary_bytes_never_5xx(
    client: Caller, body: bytes, path: str, content_type: str
) -> None:
    _check(client, client.post(path, body, content_type))


feedback_item = st.fixed_dictionaries(
    {
        "card": st.one_of(st.text(max_size=40), json_leaf),
        "outcome": st.sampled_from(["accepted", "overridden", "", MARKER]),
        "outcomeTimestamp": fhir_time,
    },
    optional={
        "acceptedSuggestions": st.lists(st.fixed_dictionaries({"id": st.text(max_size=10)})),
        "overrideReason": json_value,
    },
)


@FUZZ
@given(st.lists(st.one_of(feedback_item, json_value), max_size=4))
def test_feedback_fuzz_never_5xx(client: Caller, items: list[Any]) -> None:
    _check(
        client,
        client.post(f"/cds-services/{ORDER_SIGN}/feedback", _dumps({"feedback": items})),
    )
