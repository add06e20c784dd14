"""``bench/bench_bulk_audit.py`` still runs end to end (a few hundred visits from the loopback
Bulk Data server), so it does not rot between real runs. No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="samples /proc (Linux)")
def test_bench_bulk_audit_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench_audit
    import bench_bulk_audit

    monkeypatch.setattr(bench_audit, "OUT", tmp_path)  # the export is written here
    monkeypatch.setattr(bench_bulk_audit, "OUT", tmp_path)
    assert bench_bulk_audit.main(["--visits", "200", "--jobs", "1", "--gzip", "encoding"]) == 0
    first, summary_line = capsys.readouterr().out.strip().splitlines()[-2:]
    row = json.loads(first)
    assert row["visits"] > 0
    assert row["tokens"] == 1
    assert row["polls"] == 2
    assert row["peak_tree_rss_mb"] > 0
    assert "visits from the Bulk Data server" in summary_line
    assert (tmp_path / "bulk-audit-200-j1" / "fhir-export" / "Procedure.001.ndjson").exists()
