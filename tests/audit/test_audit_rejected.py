"""Bad input never stops an audit and is never silently dropped: every unreadable file, line or
resource is a row of rejected.csv with its place and reason, and the summary reconciles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from audit_support import SAMPLES, audit, read_csv, summary

CPT = "http://www.ama-assn.org/go/cpt"


def _procedure(pid: str, patient: str, start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": pid,
        "status": "completed",
        "code": {"coding": [{"system": CPT, "code": "97110"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "performedPeriod": {"start": start, "end": end},
        **extra,
    }


def _line(resource: object) -> bytes:
    return json.dumps(resource).encode()


@pytest.fixture
def broken_export(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    export.mkdir()
    good = _procedure("p1", "A", "2025-03-04T09:00:00-05:00", "2025-03-04T09:20:00-05:00")
    procedures = [
        _line(good),  # 1
        b'{"resourceType": "Procedure", "id": "p2", "status": ',  # 2 truncated
        b"",  # 3 blank: not a resource, not counted
        _line({"id": "x", "status": "completed"}),  # 4 no resourceType
        _line([1, 2, 3]),  # 5 not an object
        b'{"resourceType": "Procedure", "id": "\xff\xfe"}',  # 6 not UTF-8
        _line({**good, "status": None, "id": "p3"}),  # 7 no status: the mapper skips it
        _line(good),  # 8 identical copy: a duplicate, nothing lost
        _line({**good, "performedPeriod": {"start": "2025-03-04T09:00:00-05:00"}}),  # 9 differs
        _line(
            _procedure("p4", "B", "2025-03-05T10:00:00-05:00", "2025-03-05T10:30:00-05:00")
        ),  # 10
        b'{"resourceType":"Procedure","id":"p9","subject":{"reference":"Patient/A"},"status":',
    ]
    (export / "Procedure.ndjson").write_bytes(b"\n".join(procedures) + b"\n")
    (export / "Patient.ndjson").write_bytes(
        _line({"resourceType": "Patient", "id": "A"}) + b"\n" + b"<html>502</html>\n"
    )
    (export / "OperationOutcome.ndjson").write_bytes(
        _line(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "processing", "diagnostics": "Jane Doe"}],
            }
        )
        + b"\n"
    )
    (export / "notes.json").write_text("this is not json")
    (export / "manifest.json").write_text(
        json.dumps({"transactionTime": "2025-12-31T00:00:00Z", "output": [], "error": []})
    )
    return export


def test_every_bad_line_is_listed_with_its_place_and_reason(
    broken_export: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = audit(str(broken_export), "--out", str(out), "-j", "2", "-q")
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "rejected.csv")
    found = {(Path(r["source"]).name, r["location"], r["reason_code"]) for r in rows}
    assert ("Procedure.ndjson", "line 2", "invalid-json") in found
    assert ("Procedure.ndjson", "line 4", "not-a-resource") in found
    assert ("Procedure.ndjson", "line 5", "not-a-resource") in found
    assert ("Procedure.ndjson", "line 6", "not-utf8") in found
    assert ("Procedure.ndjson", "line 7", "unusable-resource") in found
    assert ("Procedure.ndjson", "line 9", "different-copy") in found
    assert ("Procedure.ndjson", "line 11", "invalid-json") in found
    assert ("Patient.ndjson", "line 2", "invalid-json") in found
    assert ("OperationOutcome.ndjson", "line 1", "export-error") in found
    assert ("notes.json", "", "unreadable-file") in found
    assert all(r["reason"] for r in rows)
    by_place = {(Path(r["source"]).name, r["location"]): r for r in rows}
    assert by_place[("Procedure.ndjson", "line 7")]["resource"] == "Procedure/p3"
    assert "status" in by_place[("Procedure.ndjson", "line 7")]["reason"]


def test_reasons_never_quote_the_input(broken_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert audit(str(broken_export), "--out", str(out), "-j", "1", "-q").exit_code == 0
    for name in ("rejected.csv", "report.html", "summary.json"):
        text = (out / name).read_text(encoding="utf-8")
        assert "Jane Doe" not in text  # OperationOutcome diagnostics
        assert "502" not in text.replace("2025", "")  # the proxy page's text


def test_the_summary_reconciles_bad_input(broken_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert audit(str(broken_export), "--out", str(out), "-j", "1", "-q").exit_code == 0
    body = summary(out)
    recon = body["reconciliation"]
    # 10 non-blank Procedure lines + 2 Patient lines + 1 OperationOutcome line
    assert recon["resources_read"] == 13
    assert recon["rejected"] == 9  # lines 2, 4, 5, 6, 7, 9, 11; Patient line 2; the outcome
    assert recon["duplicates"] == 1  # line 8
    assert recon["out_of_scope"] == 1  # the Patient
    assert recon["used"] == 2  # p1, p4
    assert recon["balanced"] is True
    assert recon["blank_lines"] == 1
    assert recon["files_rejected"] == 1
    assert recon["bulk_manifests"] == 1
    assert body["totals"]["visits"] == 2


def test_a_folder_of_only_bad_files_still_completes(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.json").write_text("{")
    (folder / "b.json").write_bytes(b"")
    (folder / "c.ndjson").write_text("nope\n")
    out = tmp_path / "out"
    result = audit(str(folder), "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "rejected.csv")
    assert {(Path(r["source"]).name, r["kind"]) for r in rows} == {
        ("a.json", "file"),
        ("b.json", "file"),
        ("c.ndjson", "line"),
    }
    body = summary(out)
    assert body["totals"]["visits"] == 0
    assert body["reconciliation"]["balanced"] is True
    assert "Visits with findings" in (out / "report.html").read_text()


def test_cds_hooks_request_files_are_audited_like_bundles(tmp_path: Path) -> None:
    from plugin.hook_request import build_hook_request  # the request an EHR would send

    bundle = json.loads((SAMPLES / "pair-no-modifier.json").read_text())
    folder = tmp_path / "requests"
    folder.mkdir()
    (folder / "request.json").write_text(json.dumps(build_hook_request(bundle)))
    out = tmp_path / "out"
    assert audit(str(folder), "--out", str(out), "-q").exit_code == 0
    body = summary(out)
    assert body["totals"]["visits"] == 1
    assert body["findings_by_rule"].get("E-PAIR-NO-MODIFIER") == 1


def test_crlf_line_ends_and_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    first = _procedure("p1", "A", "2025-03-04T09:00:00-05:00", "2025-03-04T09:20:00-05:00")
    second = _procedure("p2", "A", "2025-03-05T09:00:00-05:00", "2025-03-05T09:30:00-05:00")
    (export / "Procedure.ndjson").write_bytes(
        b"\xef\xbb\xbf" + _line(first) + b"\r\n" + _line(second) + b"\r\n"
    )
    out = tmp_path / "out"
    assert audit(str(export), "--out", str(out), "-q").exit_code == 0
    body = summary(out)
    assert body["totals"]["visits"] == 2
    assert body["reconciliation"]["rejected"] == 0
