"""``therapy-cds audit`` with fsspec URLs: ``file://`` in place, ``memory://`` staged and
uploaded (the same code path as ``s3://`` and ``gs://``), gzip NDJSON on remote storage."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from audit_support import generate, run_cli

from plugin.audit import OUTPUT_FILES


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(120, tmp_path_factory.mktemp("gen"), seed=3)[0]


@pytest.fixture
def memory() -> Iterator[Any]:
    fs = fsspec.filesystem("memory")
    yield fs
    for top in ("/exports", "/reports"):
        if fs.exists(top):
            fs.rm(top, recursive=True)


def _totals(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in ("run", "inputs")}


def test_file_urls_are_the_local_audit(export: Path, tmp_path: Path) -> None:
    local = run_cli("audit", str(export), "--out", str(tmp_path / "a"), "-j", "1", "-q")
    assert local.exit_code == 0, local.output
    by_url = run_cli("audit", export.as_uri(), "--out", (tmp_path / "b").as_uri(), "-j", "1", "-q")
    assert by_url.exit_code == 0, by_url.output
    for name in ("visits.csv", "findings.csv", "rejected.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert f"Report: {tmp_path / 'b' / 'report.html'}" in by_url.stdout


def test_memory_inputs_and_outputs_with_gzip(export: Path, tmp_path: Path, memory: Any) -> None:
    for path in export.iterdir():
        data = path.read_bytes()
        if path.stem == "Procedure":  # stored compressed, as exports often are
            memory.pipe(f"/exports/clinic/{path.name}.gz", gzip.compress(data))
        else:
            memory.pipe(f"/exports/clinic/{path.name}", data)
    result = run_cli(
        "audit", "memory://exports/clinic", "--out", "memory://reports/q1", "-j", "1", "-q"
    )
    assert result.exit_code == 0, result.output
    assert "Report: memory://reports/q1/report.html" in result.stdout
    assert sorted(memory.ls("/reports/q1", detail=False)) == sorted(
        f"/reports/q1/{name}" for name in OUTPUT_FILES
    )
    remote = json.loads(memory.cat("/reports/q1/summary.json"))

    local = run_cli("audit", str(export), "--out", str(tmp_path / "local"), "-j", "1", "-q")
    assert local.exit_code == 0
    mine = json.loads((tmp_path / "local" / "summary.json").read_text())
    mine["inputs"].pop("paths")
    assert remote["inputs"].pop("paths")[0].endswith("memory/exports/clinic")
    assert remote["inputs"] == mine["inputs"]
    assert _totals(remote) == _totals(mine)
    local_findings = (tmp_path / "local" / "findings.csv").read_bytes()
    assert memory.cat("/reports/q1/findings.csv").count(b"\n") == local_findings.count(b"\n")


def test_a_missing_remote_input_is_a_usage_error(tmp_path: Path, memory: Any) -> None:
    result = run_cli("audit", "memory://exports/none", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "therapy-cds audit: memory://exports/none: no such file or folder"
    )


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_a_storage_without_its_extra_says_which_to_install(tmp_path: Path) -> None:
    result = run_cli("audit", "s3://bucket/export", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith("therapy-cds audit: s3://bucket/export: s3:// is not available here")
    assert "pip install 'therapy-cds[s3]'" in line


def test_a_remote_out_needs_a_local_export_dir(tmp_path: Path, memory: Any) -> None:
    result = run_cli(
        "audit", "--fhir-export", "https://ehr.example/fhir", "--out", "memory://reports/x"
    )
    assert result.exit_code == 2
    assert "give --export-dir" in result.stderr
