"""The audit's numbers are ``check``'s numbers, and every resource read is accounted for.

Two inputs: the sample bundles (a folder of documents, read file by file as ``check`` reads
them) and a generated Bulk Data export (NDJSON per type, grouped by patient on disk by the
audit) compared with ``check`` over the same data written as one Bundle per patient.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from audit_support import (
    SAMPLES,
    audit,
    audit_counts,
    check_counts,
    check_json,
    generate,
    read_csv,
    summary,
)

from fhir_mappings.mapper import MAPPED_TYPES, PATIENT_FIELDS
from plugin.audit.tasks import ChunkTask, shard_dir, split_chunk


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate(400, tmp_path_factory.mktemp("gen"), bundles=True)


@pytest.fixture(scope="module")
def export_audit(generated: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export-audit") / "out"
    result = audit(str(generated[0]), "--out", str(out), "--jobs", "2", "--quiet")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(("payer", "pair"), [("cms", "cms"), ("ama", "strict")])
def test_sample_bundles_counts_equal_check(tmp_path: Path, payer: str, pair: str) -> None:
    out = tmp_path / "out"
    rules = ("--payer-rule", payer, "--pair-rule", pair)
    result = audit(str(SAMPLES), "--out", str(out), "--jobs", "1", "--quiet", *rules)
    assert result.exit_code == 0, result.output
    body = summary(out)
    expected = check_counts(check_json(SAMPLES, extra=rules))
    assert audit_counts(body) == expected
    assert body["totals"]["visits"] == len(read_csv(out / "visits.csv"))
    assert body["totals"]["findings"] == len(read_csv(out / "findings.csv"))
    assert body["rules"] == {**body["rules"], "payer_rule": payer, "pair_rule": pair}


def test_sample_bundles_visits_csv_matches_check_visit_by_visit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert audit(str(SAMPLES), "--out", str(out), "-j", "1", "-q").exit_code == 0
    expected = sorted(
        (
            v["patient"],
            v["date"],
            v["discipline"],
            v["total_timed_minutes"],
            ";".join(f"{c}={n}" for c, n in sorted(v["units"].items())),
            v["pair"],
            ";".join(f["rule"] for f in v["findings"]),
        )
        for v in check_json(SAMPLES)["visits"]
    )
    rows = sorted(
        (
            r["patient"],
            r["date"],
            r["discipline"],
            int(r["total_timed_minutes"]),
            r["units"],
            r["pair"],
            r["finding_ids"],
        )
        for r in read_csv(out / "visits.csv")
    )
    assert rows == expected


def test_the_sample_manifest_is_rejected_as_a_file_and_counted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert audit(str(SAMPLES), "--out", str(out), "-j", "1", "-q").exit_code == 0
    rejected = read_csv(out / "rejected.csv")
    files = [r for r in rejected if r["kind"] == "file"]
    assert [Path(r["source"]).name for r in files] == ["scenarios.json"]
    assert "not FHIR" in files[0]["reason"]
    recon = summary(out)["reconciliation"]
    assert recon["files_rejected"] == 1
    assert recon["files_read"] == len(list(SAMPLES.glob("*.json"))) - 1
    assert recon["balanced"] is True


def test_export_counts_equal_check_on_the_same_data_as_bundles(
    generated: tuple[Path, Path], export_audit: Path
) -> None:
    _, bundles = generated
    assert audit_counts(summary(export_audit)) == check_counts(check_json(bundles))


def test_export_reconciles_every_line(generated: tuple[Path, Path], export_audit: Path) -> None:
    export, _ = generated
    lines = 0
    for path in export.glob("*.ndjson"):
        lines += sum(1 for line in path.read_bytes().splitlines() if line.strip())
    recon: dict[str, Any] = summary(export_audit)["reconciliation"]
    assert recon["resources_read"] == lines
    assert recon["balanced"] is True
    assert recon["unaccounted"] == 0
    assert (
        recon["used"] + recon["out_of_scope"] + recon["duplicates"] + recon["rejected"]
        == recon["resources_read"]
    )
    assert recon["rejected"] == sum(
        1 for r in read_csv(export_audit / "rejected.csv") if r["kind"] != "value"
    )
    # Practitioners are read for their names (the by-practitioner table): used
    assert set(recon["out_of_scope_by_type"]) == {"Condition", "Patient"}
    assert recon["bulk_manifests"] == 1
    assert recon["files_rejected"] == 0


def test_patients_and_visits_are_counted_once(
    generated: tuple[Path, Path], export_audit: Path
) -> None:
    body = summary(export_audit)
    visits = read_csv(export_audit / "visits.csv")
    assert body["totals"]["patients"] == len({v["patient"] for v in visits})
    keys = [(v["patient"], v["date"], v["discipline"]) for v in visits]
    assert len(keys) == len(set(keys)) == body["totals"]["visits"]


def test_pass_one_routes_every_type_the_mapper_reads(tmp_path: Path) -> None:
    # Pass 1 copies each resource the mapper reads to its patient's shard, found through the
    # mapper's own patient element of that type; other types are counted out of scope there.
    lines = [
        {"resourceType": rtype, "id": f"r{n}", PATIENT_FIELDS[rtype]: {"reference": "Patient/p1"}}
        for n, rtype in enumerate(sorted(MAPPED_TYPES))
    ]
    lines.append({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}})
    source = tmp_path / "mixed.ndjson"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    workdir = tmp_path / "work"
    shard_dir(str(workdir), 0).mkdir(parents=True)
    size = source.stat().st_size
    result = split_chunk(ChunkTask(1, 0, str(source), 0, size, 1, 1, str(workdir)))
    assert dict(result.tally.out_of_scope_by_type) == {"Condition": 1}
    routed = (shard_dir(str(workdir), 0) / "000000.ndj").read_text().splitlines()
    assert [json.loads(row.split("\t")[2]) for row in routed] == ["Patient/p1"] * len(MAPPED_TYPES)


def test_bundle_lines_in_ndjson_are_audited_as_their_own_records(tmp_path: Path) -> None:
    names = ["pair-no-modifier.json", "overlapping-time-blocks.json"]
    export = tmp_path / "export"
    export.mkdir()
    lines = [json.dumps(json.loads((SAMPLES / n).read_text())) for n in names]
    (export / "Bundle.ndjson").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert audit(str(export), "--out", str(out), "-q").exit_code == 0
    expected = check_counts(check_json(*(SAMPLES / n for n in names)))
    body = summary(out)
    assert audit_counts(body) == expected
    assert body["reconciliation"]["balanced"] is True
    assert {Path(r["source"]).name for r in read_csv(out / "visits.csv")} == {"Bundle.ndjson"}


def test_resources_that_name_no_patient_are_reported_not_dropped(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97110"}]},
        "performedPeriod": {"start": "2025-03-04T09:00:00Z", "end": "2025-03-04T09:20:00Z"},
    }
    lines = [json.dumps({**procedure, "id": f"np{i}"}) for i in range(1203)]
    (export / "Procedure.ndjson").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert audit(str(export), "--out", str(out), "-q", "-j", "2").exit_code == 0
    body = summary(out)
    assert body["totals"]["visits"] == 0
    assert body["findings_not_on_a_visit_by_rule"] == {"I-IGNORED-STATUS": 1203}
    assert body["reconciliation"]["used"] == 1203
    assert body["reconciliation"]["balanced"] is True
