"""Benchmark: ``therapy-cds audit --fhir-export`` end to end from a loopback Bulk Data server.

Writes a synthetic export of N visits with ``bench/gen_export.py`` (kept under ``bench/out/`` and
reused while its size and seed match), serves it with ``bench/fake_bulk_server.py`` (SMART
Backend Services with a fresh RS384 key, one "in progress" poll, optional gzip), and runs the
audit as a separate command exactly as a user would::

    therapy-cds audit --fhir-export URL --client-id ID --private-key KEY --out DIR --jobs J -q

It prints the visits audited, the wall time of the whole command (token, kick-off, polling,
download, both audit passes, the report), visits per second over that wall time, the seconds
spent before the audit started (start-up, token, export, download), the bytes downloaded, and
the peak memory of the command's process tree (sum of RSS and of PSS, and the largest single
process), sampled from /proc like ``bench/bench_audit.py``.

Run: .venv/bin/python bench/bench_bulk_audit.py --visits 100000 [--jobs 2] [--gzip encoding]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_audit import OUT, ROOT, PeakSampler, ensure_export
from fake_bulk_server import Behaviour, FakeBulkServer
from joserfc.jwk import RSAKey, import_key

CLIENT = "therapy-cds-bench"


def run(visits: int, jobs: int, seed: int, packing: str) -> dict[str, object]:
    export = ensure_export(visits, seed)
    out = OUT / f"bulk-audit-{visits}-j{jobs}"
    shutil.rmtree(out, ignore_errors=True)
    keys = Path(tempfile.mkdtemp(prefix="bench-bulk-key-"))
    try:
        key = RSAKey.generate_key(2048)
        (keys / "client.pem").write_bytes(key.as_pem(private=True))
        public = import_key(key.as_dict(private=False))
        behaviour = Behaviour(in_progress_polls=1, gzip=packing)
        with FakeBulkServer(export, CLIENT, public, behaviour) as server:
            if packing != "none":  # compress before the clock starts (a server stores it so)
                for path in export.glob("*.ndjson"):
                    server.body_path(path)
            command = [
                sys.executable,
                "-c",
                "from plugin.cli import main; main()",
                "audit",
                "--fhir-export",
                server.base,
                "--client-id",
                CLIENT,
                "--private-key",
                str(keys / "client.pem"),
                "--out",
                str(out),
                "--jobs",
                str(jobs),
                "--quiet",
            ]
            started = time.perf_counter()
            process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE)
            sampler = PeakSampler(process.pid)
            sampler.start()
            stdout, _ = process.communicate()
            wall = time.perf_counter() - started
            sampler.done.set()
            sampler.join()
            record = server.record
    finally:
        shutil.rmtree(keys, ignore_errors=True)
    if process.returncode != 0:
        raise SystemExit(f"audit failed ({process.returncode}): {stdout.decode()}")
    summary = json.loads((out / "summary.json").read_text())
    done = summary["totals"]["visits"]
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    downloaded = sum(p.stat().st_size for p in (out / "fhir-export").glob("*.ndjson"))
    return {
        "visits": done,
        "wall_s": round(wall, 2),
        "visits_per_s": round(done / wall) if wall else 0,
        "before_audit_s": round(wall - summary["run"]["seconds"], 2),
        "downloaded_mb": round(downloaded / 2**20, 1),
        "gzip": packing,
        "polls": record.polls,
        "tokens": record.tokens_issued,
        "peak_tree_rss_mb": round(sampler.peak.rss / 2**20),
        "peak_tree_pss_mb": round(sampler.peak.pss / 2**20),
        "max_process_rss_mb": round(max(largest, sampler.peak.largest) / 2**20),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gzip", choices=("none", "encoding", "file"), default="none")
    args = parser.parse_args(argv)
    if not Path("/proc/self/statm").exists():
        raise SystemExit("this benchmark samples /proc (Linux)")
    OUT.mkdir(parents=True, exist_ok=True)
    row = run(args.visits, args.jobs, args.seed, args.gzip)
    sys.stdout.write(json.dumps({"generated_visits": args.visits, "jobs": args.jobs, **row}))
    sys.stdout.write(
        f"\n{row['visits']:,} visits from the Bulk Data server in {row['wall_s']} s: "
        f"{row['visits_per_s']:,} visits/s end to end ({row['before_audit_s']} s start-up, "
        f"export and download, {row['downloaded_mb']} MB); peak RSS {row['peak_tree_rss_mb']} MB "
        f"(tree), {row['max_process_rss_mb']} MB (largest process)\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
