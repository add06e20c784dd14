"""Benchmark: therapy-cds order-sign against the floor and the Python peer, in one run.

Targets, each served by uvicorn (uvloop + httptools) with one worker on 127.0.0.1:

* ``therapy-cds`` -- ``therapy-cds serve --dev`` (the production entry point, auth off, the
  default INFO logging sent to /dev/null), real analysis of the payload;
* ``floor`` -- ``bench/floor_app.py``: bare ASGI, parses the body with orjson, ``{"cards": []}``;
* ``healthchain`` -- ``bench/peer_healthchain.py``: the HealthChain framework (PyPI
  ``healthchain``) answering one canned card, run from a throw-away virtual environment that
  this script creates outside the repository (``--peer-venv``; reused when it exists).

Payloads: ``bench/payloads.py`` -- order-sign requests for a visit with 10 Procedures and one
with 100 (fixed, synthetic), built with ``build_hook_request``, in two body styles
(``--bodies``: ``realistic`` dressed as production EHRs send them, about 23 and 140 KiB;
``compact``, 14 and 86 KiB) and two variants (``--variants``: ``clean``, billed right, no card;
``error``, 97530 billed without modifier 59, one critical card with an update suggestion).

Targets (issue 16), against HealthChain's canned answer on the same body: realistic bodies,
clean 10 Procedures >= 2x with p99 <= 10 ms, error 10 Procedures >= 1.5x, 100 Procedures
>= 2x; compact bodies >= 1x everywhere. Each payload's verdict is printed with the CPU budget
that would meet it when it is missed.

Load: wrk (Debian package ``wrk``) from a separate process, one thread, fixed concurrency,
POSTing the payload through a Lua script. Each (target, payload) gets a warm-up, then
``--rounds`` measured rounds interleaved across targets (the order rotates every round), so a
noisy neighbour hits every target alike. Reported per (target, payload): requests/s over all
rounds, the median over rounds of wrk's p50/p90/p99, the server's CPU time per request (user +
system of the server process tree, from /proc) and non-2xx/3xx responses plus socket errors.

Run: .venv/bin/python bench/bench_service.py [--duration 5] [--rounds 3] [--concurrency 8]
     [--procedures 10,100] [--bodies realistic,compact] [--variants clean,error]
     (``make bench``; ``--skip-peer`` to leave HealthChain out, ``--json FILE`` to save results)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from payloads import order_sign_body  # noqa: E402
from service_proc import WRK_REPORT_LUA, free_port, run_wrk  # noqa: E402

SERVICE_PATH = "/cds-services/therapy-timed-codes"
PEER_PATH = "/cds/cds-services/therapy-timed-codes"
PEER_PACKAGES = ("healthchain", "uvicorn[standard]")
CLK_TCK = os.sysconf("SC_CLK_TCK")

LUA_BODY = """
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

"""


@dataclass
class Target:
    name: str
    command: list[str]
    path: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True)
class Payload:
    """One request body the targets are measured on, and what therapy-cds must reach on it."""

    procedures: int
    body_style: str  # "realistic" or "compact"
    variant: str  # "clean" or "error"
    body: bytes
    need: float  # minimum therapy-cds / healthchain throughput ratio
    p99_ms: float | None  # maximum p99 latency, when the target has one

    @property
    def name(self) -> str:
        return f"{self.procedures} {self.body_style} {self.variant}"

    @property
    def slug(self) -> str:
        return f"{self.procedures}-{self.body_style}-{self.variant}"


def make_payload(procedures: int, body_style: str, variant: str) -> Payload:
    """The payload and its issue-16 target (see the module doc)."""
    realistic, clean = body_style == "realistic", variant == "clean"
    body = order_sign_body(procedures, clean=clean, realistic=realistic)
    if not realistic:
        need, p99 = 1.0, None
    elif procedures <= 10:
        need, p99 = (2.0, 10.0) if clean else (1.5, None)
    else:
        need, p99 = 2.0, None
    return Payload(procedures, body_style, variant, body, need, p99)


@dataclass
class Round:
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    cpu_seconds: float


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        children.setdefault(ppid, []).append(int(entry.name))
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += times.get(current, 0.0)
        stack.extend(children.get(current, []))
    return total


def wait_ready(target: Target, body: bytes, timeout: float = 60.0) -> None:
    url = f"http://127.0.0.1:{target.port}{target.path}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.process is not None and target.process.poll() is not None:
            raise RuntimeError(f"{target.name} exited with {target.process.returncode}")
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{target.name} did not answer 200 on {target.path} in {timeout} s")


@contextlib.contextmanager
def running(targets: list[Target], logs: Path) -> Iterator[None]:
    handles = []
    try:
        for target in targets:
            target.port = free_port()
            command = [arg.replace("{port}", str(target.port)) for arg in target.command]
            log = (logs / f"{target.name}.log").open("wb")
            handles.append(log)
            target.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **target.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        yield
    finally:
        for target in targets:
            if target.process is not None and target.process.poll() is None:
                os.killpg(target.process.pid, signal.SIGTERM)
                try:
                    target.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(target.process.pid, signal.SIGKILL)
        for handle in handles:
            handle.close()


def measure_round(target: Target, script: Path, seconds: float, concurrency: int) -> Round:
    assert target.process is not None
    url = f"http://127.0.0.1:{target.port}{target.path}"
    cpu_before = process_tree_cpu(target.process.pid)
    started = time.monotonic()
    data = run_wrk(url, script, round(seconds), concurrency)
    elapsed = time.monotonic() - started
    cpu = process_tree_cpu(target.process.pid) - cpu_before
    return Round(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6 or elapsed,
        non2xx=data["non2xx"],
        socket_errors=data["socket_errors"],
        p50_ms=data["p50"] / 1000,
        p90_ms=data["p90"] / 1000,
        p99_ms=data["p99"] / 1000,
        cpu_seconds=cpu,
    )


def peer_python(venv: Path) -> Path:
    """The throw-away venv's interpreter, created with HealthChain on first use."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"creating the HealthChain venv at {venv} (one-off, a minute or two)", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *PEER_PACKAGES,
        ],
        check=True,
    )
    return python


def summarise(rounds: list[Round]) -> dict[str, float]:
    requests = sum(r.requests for r in rounds)
    seconds = sum(r.seconds for r in rounds)
    return {
        "rps": requests / seconds if seconds else 0.0,
        "p50_ms": statistics.median(r.p50_ms for r in rounds),
        "p90_ms": statistics.median(r.p90_ms for r in rounds),
        "p99_ms": statistics.median(r.p99_ms for r in rounds),
        "p99_worst_ms": max(r.p99_ms for r in rounds),
        "cpu_ms_per_request": 1000 * sum(r.cpu_seconds for r in rounds) / max(requests, 1),
        "non2xx": sum(r.non2xx + r.socket_errors for r in rounds),
        "requests": requests,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--procedures", default="10,100", help="visit sizes, comma-separated")
    parser.add_argument(
        "--bodies", default="realistic,compact", help="body styles: realistic, compact"
    )
    parser.add_argument("--variants", default="clean,error", help="visit variants: clean, error")
    parser.add_argument("--skip-peer", action="store_true", help="leave HealthChain out")
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "therapy-cds-bench-healthchain",
        help="throw-away venv for HealthChain (created when missing)",
    )
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: install it (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 120:
        parser.error("rounds must be 1..20 and duration 1..120 s")

    sizes = [int(x) for x in args.procedures.split(",") if x.strip()]
    styles = [x.strip() for x in args.bodies.split(",") if x.strip()]
    variants = [x.strip() for x in args.variants.split(",") if x.strip()]
    if not set(styles) <= {"realistic", "compact"} or not set(variants) <= {"clean", "error"}:
        parser.error("--bodies takes realistic,compact and --variants clean,error")
    payloads = [
        make_payload(size, style, variant)
        for style in styles
        for size in sizes
        for variant in variants
    ]
    workdir = Path(tempfile.mkdtemp(prefix="therapy-cds-bench-"))
    scripts: dict[str, Path] = {}
    for payload in payloads:
        (workdir / f"{payload.slug}.json").write_bytes(payload.body)
        scripts[payload.slug] = workdir / f"{payload.slug}.lua"
        scripts[payload.slug].write_text(
            LUA_BODY.format(body=workdir / f"{payload.slug}.json") + WRK_REPORT_LUA
        )

    entry = Path(sys.executable).parent / "therapy-cds"
    targets = [
        Target(
            "therapy-cds",
            [str(entry), "serve", "--dev", "--host", "127.0.0.1", "--port", "{port}"],
            SERVICE_PATH,
            env={"THERAPY_CDS_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}"},
        ),
        Target("floor", [sys.executable, str(ROOT / "bench" / "floor_app.py"), "{port}"], "/"),
    ]
    if not args.skip_peer:
        python = peer_python(args.peer_venv)
        targets.append(
            Target(
                "healthchain",
                [str(python), str(ROOT / "bench" / "peer_healthchain.py"), "{port}"],
                PEER_PATH,
            )
        )

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
        f"wrk -t1 -c{args.concurrency}, {args.rounds} rounds x {args.duration:g} s, "
        f"warm-up {args.warmup:g} s; payloads "
        + ", ".join(f"{p.name} = {len(p.body) / 1024:.0f} KiB" for p in payloads),
        flush=True,
    )
    results: dict[tuple[str, str], list[Round]] = {}
    with running(targets, workdir):
        for target in targets:
            wait_ready(target, payloads[0].body)
        for payload in payloads:
            for target in targets:
                measure_round(target, scripts[payload.slug], args.warmup, args.concurrency)
        for index in range(args.rounds):
            shift = index % len(targets)
            order = targets[shift:] + targets[:shift]
            for payload in payloads:
                for target in order:
                    results.setdefault((target.name, payload.slug), []).append(
                        measure_round(
                            target, scripts[payload.slug], args.duration, args.concurrency
                        )
                    )
            print(f"round {index + 1}/{args.rounds} done", flush=True)

    table = {key: summarise(rounds) for key, rounds in results.items()}
    header = (
        f"{'target':<12} {'payload':>22} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7} {'CPU ms/req':>10} {'non-2xx':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for payload in payloads:
        for target in targets:
            row = table[(target.name, payload.slug)]
            print(
                f"{target.name:<12} {payload.name:>22} {row['rps']:>8.0f} "
                f"{row['p50_ms']:>7.2f} {row['p90_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                f"{row['cpu_ms_per_request']:>10.3f} {row['non2xx']:>8.0f}"
            )
    print()
    verdicts: list[str] = []
    for payload in payloads:
        ours = table[("therapy-cds", payload.slug)]
        floor = table[("floor", payload.slug)]
        line = f"{payload.name}: therapy-cds / floor = {ours['rps'] / floor['rps']:.2f}"
        if ("healthchain", payload.slug) in table:
            peer = table[("healthchain", payload.slug)]
            ratio = ours["rps"] / peer["rps"] if peer["rps"] else float("inf")
            line += f", therapy-cds / healthchain = {ratio:.2f}"
            ok = ratio >= payload.need and (
                payload.p99_ms is None or ours["p99_ms"] <= payload.p99_ms
            )
            # The server is CPU-bound on its core, so throughput goes as 1 / CPU per request:
            # the CPU budget that would meet the ratio, next to what the service spends.
            budget = peer["cpu_ms_per_request"] / payload.need
            verdicts.append(
                f"target {payload.name}: >= {payload.need:g}x healthchain"
                + (f" and p99 <= {payload.p99_ms:g} ms" if payload.p99_ms is not None else "")
                + (": MET" if ok else ": NOT MET")
                + (
                    ""
                    if ok
                    else f" (needs about {budget:.3f} CPU ms per request;"
                    f" therapy-cds spends {ours['cpu_ms_per_request']:.3f})"
                )
            )
        print(line)
    for verdict in verdicts:
        print(verdict)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {f"{name}/{slug}": row for (name, slug), row in table.items()},
                indent=2,
            )
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
