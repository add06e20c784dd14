"""Issue 18, install: ``--version``, the LICENSE pyproject names, ``make serve PORT=/HOST=``."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plugin.cli import app

ROOT = Path(__file__).resolve().parents[3]
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
