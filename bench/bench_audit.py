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

``--engine dask --workers 1,2`` measures the Dask engine instead (issue 19): for each worker
count it starts a cluster as on several machines (``dask scheduler`` and ``dask worker
--nworkers N --nthreads 1``, on this machine's loopback), waits for the workers, then runs
``therapy-cds audit EXPORT --dask tcp://127.0.0.1:PORT``. Memory and CPU then cover the command
and the worker processes (CPU the workers used before the audit is left out). From the largest
worker count of the largest size it prints the rate per worker and, by linear extrapolation,
the wall time for ``--target-visits`` visits on ``--nodes`` machines of ``--node-workers``
workers each (the scaling loss measured here included; storage assumed to keep up).

Run: .venv/bin/python bench/bench_audit.py [--sizes 10000,100000] [--jobs 2]
     .venv/bin/python bench/bench_audit.py --engine dask --workers 1,2 [--sizes 100000]
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
from typing import Any

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
    """Peak RSS / PSS of processes and all their descendants, every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05, others: tuple[int, ...] = ()) -> None:
        super().__init__(daemon=True)
        self.pids = (pid, *others)
        self.interval = interval
        self.peak = Sample()
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds, last seen
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            samples = [_tree_memory(pid, self.cpu) for pid in self.pids]
            sample = Sample(
                sum(s.rss for s in samples),
                sum(s.pss for s in samples),
                max(s.largest for s in samples),
            )
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


class DaskCluster:
    """A scheduler and ``workers`` worker processes (one thread each), started as the multi-node
    setup starts them, on 127.0.0.1; stopped on exit."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.processes: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def __enter__(self) -> DaskCluster:
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> DaskCluster:
        from distributed import Client

        dask = str(Path(sys.executable).parent / "dask")
        info = OUT / f"scheduler-{os.getpid()}.json"
        info.unlink(missing_ok=True)
        scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
        scheduler += ["--dashboard-address", "127.0.0.1:0"]  # its HTTP endpoints: any free port
        self.processes.append(
            subprocess.Popen(
                [*scheduler, "--scheduler-file", str(info)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        worker = [dask, "worker", "--scheduler-file", str(info), "--no-dashboard"]
        worker += ["--nworkers", str(self.workers), "--nthreads", "1"]
        deadline = time.monotonic() + 60
        while not info.exists():
            if time.monotonic() > deadline or self.processes[0].poll() is not None:
                raise SystemExit("the Dask scheduler did not start")
            time.sleep(0.1)
        self.processes.append(
            subprocess.Popen(worker, cwd=OUT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        with Client(scheduler_file=str(info), timeout=60) as client:
            client.wait_for_workers(self.workers, timeout=120)
            self.address = str(client.scheduler.address)
            # long-lived workers have the rules imported already: import them before measuring
            # (the audit's own probe, on no folder: its answer does not matter here)
            from plugin.audit.distributed import probe_worker

            client.run(probe_worker, "", "")
        info.unlink(missing_ok=True)
        return self

    @property
    def worker_root(self) -> int:
        return self.processes[-1].pid

    def __exit__(self, *_: object) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def run_audit(
    export: Path, jobs: int, cluster: DaskCluster | None = None
) -> dict[str, float | int | str]:
    engine = ["--jobs", str(jobs)] if cluster is None else ["--dask", cluster.address]
    name = f"j{jobs}" if cluster is None else f"dask{cluster.workers}"
    out = OUT / f"audit-{export.name}-{name}"
    command = [
        sys.executable,
        "-c",
        "from plugin.cli import main; main()",
        "audit",
        str(export),
        "--out",
        str(out),
        *engine,
        "--quiet",
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    workers = () if cluster is None else (cluster.worker_root,)
    baseline: dict[int, float] = {}  # CPU the workers used before this audit
    for pid in workers:
        _tree_memory(pid, baseline)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE)
    sampler = PeakSampler(process.pid, others=workers)
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
    others = sum(t - baseline.get(pid, 0.0) for pid, t in sampler.cpu.items() if pid != process.pid)
    cpu = max(own, own + others)
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
    parser.add_argument("--engine", choices=("local", "dask"), default="local")
    parser.add_argument(
        "--workers", default="1,2", help="Dask worker processes to measure (--engine dask)"
    )
    parser.add_argument("--target-visits", type=int, default=10_000_000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument(
        "--node-workers", type=int, default=0, help="workers per node (0: the most measured)"
    )
    args = parser.parse_args(argv)
    if not Path("/proc/self/statm").exists():
        raise SystemExit("this benchmark samples /proc (Linux)")
    OUT.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(w) for w in args.workers.split(",")] if args.engine == "dask" else [0]
    rows = []
    for workers in counts:
        for size in sizes:
            export = ensure_export(size, args.seed)
            if args.engine == "dask":
                with DaskCluster(workers) as cluster:
                    row = run_audit(export, args.jobs, cluster)
                label = {"engine": "dask", "workers": workers}
            else:
                row = run_audit(export, args.jobs)
                label = {"engine": "local", "jobs": args.jobs}
            row = {**label, **row}
            rows.append(row)
            sys.stdout.write(json.dumps({"generated_visits": size, **row}) + "\n")
            sys.stdout.flush()
    header = (
        f"{'engine':>8} {'visits':>8} {'MB':>6} {'wall s':>7} {'visits/s':>9} {'audit/s':>8} "
        f"{'tree RSS':>9} {'tree PSS':>9} {'max proc':>9} {'CPU s':>7} {'CPU ms/v':>8} "
        f"{'load':>5}"
    )
    sys.stdout.write(f"\n{header}\n")
    for row in rows:
        engine = f"dask x{row['workers']}" if row["engine"] == "dask" else f"jobs={row['jobs']}"
        sys.stdout.write(
            f"{engine:>8} {row['visits']:>8,} {row['export_mb']:>6} {row['wall_s']:>7} "
            f"{row['visits_per_s']:>9,} {row['audit_phase_visits_per_s']:>8,} "
            f"{row['peak_tree_rss_mb']:>6} MB {row['peak_tree_pss_mb']:>6} MB "
            f"{row['max_process_rss_mb']:>6} MB {row['cpu_s']:>7} {row['cpu_ms_per_visit']:>8} "
            f"{row['load_before']:>5}\n"
        )
    if args.engine == "dask":
        sys.stdout.write(extrapolate(rows, args.target_visits, args.nodes, args.node_workers))
    return 0


def extrapolate(rows: list[dict[str, Any]], target: int, nodes: int, node_workers: int) -> str:
    """Speed-up of the most workers over one, the rate per worker, and the linear extrapolation
    of the wall time for ``target`` visits on ``nodes`` machines (whole command, and the audit
    phase alone), from the largest export measured."""
    largest = max(int(r["visits"]) for r in rows)
    by_workers = {int(r["workers"]): r for r in rows if int(r["visits"]) == largest}
    most = max(by_workers)
    row = by_workers[most]
    per_worker = float(row["visits_per_s"]) / most
    per_worker_audit = float(row["audit_phase_visits_per_s"]) / most
    workers = node_workers or most
    lines = [""]
    if 1 in by_workers and most > 1:
        speedup = float(row["visits_per_s"]) / max(float(by_workers[1]["visits_per_s"]), 1.0)
        lines.append(f"{most} workers vs 1: {speedup:.2f}x visits/s ({largest:,} visits)")
    lines.append(
        f"per worker: {per_worker:,.0f} visits/s whole command, "
        f"{per_worker_audit:,.0f} visits/s audit phase (from {most} worker(s))"
    )
    for label, rate in (("whole command", per_worker), ("audit phase", per_worker_audit)):
        seconds = target / max(rate * workers * nodes, 1e-9)
        lines.append(
            f"extrapolated, {target:,} visits on {nodes} nodes x {workers} worker(s), "
            f"{label} rate: {seconds:,.0f} s ({seconds / 60:.1f} min)"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
