"""The audit chooses each visit's payer rule from its Coverage (issue 15): in a bundle, and in a
bulk export where Coverage.ndjson is a file of its own (routed to the patient by beneficiary);
``--payer-rule`` overrides it; visits.csv says which rule and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audit_support import SAMPLES, read_csv, summary
from typer.testing import CliRunner

from plugin.cli import app

MAPPING = SAMPLES / "payer-rules-example.toml"
AMA_REASON = "Harbor Mutual PPO coverage → AMA per-code rule"


@pytest.fixture(autouse=True)
def _mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THERAPY_CDS_PAYER_RULES_FILE", str(MAPPING))


def _audit(tmp_path: Path, source: Path, *args: str) -> list[dict[str, str]]:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", str(source), "--out", str(out), "-q", *args])
    assert result.exit_code == 0, result.output
    return read_csv(out / "visits.csv")


def test_a_bundle_with_coverage_is_audited_under_its_payer_rule(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("coverage-commercial-ama.json", "coverage-medicare-part-b.json"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    rows = {Path(r["source"]).name: r for r in _audit(tmp_path, folder)}
    commercial = rows["coverage-commercial-ama.json"]
    assert (commercial["payer_rule"], commercial["payer_rule_reason"]) == ("ama", AMA_REASON)
    assert commercial["units"] == "97140=2;97530=2"
    medicare = rows["coverage-medicare-part-b.json"]
    assert medicare["payer_rule_reason"] == "Medicare Part B coverage → CMS 8-minute rule"
    assert summary(tmp_path / "out")["rules"]["payer_rule_source"] == f"Coverage, {MAPPING}"
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "payer rule per visit from its Coverage" in report


def test_coverage_in_its_own_export_file_reaches_the_patient(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    bundle = json.loads((SAMPLES / "coverage-commercial-ama.json").read_text(encoding="utf-8"))
    by_type: dict[str, list[str]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for rtype, lines in by_type.items():
        (export / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (row,) = _audit(tmp_path, export)
    assert (row["payer_rule"], row["payer_rule_reason"]) == ("ama", AMA_REASON)


def test_the_option_overrides_the_coverage(tmp_path: Path) -> None:
    source = SAMPLES / "coverage-commercial-ama.json"
    (row,) = _audit(tmp_path, source, "--payer-rule", "cms")
    assert row["payer_rule"] == "cms"
    assert row["payer_rule_reason"] == "chosen with --payer-rule → CMS 8-minute rule"
