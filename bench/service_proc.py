"""Run ``therapy-cds serve`` as a real process on 127.0.0.1 for the soak, fault and shared-
database checks: start it with a given environment and worker count, wait until ``/healthz``
answers on every worker, find the worker processes, stop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Service:
    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[int]:
        """Pids of the uvicorn worker processes (the server itself with one worker)."""
        children = child_pids(self.process.pid)
        return children or [self.process.pid]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    # uvicorn's supervisor may also start a resource tracker; workers run the app
    return sorted(p for p in found if _is_worker(p))


def _is_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" not in cmdline


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError("the service did not become healthy in time")


@contextlib.contextmanager
def running_service(
    env: Mapping[str, str],
    *,
    workers: int = 1,
    log_dir: Path,
    dev: bool = True,
    port: int | None = None,
) -> Iterator[Service]:
    """``therapy-cds serve`` on 127.0.0.1 with ``env`` added to this process's environment."""
    port = port or free_port()
    entry = Path(sys.executable).parent / "therapy-cds"
    command = [str(entry), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)]
    if dev:
        command.append("--dev")
    log = log_dir / f"service-{port}.log"
    handle = log.open("wb")
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, process)
        deadline = time.monotonic() + 30
        service = Service(base_url, port, process, log)
        while workers > 1 and len(child_pids(process.pid)) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("not every worker started")
            time.sleep(0.2)
        time.sleep(0.5 if workers > 1 else 0)  # the last worker finishes its start-up
        yield service
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        handle.close()


#: Lua ``done`` hook for wrk scripts: prints one ``WRKJSON {...}`` line that :func:`run_wrk`
#: reads (request count, duration, non-2xx, socket errors, latency percentiles in microseconds).
WRK_REPORT_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, '
    .. '"p50": %d, "p90": %d, "p99": %d, "max": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def run_wrk(url: str, script: Path, seconds: int, concurrency: int) -> dict[str, int]:
    """One wrk run (one thread, ``concurrency`` connections) against a loopback ``url`` with a
    Lua ``script`` that ends in :data:`WRK_REPORT_LUA`; returns its ``WRKJSON`` numbers."""
    completed = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, seconds)}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    line = next(x for x in completed.stdout.splitlines() if x.startswith("WRKJSON "))
    result: dict[str, int] = json.loads(line[len("WRKJSON ") :])
    return result
