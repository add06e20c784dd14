"""The audit on the issue 17 reproductions: a file with a Procedure ending
``9999-12-31T23:59:59+00:00`` was still running after 25 s at 1.4 GB (its timeline drew one tick per
120 minutes); one starting ``0001-01-01T00:00:00+05:00`` lost the whole file ("analysis-failed",
an OverflowError). Now both visits are audited, the date is a value not used, and the report's
timeline is drawn at once."""

from __future__ import annotations

import json
import time
from pathlib import Path

from audit_support import SAMPLES, audit, read_csv, summary

from plugin.web.timeline import MAX_SVG_CHARS

PROCEDURE = "proc-bram-nomod-1"


def _write(folder: Path, name: str, member: str, value: str) -> None:
    bundle = json.loads((SAMPLES / "pair-no-modifier.json").read_text(encoding="utf-8"))
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource.get("id") == PROCEDURE:
            resource["performedPeriod"][member] = value
        # one patient per file, so the two files are two visits
        text = json.dumps(resource).replace("pat-bram-nomod", f"pat-{name}")
        entry["resource"] = json.loads(text)
    (folder / f"{name}.json").write_text(json.dumps(bundle), encoding="utf-8")


def test_the_audit_finishes_at_once_with_the_dates_as_values_not_used(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs, "end-9999", "end", "9999-12-31T23:59:59+00:00")
    _write(inputs, "start-0001", "start", "0001-01-01T00:00:00+05:00")
    out = tmp_path / "out"
    started = time.perf_counter()
    result = audit(str(inputs), "--out", str(out), "-q", "-j", "1")
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert elapsed < 20  # before: still running after 25 s (the 9999 end)
    body = summary(out)
    assert body["totals"]["visits"] == 2
    recon = body["reconciliation"]
    assert recon["rejected"] == 0  # before: the year-1 file was lost whole (analysis-failed)
    assert recon["values_not_used"] == 2
    assert body["findings_by_rule"]["W-NO-DURATION"] == 2
    report = (out / "report.html").read_text(encoding="utf-8")
    assert len(report) < 4 * MAX_SVG_CHARS
    assert f'data-ref="Procedure/{PROCEDURE}"' not in report  # the refused service is not drawn
    visits = read_csv(out / "visits.csv")
    assert len(visits) == 2
