"""Fault scenario: a worker killed mid-load must not lose acknowledged feedback.

``therapy-cds serve --workers 2`` on 127.0.0.1; ``--clients`` threads post feedback items with
unique card ids for ``--seconds``; after ``--kill-after`` seconds one worker gets SIGKILL.
Requests that worker held fail (never acknowledged); every item answered 200, before or after
the kill, must be in the store, since the store commits before the endpoint answers.
Used by ``tests/faults`` (SQLite) and ``tests/postgres`` (PostgreSQL); also a script:

Run: .venv/bin/python bench/faults.py [--database-url URL] [--seconds 4] [--kill-after 1.5]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service_proc import running_service  # noqa: E402

SERVICE = "therapy-timed-codes"


@dataclass
class KillResult:
    acknowledged: list[tuple[float, str]] = field(default_factory=list)  # (seconds in, card)
    not_acknowledged: int = 0
    killed_at: float = 0.0
    stored: set[str] = field(default_factory=set)

    @property
    def lost(self) -> list[str]:
        return [card for _, card in self.acknowledged if card not in self.stored]

    @property
    def served_after_kill(self) -> int:
        return sum(1 for at, _ in self.acknowledged if at > self.killed_at + 0.5)


def post_feedback(port: int, card: str) -> int | None:
    body = {
        "feedback": [
            {"card": card, "outcome": "accepted", "outcomeTimestamp": "2025-03-04T15:00:00Z"}
        ]
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            f"/cds-services/{SERVICE}/feedback",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None  # the connection died with the worker: not acknowledged
    finally:
        connection.close()


def kill_worker_during_feedback(
    database_url: str,
    log_dir: Path,
    *,
    seconds: float = 4.0,
    kill_after: float = 1.5,
    clients: int = 8,
) -> KillResult:
    from plugin.storage import SqlFeedbackStore, make_engine

    result = KillResult()
    lock = threading.Lock()
    env = {"THERAPY_CDS_DATABASE_URL": database_url, "THERAPY_CDS_LOG_LEVEL": "WARNING"}
    with running_service(env, workers=2, log_dir=log_dir) as service:
        victim = service.workers()[0]
        started = time.monotonic()
        stop_at = started + seconds

        def client() -> None:
            while time.monotonic() < stop_at:
                card = str(uuid.uuid4())
                status = post_feedback(service.port, card)
                with lock:
                    if status == 200:
                        result.acknowledged.append((time.monotonic() - started, card))
                    else:
                        result.not_acknowledged += 1

        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(client) for _ in range(clients)]
            time.sleep(kill_after)
            os.kill(victim, signal.SIGKILL)
            result.killed_at = time.monotonic() - started
            for future in futures:
                future.result()

    engine = make_engine(database_url)
    result.stored = {row["card_uuid"] for row in SqlFeedbackStore(engine).outcomes(SERVICE)}
    engine.dispose()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary folder")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--kill-after", type=float, default=1.5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    if not (1 <= args.seconds <= 300 and 0 < args.kill_after < args.seconds):
        parser.error("seconds must be 1..300 and kill-after inside the run")
    with tempfile.TemporaryDirectory(prefix="therapy-cds-faults-") as folder:
        url = args.database_url or f"sqlite:///{Path(folder) / 'faults.db'}"
        result = kill_worker_during_feedback(
            url,
            Path(folder),
            seconds=args.seconds,
            kill_after=args.kill_after,
            clients=args.clients,
        )
    print(
        f"acknowledged {len(result.acknowledged)}, not acknowledged {result.not_acknowledged}, "
        f"worker killed at {result.killed_at:.2f} s, acknowledged after the kill "
        f"{result.served_after_kill}, lost {len(result.lost)}"
    )
    return 0 if not result.lost and result.served_after_kill else 1


if __name__ == "__main__":
    sys.exit(main())
