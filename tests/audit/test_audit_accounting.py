"""The reconciliation sorts input problems by their IssueCode, never by the message's wording."""

from __future__ import annotations

from fhir_mappings.model import IssueCode, MappingIssue, TherapyRecord
from fhir_mappings.sources import SourcedResource
from plugin.audit.accounting import account_record

PROCEDURE = {"resourceType": "Procedure", "id": "p1", "status": "completed"}


def account(collector: list[MappingIssue], mapper: list[MappingIssue]) -> list[tuple[str, str]]:
    record = TherapyRecord(fhir_version=None, issues=(*collector, *mapper), resources_read=1)
    resources = [SourcedResource("line 3", PROCEDURE)]
    found = account_record(record, resources, collector, source="export.ndjson")
    # plain strings: the reports are written with orjson, which takes no enum dict keys
    assert all(type(r.code) is str for r in found.rejections)
    return [(r.kind, r.code) for r in found.rejections]


def test_collector_problems_follow_their_code() -> None:
    # messages chosen to mislead any classification by wording
    issues = [
        MappingIssue("line 1", "kept (nothing skipped)", code=IssueCode.INVALID_JSON),
        MappingIssue("entry[2]", "all fine", code=IssueCode.NOT_A_RESOURCE),
        MappingIssue("entry[4]", "skipped; not read; ignored", code=IssueCode.CONTAINER_NOTE),
        MappingIssue("line 5", "data", code=IssueCode.EXPORT_ERROR),
    ]
    assert account(issues, []) == [
        ("line", "invalid-json"),
        ("entry", "not-a-resource"),
        ("value", "container-note"),
        ("export-error", "export-error"),
    ]


def test_mapper_problems_follow_their_code() -> None:
    issues = [
        MappingIssue("line 3", "skipped", "Procedure/p1", "status", IssueCode.VALUE_NOT_USED),
        MappingIssue("line 3", "a note", "Procedure/p1", "code", IssueCode.UNUSABLE_RESOURCE),
        MappingIssue("line 3", "the same again", "Procedure/p1", None, IssueCode.DIFFERENT_COPY),
    ]
    assert account([], issues) == [
        ("value", "value-not-used"),
        ("resource", "unusable-resource"),
        ("resource", "different-copy"),
    ]


def test_an_unusable_resource_is_rejected_once_and_not_out_of_scope() -> None:
    issues = [
        MappingIssue("line 3", "one", "Procedure/p1", "code", IssueCode.UNUSABLE_RESOURCE),
        MappingIssue("line 3", "two", "Procedure/p1", "status", IssueCode.UNUSABLE_RESOURCE),
    ]
    record = TherapyRecord(fhir_version=None, issues=tuple(issues), resources_read=1)
    found = account_record(
        record, [SourcedResource("line 3", PROCEDURE)], [], source="export.ndjson"
    )
    assert [(r.kind, r.code, r.reason) for r in found.rejections] == [
        ("resource", "unusable-resource", "one")
    ]
    assert (found.read, found.used, found.out_of_scope) == (1, 0, 0)
