"""Benchmark: ``therapy-cds audit`` over synthetic FHIR Bulk Data exports of 10k and 100k visits.

For each size: write the export with ``bench/gen_export.py`` (kept under ``bench/out/`` and
reused while its size and seed match), run the audit as a separate command exactly as a user
would (``therapy-cds audit EXPORT --out DIR --jobs J --quiet``), and print:

* visits audited and visits per second over the whole command (start-up, both passes, the
  report) and over the audit phase alone (from summary.json ``run.phases``);
* peak memory of the whole process tree, sampled from /proc every 50 ms: the sum of RSS
  (counts pages shared by the forked workers once per process, so an upper bound) and the sum
  of PSS (shared pages split between the processes); plus the largest single process
  (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) -- the number to compare between 10k and 100k;
* CPU seconds used (all processes) and CPU milliseconds per visit, and the load average before
  the run: on a machine other work also uses, wall-clock rates fall while CPU per visit holds,
  and ``jobs * 1000 / cpu_ms_per_visit`` is the rate ``jobs`` idle cores would give at most.

Targets (issue 6): >= 2,000 visits/s with 2 jobs, peak RSS < 1 GB, memory flat from 10k to 100k.

Run: .venv/bin/python bench/bench_audit.py [--sizes 10000,100000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    rss: int = 0
    pss: int = 0
    largest: int = 0  # RSS of the largest single process


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # the command name may hold spaces: fields after the last ')' are fixed
        fields = stat[stat.rindex(b")") + 2 :].split()
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _tree_memory(root: int, cpu: dict[int, float]) -> Sample:
    """Memory of ``root`` and its descendants now; ``cpu`` gets each one's CPU seconds so far."""
    tree = _children()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(tree.get(pid, ()))
    sample = Sample()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
            fields = stat[stat.rindex(b")") + 2 :].split()
            cpu[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
            with open(f"/proc/{pid}/statm", "rb") as handle:
                rss = int(handle.read().split()[1]) * PAGE
            sample.rss += rss
            sample.largest = max(sample.largest, rss)
            with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
                for line in handle:
                    if line.startswith(b"Pss:"):
                        sample.pss += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            continue
    return sample


class PeakSampler(threading.Thread):
    """Peak RSS / PSS of a process and all its descendants, every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = Sample()
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds, last seen
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            sample = _tree_memory(self.pid, self.cpu)
            self.peak.rss = max(self.peak.rss, sample.rss)
            self.peak.pss = max(self.peak.pss, sample.pss)
            self.peak.largest = max(self.peak.largest, sample.largest)
            self.done.wait(self.interval)


def ensure_export(visits: int, seed: int) -> Path:
    target = OUT / f"export-{visits}"
    stamp = target / ".generated"
    wanted = f"{visits} {seed}"
    if stamp.exists() and stamp.read_text() == wanted:
        return target
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gen_export.py"),
            str(visits),
            str(target),
            "--seed",
            str(seed),
            "--force",
        ],
        check=True,
    )
    stamp.write_text(wanted)
    return target


def run_audit(export: Path, jobs: int) -> dict[str, float | int | str]:
    out = OUT / f"audit-{export.name}-j{jobs}"
    command = [
        sys.executable,
        "-c",
        "from plugin.cli import main; main()",
        "audit",
        str(export),
        "--out",
        str(out),
        "--jobs",
        str(jobs),
        "--quiet",
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE)
    sampler = PeakSampler(process.pid)
    sampler.start()
    stdout, _ = process.communicate()
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"audit failed ({process.returncode}): {stdout.decode()}")
    # the command itself (waited for) + its workers, which are the forkserver's children and
    # so never reach our RUSAGE_CHILDREN: their CPU is read from /proc while they run
    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu = max(own, own + sum(t for pid, t in sampler.cpu.items() if pid != process.pid))
    summary = json.loads((out / "summary.json").read_text())
    visits = summary["totals"]["visits"]
    phases = summary["run"]["phases"]
    return {
        "visits": visits,
        "export_mb": round(sum(p.stat().st_size for p in export.glob("*.ndjson")) / 2**20, 1),
        "wall_s": round(wall, 2),
        "visits_per_s": round(visits / wall),
        "audit_phase_visits_per_s": round(visits / phases["audit"]) if phases["audit"] else 0,
        "phases": " ".join(f"{k}={v:.1f}" for k, v in phases.items()),
        "peak_tree_rss_mb": round(sampler.peak.rss / 2**20),
        "peak_tree_pss_mb": round(sampler.peak.pss / 2**20),
        "max_process_rss_mb": round(
            max(after.ru_maxrss * 1024, sampler.peak.largest) / 2**20
        ),  # ru_maxrss is in kB on Linux
        "cpu_s": round(cpu, 1),
        "cpu_ms_per_visit": round(1000 * cpu / visits, 3) if visits else 0.0,
        "load_before": round(load, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if not Path("/proc/self/statm").exists():
        raise SystemExit("this benchmark samples /proc (Linux)")
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        export = ensure_export(size, args.seed)
        row = run_audit(export, args.jobs)
        rows.append(row)
        sys.stdout.write(json.dumps({"generated_visits": size, "jobs": args.jobs, **row}) + "\n")
        sys.stdout.flush()
    header = (
        f"{'visits':>8} {'MB':>6} {'wall s':>7} {'visits/s':>9} {'audit/s':>8} "
        f"{'tree RSS':>9} {'tree PSS':>9} {'max proc':>9} {'CPU s':>7} {'CPU ms/v':>8} "
        f"{'load':>5}"
    )
    sys.stdout.write(f"\njobs={args.jobs}\n{header}\n")
    for row in rows:
        sys.stdout.write(
            f"{row['visits']:>8,} {row['export_mb']:>6} {row['wall_s']:>7} "
            f"{row['visits_per_s']:>9,} {row['audit_phase_visits_per_s']:>8,} "
            f"{row['peak_tree_rss_mb']:>6} MB {row['peak_tree_pss_mb']:>6} MB "
            f"{row['max_process_rss_mb']:>6} MB {row['cpu_s']:>7} {row['cpu_ms_per_visit']:>8} "
            f"{row['load_before']:>5}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
