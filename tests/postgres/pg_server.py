"""A throw-away PostgreSQL server for the tests: Debian's binaries, a temporary data directory,
a free port on 127.0.0.1, torn down afterwards.

When the server binaries are missing and the tests run as root with apt-get (CI), Debian's
``postgresql`` package is installed first (``make test`` does the same up front). As root the
server runs as the ``postgres`` user, since PostgreSQL refuses to run as root. When none of this
is possible the PostgreSQL tests are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PgServer:
    port: int
    url: str  # postgresql:// URL for SQLAlchemy (mapped to psycopg 3 by make_engine)


def _bin_dir() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if candidates:
        return candidates[0].parent
    found = shutil.which("initdb")
    return Path(found).parent if found and Path(found).parent.joinpath("pg_ctl").exists() else None


def _install() -> str | None:
    """Install Debian's server when possible; the reason it is not, otherwise."""
    if _bin_dir() is not None:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "PostgreSQL server binaries missing (apt-get install postgresql, as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"], env=env, capture_output=True
        ).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "postgresql"],
                env=env,
                capture_output=True,
                check=True,
                timeout=900,
            )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"could not install PostgreSQL ({type(exc).__name__})"
    return None if _bin_dir() is not None else "PostgreSQL installed but initdb not found"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@contextlib.contextmanager
def running_postgres() -> Iterator[PgServer | str]:
    """Yields the server, or a string saying why there is none."""
    reason = _install()
    bin_dir = _bin_dir()
    if reason is not None or bin_dir is None:
        yield reason or "no PostgreSQL"
        return
    root = Path(tempfile.mkdtemp(prefix="therapy-cds-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        root.chmod(0o700)
    port = _free_port()
    log = root / "server.log"
    try:
        subprocess.run(
            _as_server_user(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            capture_output=True,
            check=True,
            timeout=120,
        )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=on -c max_connections=100"
        )
        subprocess.run(
            _as_server_user(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            capture_output=True,
            check=True,
            timeout=90,
        )
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        _wait(url)
        yield PgServer(port=port, url=url)
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def _wait(url: str, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                url.replace("postgresql://", "postgresql://", 1), connect_timeout=2
            ):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
