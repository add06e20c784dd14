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
            assert set(body) == {"visits", "findings", "tables"}  # tables: issue 15
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
        "billed_units",  # issue 13: billed units per timed code, null without charges
        "payer_rule_reason",  # issue 15: why the payer rule applies
        "source",  # issue 18: the file the visit came from, as given, the last member
    ]
    assert visit["source"] == str(SAMPLES / "clean-pair-59-on-97530.json")
    assert visit["units"] == {"97140": 1, "97530": 2}
    assert visit["pair"] == "SUPPORTED"
    assert visit["billed_units"] == {"97140": 1, "97530": 2}
    assert body["findings"] == []


def test_billed_units_beside_allowed_in_json_and_text() -> None:
    sample = str(SAMPLES / "billed-units-exceed.json")
    body = json.loads(runner.invoke(app, ["check", sample, "--format", "json"]).stdout)
    (visit,) = body["visits"]
    assert visit["units"] == {"97140": 1, "97530": 2}
    assert visit["billed_units"] == {"97140": 2, "97530": 2}
    result = runner.invoke(app, ["check", sample], env={"COLUMNS": "140"})
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ 97")]
    cells = [[c.strip() for c in row.strip("│").split("│")] for row in rows]
    assert [c[0].split()[0] for c in cells] == ["97140", "97530"]
    assert [c[3:] for c in cells] == [["1", "2", "+1"], ["2", "2", "0"]]
    assert "over (+) / under (−)" in result.stdout


def test_billed_units_are_null_when_no_charge_was_read(tmp_path: Path) -> None:
    data = json.loads((SAMPLES / "clean-pair-59-on-97530.json").read_text())
    data["entry"] = [e for e in data["entry"] if e["resource"]["resourceType"] != "ServiceRequest"]
    path = tmp_path / "no-charges.json"
    path.write_text(json.dumps(data))
    body = json.loads(runner.invoke(app, ["check", str(path), "--format", "json"]).stdout)
    (visit,) = body["visits"]
    assert visit["billed_units"] is None
    assert "I-CHARGES-NOT-AVAILABLE" in {f["rule"] for f in visit["findings"]}
    text = runner.invoke(app, ["check", str(path)], env={"COLUMNS": "140"}).stdout
    assert "billed units: no charge line read for this visit" in text
    assert "over (+)" not in text


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


def test_each_visit_says_which_file_it_came_from(tmp_path: Path) -> None:
    for name in ("pair-no-modifier.json", "clean-pair-59-on-97530.json"):
        (tmp_path / name).write_text((SAMPLES / name).read_text(encoding="utf-8"))
    result = runner.invoke(app, ["check", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    sources = [visit["source"] for visit in json.loads(result.stdout)["visits"]]
    assert sources == [
        str(tmp_path / "clean-pair-59-on-97530.json"),
        str(tmp_path / "pair-no-modifier.json"),
    ]


def test_the_samples_folder_skips_its_manifest_with_a_note() -> None:
    """Issue 18: ``check sample_bundles/`` exited 2 because scenarios.json is not FHIR."""
    result = runner.invoke(app, ["check", str(SAMPLES), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    (note,) = result.stderr.strip().splitlines()
    assert note == (
        f"therapy-cds check: {SAMPLES / 'scenarios.json'}: skipped "
        "(JSON, but not FHIR data or a CDS Hooks request)"
    )
    bundles = sorted(p for p in SAMPLES.glob("*.json") if p.name != "scenarios.json")
    assert {v["source"] for v in json.loads(result.stdout)["visits"]} == {str(p) for p in bundles}


@pytest.mark.parametrize(
    "content",
    ['{"scenarios": []}', '{"cards": []}', "[1, 2]", "42"],
    ids=["manifest", "cds-response", "array", "number"],
)
def test_json_that_is_not_fhir_is_skipped_in_a_folder_and_refused_when_named(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / "visit.json").write_text((SAMPLES / "pair-no-modifier.json").read_text())
    (tmp_path / "other.json").write_text(content)
    folder = runner.invoke(app, ["check", str(tmp_path), "--format", "json"])
    assert folder.exit_code == 0, folder.stderr
    assert len(json.loads(folder.stdout)["visits"]) == 1
    assert "other.json: skipped" in folder.stderr
    named = runner.invoke(app, ["check", str(tmp_path / "other.json")])
    assert named.exit_code == 2
    (line,) = named.stderr.strip().splitlines()
    assert "other.json" in line
    assert "skipped" not in line


def test_a_broken_json_file_in_a_folder_still_exits_2(tmp_path: Path) -> None:
    (tmp_path / "visit.json").write_text((SAMPLES / "pair-no-modifier.json").read_text())
    (tmp_path / "broken.json").write_text('{"resourceType": "Bundle", ')
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 2
    assert "broken.json" in result.stderr


@pytest.mark.parametrize(
    ("sample", "fail_on", "code"),
    [
        ("clean-pair-59-on-97530.json", None, 0),
        ("clean-pair-59-on-97530.json", "error", 0),
        ("clean-pair-59-on-97530.json", "warning", 0),
        ("pair-no-modifier.json", None, 0),
        ("pair-no-modifier.json", "error", 1),
        ("pair-no-modifier.json", "warning", 1),
    ],
)
def test_fail_on_exits_1_for_findings_at_or_over_the_severity(
    sample: str, fail_on: str | None, code: int
) -> None:
    args = ["check", str(SAMPLES / sample), "--format", "json"]
    result = runner.invoke(app, [*args, "--fail-on", fail_on] if fail_on else args)
    assert result.exit_code == code, result.stderr
    assert json.loads(result.stdout)["visits"]  # the output is printed either way


def test_fail_on_warning_counts_warnings_and_error_does_not() -> None:
    warned = [
        p
        for p in sorted(SAMPLES.glob("*.json"))
        if p.name != "scenarios.json" and _severities(p) == {"warning"}
    ]
    assert warned, "a sample with warnings and no error"
    path = str(warned[0])
    assert runner.invoke(app, ["check", path, "--fail-on", "warning"]).exit_code == 1
    assert runner.invoke(app, ["check", path, "--fail-on", "error"]).exit_code == 0


def _severities(path: Path) -> set[str]:
    body = json.loads(runner.invoke(app, ["check", str(path), "--format", "json"]).stdout)
    found = [f for v in body["visits"] for f in v["findings"]] + body["findings"]
    return {f["severity"] for f in found} - {"info"}


def test_unreadable_input_wins_over_fail_on(tmp_path: Path) -> None:
    (tmp_path / "visit.json").write_text((SAMPLES / "pair-no-modifier.json").read_text())
    (tmp_path / "broken.json").write_text("{")
    result = runner.invoke(app, ["check", str(tmp_path), "--fail-on", "error"])
    assert result.exit_code == 2


@pytest.mark.parametrize("width", [60, 80, 200])
def test_text_output_fits_the_terminal_and_indents_wrapped_finding_lines(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    result = runner.invoke(app, ["check", str(SAMPLES / "pair-no-modifier.json")])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    start = next(i for i, line in enumerate(lines) if "E-PAIR-NO-MODIFIER" in line)
    finding = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        finding.append(line)
    text = " ".join(" ".join(line.split()) for line in finding)
    assert "add modifier 59 (or XU) to the 97530 line." in text  # no word broken
    for line in finding[1:]:  # wrapped lines start under the message, never at column 0
        assert line.startswith(" " * len("  E-PAIR-NO-MODIFIER ")), line
    if width >= 200:
        assert len(lines[start]) > 110  # the whole width, not the old fixed 110 columns
