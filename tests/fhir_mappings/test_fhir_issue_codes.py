"""Every input problem carries an IssueCode that says what it did to the input.

Programs (the bulk audit's reconciliation) read the code, never the message, so each problem
the collectors, the NDJSON loader and the mapper can report is pinned here to its code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhir_builders import bundle, procedure

from fhir_mappings import IssueCode, load_path, map_bundle, map_cds_request, map_document

NESTED_TOO_DEEP: dict[str, Any] = {"resourceType": "Bundle", "entry": []}
for _ in range(6):
    NESTED_TOO_DEEP = {"resourceType": "Bundle", "entry": [{"resource": NESTED_TOO_DEEP}]}


def codes_of_bundle(entries: list[Any], **extra: Any) -> list[tuple[str, IssueCode]]:
    record = map_bundle({"resourceType": "Bundle", "type": "collection", "entry": entries, **extra})
    return [(i.location, i.code) for i in record.issues]


@pytest.mark.parametrize(
    ("entries", "extra", "expected"),
    [
        ([5], {}, [("entry[0]", IssueCode.MALFORMED_ENTRY)]),
        ([{"resource": 7}], {}, [("entry[0]", IssueCode.MALFORMED_ENTRY)]),
        ([{"resource": {"id": "x"}}], {}, [("entry[0]", IssueCode.NOT_A_RESOURCE)]),
        ([{"resource": NESTED_TOO_DEEP}], {}, [IssueCode.NESTED_BUNDLE]),
        (
            [{"resource": {"resourceType": "OperationOutcome", "issue": []}}],
            {},
            [("entry[0]", IssueCode.EXPORT_ERROR)],
        ),
        ([], {"type": "not-a-type"}, [("Bundle", IssueCode.CONTAINER_NOTE)]),
    ],
    ids=[
        "entry-not-object",
        "resource-not-object",
        "no-resource-type",
        "nested",
        "outcome",
        "type",
    ],
)
def test_bundle_container_problems(
    entries: list[Any], extra: dict[str, Any], expected: list[Any]
) -> None:
    found = codes_of_bundle(entries, **extra)
    if expected and isinstance(expected[0], IssueCode):
        assert [code for _, code in found] == expected
    else:
        assert found == expected


def test_entry_member_not_a_list_is_a_container_note() -> None:
    record = map_bundle({"resourceType": "Bundle", "entry": {"resource": procedure()}})
    assert [(i.field, i.code) for i in record.issues] == [("entry", IssueCode.CONTAINER_NOTE)]
    assert not record.issues[0].code.drops_entry


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"context": "nope"}, [("context", IssueCode.MALFORMED_ENTRY)]),
        ({"context": {}, "prefetch": [1]}, [("prefetch", IssueCode.MALFORMED_ENTRY)]),
        ({"context": {}, "prefetch": {"p": 5}}, [("prefetch.p", IssueCode.NOT_A_RESOURCE)]),
    ],
)
def test_cds_request_problems(body: dict[str, Any], expected: list[Any]) -> None:
    record = map_cds_request({"hook": "order-sign", "hookInstance": "h", **body})
    assert [(i.location, i.code) for i in record.issues] == expected


def test_ndjson_line_problems(tmp_path: Path) -> None:
    path = tmp_path / "Procedure.ndjson"
    lines = ["{not json", json.dumps({"id": "x"}), json.dumps(procedure(id="ok"))]
    path.write_text("\n".join(lines) + "\n")
    record = map_document(load_path(path))
    assert [(i.location, i.code) for i in record.issues] == [
        ("line 1", IssueCode.INVALID_JSON),
        ("line 2", IssueCode.NOT_A_RESOURCE),
    ]
    assert all(i.code.drops_entry for i in record.issues)


def test_mapper_problems() -> None:
    no_status = procedure(id="no-status")
    del no_status["status"]
    bad_code = procedure(id="bad-code")
    bad_code["code"] = "97530"
    first = procedure(id="twice")
    second = procedure(id="twice", end="2025-03-04T09:30:00-05:00")
    unreadable_time = procedure(id="time", start="yesterday")
    record = map_bundle(bundle(no_status, bad_code, first, second, unreadable_time))
    by_resource = {(i.resource, i.code) for i in record.issues}
    assert ("Procedure/no-status", IssueCode.UNUSABLE_RESOURCE) in by_resource
    assert ("Procedure/bad-code", IssueCode.UNUSABLE_RESOURCE) in by_resource
    assert ("Procedure/twice", IssueCode.DIFFERENT_COPY) in by_resource
    assert ("Procedure/time", IssueCode.VALUE_NOT_USED) in by_resource
    assert not any(i.code.drops_entry for i in record.issues)


def test_strict_validation_failure_marks_the_resource_unusable() -> None:
    broken = procedure(id="broken")
    broken["performedWhen"] = "2025-03-04"  # no such element
    record = map_bundle(bundle(broken), strict=True)
    assert record.issues
    assert {(i.resource, i.code) for i in record.issues} == {
        ("Procedure/broken", IssueCode.UNUSABLE_RESOURCE)
    }


def test_codes_are_stable_strings() -> None:
    # rejected.csv and summary.json carry these values: renaming one is a breaking change
    assert {c.value for c in IssueCode} == {
        "value-not-used",
        "container-note",
        "invalid-json",
        "not-a-resource",
        "malformed-entry",
        "nested-bundle",
        "export-error",
        "unusable-resource",
        "different-copy",
    }
