"""``therapy-cds check`` on the issue 17 reproductions: a Procedure starting
``0001-01-01T00:00:00+05:00`` printed an OverflowError traceback (exit 1); one ending
``9999-12-31T23:59:59+00:00`` counted 4,194,353,339 minutes. Now: the analysis, with one line
naming the field that was not used, and the service's finding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plugin.cli import app

SAMPLE = Path(__file__).resolve().parents[3] / "sample_bundles" / "pair-no-modifier.json"
PROCEDURE = "proc-bram-nomod-1"


@pytest.mark.parametrize(
    ("member", "value"),
    [("start", "0001-01-01T00:00:00+05:00"), ("end", "9999-12-31T23:59:59+00:00")],
)
@pytest.mark.parametrize("output", ["json", "text"])
def test_check_reports_the_date_and_analyses_the_rest(
    tmp_path: Path, member: str, value: str, output: str
) -> None:
    bundle = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for entry in bundle["entry"]:
        if entry["resource"].get("id") == PROCEDURE:
            entry["resource"]["performedPeriod"][member] = value
    path = tmp_path / "visit.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(path), "--format", output])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "Traceback" not in result.output + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"Procedure/{PROCEDURE}" in line
    assert f"performedPeriod.{member}" in line
    assert "outside what a visit can be" in line
    assert value not in line  # the value itself is never echoed
    assert "4194353" not in result.stdout
    if output == "json":
        (visit,) = json.loads(result.stdout)["visits"]
        rules = {(f["rule"], tuple(f["resources"])) for f in visit["findings"]}
        assert ("W-NO-DURATION", (f"Procedure/{PROCEDURE}",)) in rules
    else:
        assert "W-NO-DURATION" in result.stdout
