"""``therapy-cds check``: every real-world input ends in an analysis (exit 0) or one clear line
(exit 2), never a traceback; the JSON is the contract's shape; folders and errors behave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plugin.cli import app
from plugin.cli.check import ISSUES_SHOWN

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT.parent / "shared" / "reference" / "fixtures"
SAMPLES = ROOT / "sample_bundles"

runner = CliRunner()


def _fixture_files() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    return sorted(
        p
        for folder in ("fhir-examples", "cds-hooks-spec")
        for p in (FIXTURES / folder).rglob("*")
        if p.is_file() and p.suffix in (".json", ".ndjson") and not p.name.endswith(".source.txt")
    )


FIXTURE_FILES = _fixture_files()


@pytest.mark.skipif(not FIXTURE_FILES, reason="../shared/reference/fixtures is not present")
@pytest.mark.parametrize(
    "path", FIXTURE_FILES, ids=[str(p.relative_to(FIXTURES)) for p in FIXTURE_FILES]
)
@pytest.mark.parametrize("output", ["json", "text"])
def test_every_fixture_is_analysed_or_refused_in_one_line(path: Path, output: str) -> None:
    result = runner.invoke(app, ["check", str(path), "--format", output])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    if result.exit_code == 0:
        if output == "json":
            body = json.loads(result.stdout)
            assert set(body) == {"visits", "findings"}
    else:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if not _is_input_problem(line)]
        assert len(errors) == 1, result.stderr
        assert str(path) in errors[0]


def _is_input_problem(line: str) -> bool:
    """A line reporting what was passed over in a file that was still analysed."""
    return line.endswith(("(skipped)", "(value not used)", "(noted)", "(first copy used)")) or (
        "more input problem(s) not shown" in line
    )


def test_input_problems_are_printed_up_to_a_bound_per_file(tmp_path: Path) -> None:
    export = tmp_path / "junk.ndjson"
    patient = json.dumps({"resourceType": "Patient", "id": "p1"})
    export.write_text(patient + "\n" + "{}\n" * 500 + "not json\n" * 500)
    result = runner.invoke(app, ["check", str(export), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == ISSUES_SHOWN + 1
    hidden = 1000 - ISSUES_SHOWN
    assert lines[-1].endswith(f"{hidden} more input problem(s) not shown (the first 50 are above)")
    assert all(line.endswith("(skipped)") for line in lines[:-1])


def test_json_is_the_contract_shape() -> None:
    result = runner.invoke(
        app, ["check", str(SAMPLES / "clean-pair-59-on-97530.json"), "--format", "json"]
    )
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    (visit,) = body["visits"]
    assert list(visit) == [
        "patient",
        "date",
        "discipline",
        "payer_rule",
        "total_timed_minutes",
        "units",
        "allocations",
        "pair",
        "findings",
    ]
    assert visit["units"] == {"97140": 1, "97530": 2}
    assert visit["pair"] == "SUPPORTED"
    assert body["findings"] == []


def test_text_output_is_a_table_per_visit_with_findings() -> None:
    result = runner.invoke(app, ["check", str(SAMPLES / "overlapping-time-blocks.json")])
    assert result.exit_code == 0
    assert "97140" in result.stdout
    assert "97530" in result.stdout
    assert "E-PAIR-SAME-TIMEBLOCK" in result.stdout
    assert "NOT_SUPPORTED" in result.stdout


def test_payer_rule_option_changes_the_units() -> None:
    path = str(SAMPLES / "cms-vs-ama-24-plus-23.json")
    cms = json.loads(runner.invoke(app, ["check", path, "--format", "json"]).stdout)
    ama = json.loads(
        runner.invoke(app, ["check", path, "--format", "json", "--payer-rule", "ama"]).stdout
    )
    assert sum(cms["visits"][0]["units"].values()) == 3
    assert sum(ama["visits"][0]["units"].values()) == 4
    assert ama["visits"][0]["payer_rule"] == "ama"


def test_a_folder_is_expanded_and_one_bad_file_gives_exit_2(tmp_path: Path) -> None:
    good = json.loads((SAMPLES / "clean-pair-59-on-97530.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "b.json").write_text("{not json")
    result = runner.invoke(app, ["check", str(tmp_path), "--format", "json"])
    assert result.exit_code == 2
    assert len(json.loads(result.stdout)["visits"]) == 1  # the good file is still analysed
    (line,) = result.stderr.strip().splitlines()
    assert "b.json" in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (None, "missing.json"),
        ("", "empty.json"),
        ("[1, 2]", "array.json"),
        ("\x00\x01", "bin.json"),
    ],
)
def test_unreadable_inputs_give_one_line_and_exit_2(
    tmp_path: Path, content: str | None, name: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert name in line
