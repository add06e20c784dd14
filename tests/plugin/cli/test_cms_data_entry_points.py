"""CMS data through every door (issue 15): ``therapy-cds data``, ``check --ptp-file/--mue-file``
(JSON ``tables``, text, refusals), the settings, order-sign cards, the audit report header, and a
service that refuses to start on a bad file.

E-MUE-EXCEEDED has no entry in ``scenarios.json``: samples run without settings and the
project ships no CMS value, so it is shown here through ``check`` and order-sign on the sample
``pair-no-modifier.json`` (97530 billed 2 units on one line) with a test-built MUE file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from plugin.app import create_app
from plugin.audit import AuditOptions, run_audit
from plugin.cli import app
from plugin.hook_request import build_hook_request
from plugin.rules.cms_data import BUILTIN_LABEL, CmsFileError, active_tables, use_tables
from plugin.services import ORDER_SIGN_SERVICE
from plugin.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "sample_bundles" / "pair-no-modifier.json"  # 2025-03-04, 97530 x2 on one line
runner = CliRunner()

PTP = (
    "CPT codes, descriptions and other data only are copyright American Medical Association.\n"
    "Column 1\tColumn 2\t*=in existence prior to 1996\tEffective Date\tDeletion Date\tModifier"
    "\tPTP Edit Rationale\n"
    "97140\t97530\t\t20040101\t*\t1\tMutually exclusive procedures\n"
    "29881\t29880\t*\t19960101\t*\t1\tMisuse of column two code\n"
)
MUE_HEAD = (
    "HCPCS/CPT Code,Practitioner Services MUE Values,MUE Adjudication Indicator,MUE Rationale"
)


@pytest.fixture(autouse=True)
def _restore_tables() -> Iterator[None]:
    before = active_tables()
    yield
    use_tables(before)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    ptp = tmp_path / "ptp_2025-01-01.txt"
    ptp.write_text(PTP)
    line = tmp_path / "mue_2025-01-01.csv"
    line.write_text(f'{MUE_HEAD}\n97530,1,"1 Line Edit",Clinical: Data\n')
    dos = tmp_path / "mue_dos.csv"
    dos.write_text(f'{MUE_HEAD}\n97530,1,"3 Date of Service Edit: Clinical",Clinical: Data\n')
    bad = tmp_path / "mue_2025-04-01_cut.csv"
    bad.write_text(f'{MUE_HEAD}\n97530,1,"1 Line Edit",x\n97140,2,"1 Line\n')
    cut = tmp_path / "ptp_cut.txt"
    cut.write_text(PTP + "97140\t975")
    return {
        "ptp": str(ptp),
        "line": str(line),
        "dos": f"{dos}@2025-01-01",
        "bad": str(bad),
        "cut": str(cut),
    }


def test_data_prints_what_is_loaded(files: dict[str, str]) -> None:
    result = runner.invoke(app, ["data", "--ptp-file", files["ptp"], "--mue-file", files["line"]])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "CMS NCCI PTP ptp_2025-01-01.txt (from 2025-01-01)" in out
    assert "quarter: from 2025-01-01 (file name)" in out
    assert "rows: 2; effective dates 1996-01-01 to 2004-01-01" in out
    assert "therapy codes: 1 (kept" in out
    assert "CMS MUE mue_2025-01-01.csv (from 2025-01-01)" in out
    plain = runner.invoke(app, ["data"])
    assert BUILTIN_LABEL in plain.output
    assert "E-MUE-EXCEEDED is not checked" in plain.output


def test_bad_file_is_one_line_and_exit_2(files: dict[str, str]) -> None:
    for command in (["data"], ["check", str(SAMPLE)]):
        result = runner.invoke(app, [*command, "--mue-file", files["bad"]])
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"{files['bad']} line 3: " in lines[0]
        assert "not loaded" in lines[0]


def _check(*options: str) -> dict[str, Any]:
    result = runner.invoke(app, ["check", str(SAMPLE), "--format", "json", *options])
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = json.loads(result.output)
    return loaded


def test_check_names_its_tables_and_raises_mue(files: dict[str, str]) -> None:
    plain = _check()
    assert [t["cms"] for t in plain["tables"]] == [False]
    assert BUILTIN_LABEL in plain["tables"][0]["label"]
    assert "E-MUE-EXCEEDED" not in json.dumps(plain["visits"])
    loaded = _check("--ptp-file", files["ptp"], "--mue-file", files["line"])
    assert [(t["kind"], t["name"], t["from"]) for t in loaded["tables"]] == [
        ("ptp", "ptp_2025-01-01.txt", "2025-01-01"),
        ("mue", "mue_2025-01-01.csv", "2025-01-01"),
    ]
    rules = [f["rule"] for f in loaded["visits"][0]["findings"]]
    assert "E-MUE-EXCEEDED" in rules
    text = runner.invoke(app, ["check", str(SAMPLE), "--mue-file", files["dos"]])
    assert "tables: NCCI PTP rulebook" in text.output
    assert "per date of service" in text.output


def test_settings_are_the_default_and_options_replace_them(
    files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERAPY_CDS_MUE_FILES", f"{files['line']}, {files['dos']}x")
    result = runner.invoke(app, ["check", str(SAMPLE)])
    assert result.exit_code == 2, "the second file does not exist"
    assert "cannot be read" in result.output
    monkeypatch.setenv("THERAPY_CDS_MUE_FILES", files["line"])
    assert "E-MUE-EXCEEDED" in json.dumps(_check())
    assert _check("--mue-file", files["dos"])["tables"][-1]["name"] == "mue_dos.csv"


@pytest.mark.anyio
async def test_order_sign_cards_name_the_table(tmp_path: Path, files: dict[str, str]) -> None:
    settings = Settings(
        dev_mode=True,
        require_auth=False,
        database_url=f"sqlite:///{tmp_path / 'cds.db'}",
        mue_files=[files["line"]],
    )
    service = create_app(settings)
    body = build_hook_request(json.loads(SAMPLE.read_text()), hook="order-sign")
    transport = httpx.ASGITransport(app=service)
    async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
        response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    mue = [c for c in cards if "E-MUE-EXCEEDED" in c["source"]["topic"]["code"]]
    assert len(mue) == 1
    assert mue[0]["summary"] == "97530 on 2025-03-04: 2 units billed, over the MUE of 1 per line"
    assert "CMS MUE mue\\_2025-01-01.csv (from 2025-01-01)" in mue[0]["detail"]
    assert mue[0]["suggestions"], "per-line: set the units to the MUE value"
    pair = [c for c in cards if c["source"]["topic"]["code"] == "E-PAIR-NO-MODIFIER"]
    assert "not a CMS table" in pair[0]["detail"], "the built-in PTP excerpt is said to be one"


def test_service_refuses_to_start_on_a_bad_file(tmp_path: Path, files: dict[str, str]) -> None:
    settings = Settings(
        dev_mode=True,
        require_auth=False,
        database_url=f"sqlite:///{tmp_path / 'cds.db'}",
        mue_files=[files["bad"]],
    )
    with pytest.raises(CmsFileError, match=r"line 3: "):
        create_app(settings)


def test_serve_refuses_a_bad_file_in_one_line(
    files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THERAPY_CDS_PTP_FILES", files["cut"])
    for name, value in (("DEV_MODE", "true"), ("REQUIRE_AUTH", "false")):
        monkeypatch.setenv(f"THERAPY_CDS_{name}", value)  # serve --dev sets them; restored
    result = runner.invoke(app, ["serve", "--dev"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"therapy-cds: configuration error: {files['cut']} line 5: ")


def test_audit_report_names_the_tables(tmp_path: Path, files: dict[str, str]) -> None:
    from plugin.cli._inputs import rule_tables

    tables = rule_tables([files["ptp"]], [files["line"]], Settings(dev_mode=True), "audit")
    out = tmp_path / "out"
    outcome = run_audit(AuditOptions(paths=(SAMPLE,), out=out, tables=tables))
    names = [t["name"] for t in outcome.summary["rules"]["tables"]]
    assert names == ["ptp_2025-01-01.txt", "mue_2025-01-01.csv"]
    html = (out / "report.html").read_text()
    assert "Tables: CMS NCCI PTP ptp_2025-01-01.txt (from 2025-01-01)" in html
    assert "E-MUE-EXCEEDED" in (out / "findings.csv").read_text()
    assert active_tables() is not tables, "the process's tables are restored"
