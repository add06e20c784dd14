"""Input loading: files, NDJSON, CDS Hooks requests, Bundle types; one InputError per bad file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from fhir_builders import bundle, encounter, procedure, service_request

from fhir_mappings import (
    InputError,
    InputKind,
    group_visits,
    load_path,
    map_bundle,
    map_cds_hooks,
    map_cds_request,
    map_document,
    map_resources,
)


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    ("shape", "name", "content", "expected"),
    [
        ("empty file", "empty.json", "", "file is empty"),
        ("whitespace only", "blank.json", "  \n\t ", "file is empty"),
        ("not JSON", "notes.json", "Patient was seen today", "is not valid JSON (line 1"),
        (
            "truncated JSON",
            "cut.json",
            '{"resourceType": "Bundle", "entry": [',
            "is not valid JSON",
        ),
        ("FHIR XML", "bundle.xml", '<Bundle xmlns="http://hl7.org/fhir"/>', "looks like XML"),
        ("not UTF-8", "latin1.json", b'{"resourceType": "Patient", "name": "\xe9"}', "not UTF-8"),
        ("JSON array", "array.json", '[{"resourceType": "Patient"}]', "is a JSON array"),
        ("JSON scalar", "scalar.json", "42", "is not a JSON object"),
        ("JSON without resourceType", "other.json", '{"name": "x"}', "not FHIR (no resourceType)"),
        ("CDS Hooks response", "cards.json", '{"cards": []}', "CDS Hooks response"),
        ("NDJSON with no resource", "bad.ndjson", '{"a": 1}\n{"b": 2}\n', "no line is a FHIR"),
    ],
)
def test_unusable_input_is_one_clear_line(
    tmp_path: Path, shape: str, name: str, content: bytes | str, expected: str
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as info:
        load_path(path)
    message = str(info.value)
    assert "\n" not in message, shape
    assert message.startswith(str(path)), shape
    assert expected in message, shape
    assert "Patient was seen" not in message  # never echo contents


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        load_path(tmp_path / "nope.json")
    with pytest.raises(InputError, match="is a directory"):
        load_path(tmp_path)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.json", b"\xef\xbb\xbf" + json.dumps(procedure()).encode())
    document = load_path(path)
    assert document.kind is InputKind.RESOURCE
    assert len(map_document(document).services) == 1


def test_ndjson_bad_line_is_an_issue_naming_the_line(tmp_path: Path) -> None:
    lines = [
        json.dumps(procedure(id="p1")),
        "{not json",
        "",
        json.dumps({"no": "resourceType"}),
        json.dumps(procedure(id="p2", start="2025-03-04T10:00:00-05:00", end=None)),
    ]
    document = load_path(write(tmp_path, "export.ndjson", "\n".join(lines) + "\n"))
    assert document.kind is InputKind.NDJSON
    record = map_document(document)
    assert [s.ref for s in record.services] == ["Procedure/p1", "Procedure/p2"]
    assert [i.location for i in record.issues] == ["line 2", "line 4"]


def test_gzipped_ndjson(tmp_path: Path) -> None:
    text = json.dumps(procedure(id="a")) + "\n" + json.dumps(procedure(id="b")) + "\n"
    document = load_path(write(tmp_path, "Procedure.ndjson.gz", gzip.compress(text.encode())))
    assert document.kind is InputKind.NDJSON
    assert len(document.resources) == 2
    with pytest.raises(InputError, match="damaged gzip"):
        load_path(write(tmp_path, "broken.ndjson.gz", gzip.compress(text.encode())[:20]))


def test_ndjson_detected_without_extension(tmp_path: Path) -> None:
    text = json.dumps(procedure(id="a")) + "\n" + json.dumps(procedure(id="b")) + "\n"
    document = load_path(write(tmp_path, "export.txt", text))
    assert document.kind is InputKind.NDJSON
    assert len(document.resources) == 2


@pytest.mark.parametrize(
    "bundle_type",
    ["collection", "searchset", "transaction", "batch", "document", "history", None],
)
def test_every_bundle_type_is_read(bundle_type: str | None) -> None:
    record = map_bundle(bundle(procedure(), encounter(), type=bundle_type))
    assert len(record.services) == 1
    assert len(record.encounters) == 1
    assert record.issues == ()


def test_unknown_bundle_type_is_an_issue_not_fatal() -> None:
    record = map_bundle(bundle(procedure(), type="weird"))
    assert len(record.services) == 1
    assert record.issues[0].field == "type"


def test_searchset_next_link_is_kept() -> None:
    page = bundle(procedure(), type="searchset")
    page["link"] = [
        {"relation": "self", "url": "https://ehr.example/fhir/Procedure?patient=P1"},
        {"relation": "next", "url": "https://ehr.example/fhir/Procedure?patient=P1&page=2"},
    ]
    record = map_bundle(page)
    assert record.next_links == ("https://ehr.example/fhir/Procedure?patient=P1&page=2",)


def test_transaction_delete_entries_are_skipped_silently() -> None:
    page = bundle(procedure(), type="transaction")
    page["entry"].append({"request": {"method": "DELETE", "url": "Procedure/old"}})
    record = map_bundle(page)
    assert len(record.services) == 1
    assert record.issues == ()


@pytest.mark.parametrize(
    ("shape", "entry", "message"),
    [
        ("entry not an object", "junk", "entry is not a JSON object"),
        ("resource not an object", {"resource": ["x"]}, "resource is not a JSON object"),
        ("no resourceType", {"resource": {"id": "x"}}, "no resourceType"),
    ],
)
def test_one_bad_entry_never_sinks_the_bundle(shape: str, entry: Any, message: str) -> None:
    page = bundle(procedure(id="p1"), procedure(id="p2"))
    page["entry"].insert(1, entry)
    record = map_bundle(page)
    assert [s.ref for s in record.services] == ["Procedure/p1", "Procedure/p2"], shape
    assert len(record.issues) == 1
    assert record.issues[0].location == "entry[1]"
    assert message in record.issues[0].message


def cds_request(prefetch: dict[str, Any]) -> dict[str, Any]:
    return {
        "hook": "order-sign",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/T1",
            "patientId": "P1",
            "encounterId": "E1",
            "draftOrders": bundle(service_request(), type=None),
        },
        "prefetch": prefetch,
    }


def test_cds_request_draft_orders_and_prefetch_shapes() -> None:
    body = cds_request(
        {
            "patient": {"resourceType": "Patient", "id": "P1"},
            "encounter": encounter(),
            "procedures": bundle(procedure(), type="searchset"),
            "carePlans": None,
            "legacy": {"response": {"status": "200 OK"}, "resource": encounter(id="E2")},
            "legacyEmpty": {"response": {"status": "404"}, "resource": None},
            "failed": {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "not-found", "diagnostics": "secret"}],
            },
            "user": "Practitioner/T1",
        }
    )
    record = map_cds_request(body)
    assert record.context_patient == "Patient/P1"
    assert [c.ref for c in record.charges] == ["ServiceRequest/sr1"]
    assert [s.ref for s in record.services] == ["Procedure/p1"]
    assert sorted(record.encounters) == ["Encounter/E1", "Encounter/E2"]
    assert record.patients == ("Patient/P1",)
    locations = {i.location: i.message for i in record.issues}
    assert set(locations) == {"prefetch.failed", "prefetch.user"}
    assert "OperationOutcome (error/not-found)" in locations["prefetch.failed"]
    assert "secret" not in locations["prefetch.failed"]


def test_map_cds_hooks_is_what_the_service_calls() -> None:
    draft = bundle(service_request(), type=None)
    prefetch: dict[str, object] = {"procedures": bundle(procedure(), type="searchset")}
    record = map_cds_hooks(draft, prefetch, patient_id="Patient/P1")
    assert record == map_cds_request(cds_request(prefetch))


def test_cds_request_file(tmp_path: Path) -> None:
    body = cds_request({"procedures": bundle(procedure(), type="searchset")})
    document = load_path(write(tmp_path, "request.json", json.dumps(body)))
    assert document.kind is InputKind.CDS_HOOKS_REQUEST
    grouping = group_visits(map_document(document))
    assert len(grouping.visits) == 1
    assert grouping.visits[0].charges[0].ref == "ServiceRequest/sr1"


def test_map_resources_names_locations() -> None:
    record = map_resources(
        [("line 1", procedure(id="a")), ("line 2", {"resourceType": "Procedure", "id": "b"})]
    )
    assert [s.ref for s in record.services] == ["Procedure/a"]
    assert record.resources_out_of_scope == 1
