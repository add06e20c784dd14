"""``therapy-cds audit``: exit codes, the one-line errors, --jobs 1 vs 2, pseudonyms, the report's
timelines (the sandbox page's picture)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from audit_support import (
    SAMPLES,
    audit,
    comparable_report,
    generate,
    read_csv,
    run_cli,
    summary,
)

import plugin.audit.runner as runner
from plugin.audit import OUTPUT_FILES
from plugin.web.visits import analyse_bundle


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(300, tmp_path_factory.mktemp("gen"), seed=5)[0]


def test_no_inputs_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("audit", str(empty), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("therapy-cds audit: no input files found")
    assert "Traceback" not in result.output


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("audit", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == f"therapy-cds audit: {tmp_path / 'nope'}: no such file or folder"
    )


@pytest.mark.parametrize("kind", ["file", "below-a-file"])
def test_an_output_folder_that_cannot_be_written_is_a_usage_error(
    tmp_path: Path, kind: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if kind == "file" else blocker / "out"
    result = run_cli("audit", str(SAMPLES / "pair-no-modifier.json"), "--out", str(out))
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"therapy-cds audit: {out}")
    assert "\n" not in line


def test_no_arguments_is_a_usage_error() -> None:
    assert run_cli("audit").exit_code == 2


def test_a_completed_audit_writes_every_output_and_says_where(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("audit", str(SAMPLES), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)  # no work files left
    assert "visits audited" in result.stdout
    assert str(out / "report.html") in result.stdout


def test_jobs_1_and_2_give_identical_outputs(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small shards and chunks: several of each, so the processes really share the work
    monkeypatch.setattr(runner, "SHARD_BYTES", 64 * 1024)
    monkeypatch.setattr(runner, "CHUNK_BYTES", 48 * 1024)
    outs = {}
    for jobs in ("1", "2"):
        out = outs[jobs] = tmp_path / f"out-{jobs}"
        result = audit(str(export), str(SAMPLES), "--out", str(out), "--jobs", jobs, "-q")
        assert result.exit_code == 0, result.output
    first, second = summary(outs["1"]), summary(outs["2"])
    assert first["run"]["shards"] > 4
    assert first.pop("run")["jobs"] == 1
    assert second.pop("run")["jobs"] == 2
    assert first == second
    for name in ("visits.csv", "findings.csv", "rejected.csv"):
        assert (outs["1"] / name).read_bytes() == (outs["2"] / name).read_bytes(), name
    html = [comparable_report((o / "report.html").read_text()) for o in outs.values()]
    assert html[0] == html[1]


def test_pseudonyms_replace_patient_references_everywhere(export: Path, tmp_path: Path) -> None:
    plain, hidden = tmp_path / "plain", tmp_path / "hidden"
    assert audit(str(export), "--out", str(plain), "-q").exit_code == 0
    args = ("--pseudonymize", "--pseudonym-key", "k1")
    assert audit(str(export), "--out", str(hidden), "-q", *args).exit_code == 0
    patients = {r["patient"] for r in read_csv(plain / "visits.csv")}
    assert patients
    assert all(p.startswith("Patient/pt-") for p in patients)
    for name in OUTPUT_FILES:
        text = (hidden / name).read_text()
        assert "Patient/pt-" not in text, name
    pseudonyms = {r["patient"] for r in read_csv(hidden / "visits.csv")}
    assert len(pseudonyms) == len(patients)
    assert all(re.fullmatch(r"Patient/~[0-9a-f]{16}", p) for p in pseudonyms)
    assert summary(hidden)["patients_pseudonymized"] is True
    again = tmp_path / "again"
    assert audit(str(export), "--out", str(again), "-q", *args).exit_code == 0
    assert (again / "visits.csv").read_bytes() == (hidden / "visits.csv").read_bytes()


def test_the_report_timeline_is_the_sandbox_picture(tmp_path: Path) -> None:
    """The same picture, clock times in the same zone, as the sandbox shows the bundle."""
    bundle = SAMPLES / "overlapping-time-blocks.json"
    out = tmp_path / "out"
    assert audit(str(bundle), "--out", str(out), "-q").exit_code == 0
    shown = analyse_bundle(json.loads(bundle.read_text()), payer_rule="cms", pair_rule="cms")
    (visit,) = shown.visits
    assert shown.time_zone != "UTC"  # the sample is recorded with an offset
    html = (out / "report.html").read_text()
    assert visit.svg in html
    assert f"Clock times in {shown.time_zone}" in html


def test_report_escapes_what_comes_from_the_input(tmp_path: Path) -> None:
    source = (SAMPLES / "pair-no-modifier.json").read_text()
    hostile = source.replace("pat-bram-nomod", "<script>alert(1)</script>")
    path = tmp_path / "hostile.json"
    path.write_text(hostile)
    out = tmp_path / "out"
    assert audit(str(path), "--out", str(out), "-q").exit_code == 0
    html = (out / "report.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_an_audit_written_beside_its_input_does_not_read_itself(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    folder.mkdir()
    for name in ("pair-no-modifier.json", "overlapping-time-blocks.json"):
        (folder / name).write_text((SAMPLES / name).read_text())
    for _ in range(2):  # the second run finds the first one's summary.json beside the bundles
        result = audit(str(folder), "--out", str(folder), "-q")
        assert result.exit_code == 0, result.output
        body = summary(folder)
        assert body["totals"]["visits"] == 2
        assert body["reconciliation"]["files_rejected"] == 0


@pytest.mark.parametrize("limit", ["0", "1"])
def test_report_visits_limits_the_report_not_the_csv(tmp_path: Path, limit: str) -> None:
    out = tmp_path / "out"
    result = audit(str(SAMPLES), "--out", str(out), "-q", "-j", "2", "--report-visits", limit)
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert html.count('<details class="visit"') == int(limit)
    body = summary(out)
    assert body["report"]["visits_shown"] == int(limit)
    assert len(read_csv(out / "visits.csv")) == body["totals"]["visits"] > 1
