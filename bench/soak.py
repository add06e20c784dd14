"""Soak: sustained load on ``therapy-cds serve --workers 2`` for a fixed time, on 127.0.0.1.

The mix, sent by wrk (one thread, ``--concurrency`` connections) through a Lua script, cycles
through: order-sign for a 10-Procedure visit (x6), order-sign for a 100-Procedure visit, feedback
on a new card (unique ids, so the store keeps growing), discovery and ``/healthz``. The run is cut
into chunks of ``--chunk`` seconds; between chunks the workers' RSS is read from /proc.

Pass when: no non-2xx response and no socket error in the whole run; memory flat -- each
worker's RSS at the end is less than 10% above its RSS after the warm-up (``--warmup``
seconds of the same load); every worker still alive and ``/healthz`` fine at the end.
Logs at WARNING (the INFO line per request would fill the disk over a long soak).

Run: .venv/bin/python bench/soak.py [--seconds 600] [--workers 2] [--concurrency 8]
     (``make soak``; SOAK_SECONDS=60 make soak for a short one)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from payloads import order_sign_body  # noqa: E402
from service_proc import WRK_REPORT_LUA, rss_bytes, run_wrk, running_service  # noqa: E402

LUA = r"""
local function slurp(path)
  local f = assert(io.open(path, "rb")); local s = f:read("*a"); f:close(); return s
end
local small = slurp("{small}")
local large = slurp("{large}")
local json_headers = {["Content-Type"] = "application/json"}
local n = 0
request = function()
  n = n + 1
  local slot = n % 10
  if slot == 7 then
    return wrk.format("POST", "/cds-services/therapy-timed-codes", json_headers, large)
  elseif slot == 8 then
    local body = string.format(
      '{"feedback":[{"card":"soak-%d-%d","outcome":"accepted",'
      .. '"outcomeTimestamp":"2025-03-04T15:00:00Z"}]}', math.random(1, 2^30), n)
    return wrk.format("POST", "/cds-services/therapy-timed-codes/feedback", json_headers, body)
  elseif slot == 9 then
    if n % 20 == 9 then return wrk.format("GET", "/cds-services") end
    return wrk.format("GET", "/healthz")
  end
  return wrk.format("POST", "/cds-services/therapy-timed-codes", json_headers, small)
end
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="measured duration")
    parser.add_argument("--warmup", type=int, default=60, help="warm-up before the baseline")
    parser.add_argument("--chunk", type=int, default=30, help="seconds between memory readings")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: install it (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    if not (10 <= args.seconds <= 4 * 3600 and 1 <= args.workers <= 8):
        parser.error("seconds must be 10..14400 and workers 1..8")

    workdir = Path(tempfile.mkdtemp(prefix="therapy-cds-soak-"))
    (workdir / "small.json").write_bytes(order_sign_body(10))
    (workdir / "large.json").write_bytes(order_sign_body(100))
    script = workdir / "soak.lua"
    script.write_text(
        LUA.replace("{small}", str(workdir / "small.json")).replace(
            "{large}", str(workdir / "large.json")
        )
        + WRK_REPORT_LUA
    )
    env = {
        "THERAPY_CDS_DATABASE_URL": f"sqlite:///{workdir / 'soak.db'}",
        "THERAPY_CDS_LOG_LEVEL": "WARNING",
    }
    totals = {"requests": 0, "non2xx": 0, "socket_errors": 0}
    ok = True
    with running_service(env, workers=args.workers, log_dir=workdir) as service:
        workers = service.workers()
        print(
            f"soak: {args.workers} workers {workers}, wrk -t1 -c{args.concurrency}, warm-up "
            f"{args.warmup} s, then {args.seconds} s in {args.chunk} s chunks",
            flush=True,
        )
        if args.warmup:
            warm = run_wrk(service.base_url, script, args.warmup, args.concurrency)
            print(f"warm-up: {warm['requests']} requests, non-2xx {warm['non2xx']}", flush=True)
        baseline = {pid: rss_bytes(pid) for pid in workers}
        print("baseline RSS MiB: " + ", ".join(f"{p}={b / 2**20:.1f}" for p, b in baseline.items()))
        started = time.monotonic()
        readings: list[dict[int, int]] = []
        while (left := args.seconds - (time.monotonic() - started)) > 1:
            chunk = run_wrk(service.base_url, script, int(min(args.chunk, left)), args.concurrency)
            for key in totals:
                totals[key] += chunk[key]
            rss = {pid: rss_bytes(pid) for pid in workers}
            readings.append(rss)
            elapsed = time.monotonic() - started
            print(
                f"t={elapsed:5.0f}s  {chunk['requests'] / (chunk['duration_us'] / 1e6):7.0f} req/s"
                f"  p50 {chunk['p50'] / 1000:6.2f} ms  p99 {chunk['p99'] / 1000:7.2f} ms"
                f"  non-2xx {chunk['non2xx']}  socket errors {chunk['socket_errors']}  RSS MiB "
                + ", ".join(f"{rss[p] / 2**20:.1f}" for p in workers),
                flush=True,
            )
        elapsed = time.monotonic() - started
        alive = all(Path(f"/proc/{pid}").exists() for pid in workers)
        with urllib.request.urlopen(service.base_url + "/healthz", timeout=5) as response:
            healthy = response.status == 200
        final = readings[-1] if readings else baseline

    print()
    print(
        f"total: {totals['requests']} requests in {elapsed:.0f} s "
        f"({totals['requests'] / elapsed:.0f} req/s), non-2xx {totals['non2xx']}, "
        f"socket errors {totals['socket_errors']}"
    )
    if totals["non2xx"] or totals["socket_errors"]:
        ok = False
    for pid in workers:
        growth = (final[pid] - baseline[pid]) / baseline[pid] if baseline[pid] else 1.0
        verdict = "ok" if growth < args.max_growth else "GROWING"
        ok = ok and growth < args.max_growth
        print(
            f"worker {pid}: RSS {baseline[pid] / 2**20:.1f} -> {final[pid] / 2**20:.1f} MiB "
            f"({growth * 100:+.1f}%) {verdict}"
        )
    print(f"workers alive: {alive}; /healthz: {'200' if healthy else 'failed'}")
    ok = ok and alive and healthy
    print("SOAK PASSED" if ok else "SOAK FAILED")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
