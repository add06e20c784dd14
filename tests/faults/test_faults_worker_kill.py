"""A worker killed mid-load: every feedback item the service acknowledged (200) is in the store.

``therapy-cds serve --workers 2`` on 127.0.0.1 with a SQLite file; eight clients post feedback
items with unique card ids; one worker is SIGKILLed while they do. Requests that worker was
holding fail (never acknowledged); everything acknowledged before or after must be stored,
because the store commits before the endpoint answers.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from plugin.storage import SqlFeedbackStore, make_engine

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from service_proc import running_service  # noqa: E402

SERVICE = "therapy-timed-codes"
RUN_SECONDS = 4.0
KILL_AFTER = 1.5


def _post(port: int, card: str) -> int | None:
    body = {
        "feedback": [{"card": card, "outcome": "accepted", "outcomeTimestamp": "2025-03-04T15:00Z"}]
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


def test_acknowledged_feedback_survives_a_killed_worker(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'kill.db'}"
    env = {"THERAPY_CDS_DATABASE_URL": database, "THERAPY_CDS_LOG_LEVEL": "WARNING"}
    acknowledged: list[tuple[float, str]] = []
    failed = 0
    lock = threading.Lock()
    with running_service(env, workers=2, log_dir=tmp_path) as service:
        victim = service.workers()[0]
        started = time.monotonic()
        stop_at = started + RUN_SECONDS

        def client() -> None:
            nonlocal failed
            while time.monotonic() < stop_at:
                card = str(uuid.uuid4())
                status = _post(service.port, card)
                with lock:
                    if status == 200:
                        acknowledged.append((time.monotonic() - started, card))
                    else:
                        failed += 1

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client) for _ in range(8)]
            time.sleep(KILL_AFTER)
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic() - started
            for future in futures:
                future.result()

    engine = make_engine(database)
    stored = {row["card_uuid"] for row in SqlFeedbackStore(engine).outcomes(SERVICE)}
    engine.dispose()
    cards = [card for _, card in acknowledged]
    assert len(cards) > 50
    assert any(at > killed_at + 0.5 for at, _ in acknowledged), "the service went on serving"
    missing = [card for card in cards if card not in stored]
    assert missing == [], f"{len(missing)} acknowledged items lost ({failed} not acknowledged)"
