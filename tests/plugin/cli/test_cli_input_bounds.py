"""check / audit / invoke on inputs that used to hang or exhaust memory (issue 17, item 13):
a FIFO, a device, a file over the size cap, a gzip bomb. Each ends in one clear line (check,
invoke: exit 2) or a row of rejected.csv (audit: exit 0), quickly."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from plugin.cli import app

ROOT = Path(__file__).resolve().parents[3]
CLEAN = ROOT / "sample_bundles" / "clean-pair-59-on-97530.json"
MB = 1_000_000
# Generous: the CLI starts in a few seconds even on a loaded machine; before the fix the
# commands below never returned at all.
TIMEOUT = 120

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own, so that a hang fails the test instead of
    stalling it."""
    return subprocess.run(
        [sys.executable, "-c", "from plugin.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


def _one_line(stderr: str, command: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"therapy-cds {command}: ")
    return lines[0]


def _rejected(out: Path) -> list[dict[str, str]]:
    with (out / "rejected.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@needs_fifo
def test_check_and_invoke_refuse_a_fifo_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "bundle.json"
    os.mkfifo(fifo)
    for command in (["check"], ["invoke", "http://127.0.0.1:9"]):
        started = time.monotonic()
        result = _cli(*command, str(fifo), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        line = _one_line(result.stderr, command[0])
        assert str(fifo) in line
        assert "is a named pipe (FIFO), not a regular file" in line
        assert time.monotonic() - started < TIMEOUT


@needs_fifo
def test_audit_lists_a_fifo_as_a_rejected_file(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "Procedure.ndjson")  # an export name: planned in byte ranges
    os.mkfifo(folder / "visit.json")  # a document name: read as check reads it
    (folder / "good.json").write_bytes(CLEAN.read_bytes())
    out = tmp_path / "out"
    result = _cli("audit", str(folder), "--out", str(out), "-q", "-j", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {Path(r["source"]).name: r for r in _rejected(out)}
    for name in ("Procedure.ndjson", "visit.json"):
        assert rows[name]["kind"] == "file"
        assert rows[name]["reason_code"] == "not-a-regular-file"
        assert "named pipe (FIFO)" in rows[name]["reason"]
    recon = json.loads((out / "summary.json").read_text())["reconciliation"]
    assert recon["files_rejected"] == 2
    assert recon["files_read"] == 1
    assert recon["rejected_by_reason"]["not-a-regular-file"] == 2
    assert recon["balanced"] is True


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_check_refuses_a_device() -> None:
    # --max-file-size keeps a regression short: it would read /dev/zero up to the cap
    result = CliRunner().invoke(app, ["check", "/dev/zero", "--max-file-size", "1MB"])
    assert result.exit_code == 2
    line = _one_line(result.stderr, "check")
    assert line == (
        "therapy-cds check: /dev/zero: is a device, not a regular file; save the data to a "
        "file and give that file"
    )


def test_check_refuses_a_file_over_the_cap_and_says_how_to_raise_it(tmp_path: Path) -> None:
    bundle = tmp_path / "visit.json"
    bundle.write_bytes(CLEAN.read_bytes())
    size = bundle.stat().st_size
    runner = CliRunner()
    assert runner.invoke(app, ["check", str(bundle)]).exit_code == 0
    result = runner.invoke(app, ["check", str(bundle), "--max-file-size", "1KB"])
    assert result.exit_code == 2
    line = _one_line(result.stderr, "check")
    assert str(bundle) in line
    assert f"is {size / 1000:.1f}KB, over the 1.0KB limit for one input file" in line
    assert "--max-file-size" in line
    # the setting does the same, and the option overrides it
    env = {"THERAPY_CDS_MAX_FILE_SIZE": "1KB"}
    assert runner.invoke(app, ["check", str(bundle)], env=env).exit_code == 2
    assert (
        runner.invoke(app, ["check", str(bundle), "--max-file-size", "5MB"], env=env).exit_code == 0
    )


def test_a_size_that_is_not_a_size_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", str(CLEAN), "--max-file-size", "lots"])
    assert result.exit_code == 2
    assert "'lots' is not a size" in result.output


def _bomb(path: Path, size: int) -> Path:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with path.open("wb") as out:
        for _ in range(size // MB):
            out.write(compressor.compress(bytes(MB)))
        out.write(compressor.flush())
    return path


def _peak_rss_kb(result: subprocess.CompletedProcess[str]) -> int:
    return int(result.stdout.strip().splitlines()[-1])


def _measured(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the CLI in a child and return its result and its peak RSS (KB, Linux)."""
    code = (
        "import resource, sys\n"
        "from plugin.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )
    return result, _peak_rss_kb(result)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KB is Linux's")
def test_check_and_audit_stop_a_gzip_bomb_at_the_cap(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.json.gz", 100 * MB)  # about 100 KB on disk
    baseline, base_rss = _measured("check", str(CLEAN), cwd=tmp_path)
    assert "Traceback" not in baseline.stderr
    result, rss = _measured("check", str(bomb), "--max-file-size", "10MB", cwd=tmp_path)
    line = _one_line(result.stderr, "check")
    assert f"{bomb}: decompresses to more than 10.0MB, the limit for one input file" in line
    # before: the 100 MB came out whole, and was copied once more to check its encoding
    assert rss - base_rss < 60_000, (rss, base_rss)
    out = tmp_path / "out"
    audited = _cli(
        "audit",
        str(bomb),
        "--out",
        str(out),
        "-q",
        "-j",
        "1",
        "--max-file-size",
        "10MB",
        cwd=tmp_path,
    )
    assert audited.returncode == 0, audited.stderr
    [row] = _rejected(out)
    assert (row["kind"], row["reason_code"]) == ("file", "file-too-large")
    assert row["reason"].startswith("decompresses to more than 10.0MB")


def test_audit_reads_past_an_export_line_over_the_cap(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    patient: dict[str, Any] = json.loads(CLEAN.read_text())["entry"][0]["resource"]
    lines = [json.dumps(patient), '{"resourceType": "Basic", "text": "' + "x" * 3_000 + '"}']
    (export / "Patient.ndjson").write_text("\n".join([*lines, json.dumps(patient)]) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["audit", str(export), "--out", str(out), "-q", "-j", "1", "--max-file-size", "2KB"]
    )
    assert result.exit_code == 0, result.output
    [row] = _rejected(out)
    assert (row["kind"], row["location"], row["reason_code"]) == ("line", "line 2", "line-too-long")
    recon = json.loads((out / "summary.json").read_text())["reconciliation"]
    assert recon["balanced"] is True
    assert recon["rejected_by_reason"] == {"line-too-long": 1}
