"""Issue 18, install: ``--version``, the LICENSE pyproject names, ``make serve PORT=/HOST=``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plugin.cli import app
from plugin.cli._app import browsable_host
from plugin.cli.serve import _announce_sandbox
from plugin.web.settings import default_sample_bundles_dir

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "sample_bundles"
runner = CliRunner()


def test_version_prints_the_distribution_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"therapy-cds {version('therapy-cds')}"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert version("therapy-cds") == pyproject["project"]["version"]


def test_license_file_is_the_apache_2_text_pyproject_declares() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n                           Version 2.0")
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text


def test_changelog_has_an_unreleased_section_and_the_current_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    headings = [
        line
        for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    ]
    assert headings[0] == "## Unreleased"
    assert f"## {pyproject['project']['version']}" in headings


def test_sqlite_side_files_are_ignored() -> None:
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert {"*.db", "*.db-wal", "*.db-shm"} <= set(ignored)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_serve_passes_port_and_host() -> None:
    # -n prints the recipe without running it (the venv prerequisites are up to date or echoed).
    run = subprocess.run(
        ["make", "-n", "-s", "-C", str(ROOT), "serve", "PORT=18123", "HOST=0.0.0.0"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "therapy-cds serve --dev --host 0.0.0.0 --port 18123" in run.stdout
    default = subprocess.run(
        ["make", "-n", "-s", "-C", str(ROOT), "serve"], capture_output=True, text=True, check=True
    )
    assert "therapy-cds serve --dev --host 127.0.0.1 --port 8000" in default.stdout


def test_serve_announces_the_sandbox_url_and_its_samples(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("THERAPY_CDS_SAMPLE_BUNDLES_DIR", raising=False)
    monkeypatch.delenv("THERAPY_CDS_SANDBOX", raising=False)
    _announce_sandbox(False, "0.0.0.0", 18123)
    err = capsys.readouterr().err
    assert "sandbox page at http://127.0.0.1:18123/sandbox" in err
    count = len(json.loads((SAMPLES / "scenarios.json").read_text(encoding="utf-8"))["scenarios"])
    assert f"{count} sample bundles offered on the sandbox page" in err


@pytest.mark.parametrize(
    ("bound", "shown"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("::", "[::1]"),
        ("::1", "[::1]"),
        ("127.0.0.1", "127.0.0.1"),
        ("cds.example.org", "cds.example.org"),
    ],
)
def test_printed_urls_name_a_host_a_browser_can_open(bound: str, shown: str) -> None:
    """``serve --host 0.0.0.0`` binds every interface; the URLs it prints use loopback."""
    assert browsable_host(bound) == shown


def test_serve_says_when_there_are_no_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THERAPY_CDS_SAMPLE_BUNDLES_DIR", str(tmp_path))
    _announce_sandbox(False, "127.0.0.1", 8000)
    err = capsys.readouterr().err
    assert "sandbox page at http://127.0.0.1:8000/sandbox" in err
    assert f"no sample bundles: no readable scenarios.json in {tmp_path}" in err


def test_serve_does_not_announce_a_sandbox_it_does_not_serve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("THERAPY_CDS_SANDBOX", raising=False)
    _announce_sandbox(True, "127.0.0.1", 8000)  # authentication on: no sandbox by default
    assert "sandbox" not in capsys.readouterr().err


def test_the_wheel_carries_the_sample_bundles(tmp_path: Path) -> None:
    """``pip wheel .`` ships sample_bundles/ beside plugin/, where the sandbox looks for it."""
    build = tmp_path / "src"
    # Built from a copy so no build/ or egg-info lands in the working tree.
    shutil.copytree(
        ROOT,
        build,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "tests", "bench", "__pycache__", "*.db*"
        ),
    )
    out = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(build),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("therapy_cds-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    samples = {p.name for p in SAMPLES.iterdir() if p.suffix == ".json" or p.name == "README.md"}
    assert samples >= {"scenarios.json", "README.md", "pair-no-modifier.json"}
    assert {f"sample_bundles/{name}" for name in samples} <= names
    # plugin.web.settings looks for them beside the installed plugin package.
    assert "plugin/web/settings.py" in names
    assert default_sample_bundles_dir() == ROOT / "sample_bundles"
    assert any(name.endswith("licenses/LICENSE") for name in names)


def test_sample_readme_commands_run_from_the_venv() -> None:
    """``therapy-cds`` is not on PATH after ``make serve``: the commands say ``.venv/bin/``."""
    text = (SAMPLES / "README.md").read_text(encoding="utf-8")
    blocks = text.split("```")[1::2]
    commands = [line for block in blocks for line in block.splitlines() if "therapy-cds " in line]
    assert commands
    for line in commands:
        assert line.startswith(".venv/bin/therapy-cds "), line
