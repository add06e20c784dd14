"""The benchmark and soak scripts still run end to end (a second or so of load each), so they
do not rot between the times someone runs ``make bench`` or ``make soak``. No timing is
asserted: numbers come from the scripts themselves, never from tests."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


@needs_wrk
def test_bench_service_runs_against_the_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench_service

    out = tmp_path / "bench.json"
    code = bench_service.main(
        [
            "--skip-peer",
            "--rounds",
            "1",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--procedures",
            "10",
            "--bodies",
            "realistic",
            "--variants",
            "clean,error",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert set(results) == {
        f"{target}/10-realistic-{variant}"
        for target in ("therapy-cds", "floor")
        for variant in ("clean", "error")
    }
    for row in results.values():
        assert row["requests"] > 0
        assert row["non2xx"] == 0
    assert "therapy-cds / floor" in capsys.readouterr().out


@needs_wrk
def test_soak_runs_briefly_without_errors(capsys: pytest.CaptureFixture[str]) -> None:
    import soak

    # Errors and dead workers are judged here; memory flatness needs a warm-up and minutes of
    # load (the real `make soak`), so a cold 10-second run only bounds growth loosely.
    code = soak.main(
        [
            *("--seconds", "10", "--warmup", "0", "--chunk", "5", "--workers", "2"),
            *("--max-growth", "1.0"),
        ]
    )
    output = capsys.readouterr().out
    assert "SOAK PASSED" in output, output[-2000:]
    assert code == 0
