"""The feedback store and the JWT replay cache on PostgreSQL, shared by two uvicorn workers.

- the stores themselves: idempotent feedback, one winner among concurrent ``remember`` calls;
- ``therapy-cds serve --workers 2`` with authentication on, both workers on one database:
  a token replayed to either worker is refused (exactly one of many concurrent uses gets
  through), and the same feedback posted to both workers is stored once.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from cds_hooks.models import FeedbackItem
from plugin.storage import SqlFeedbackStore, SqlReplayStore, make_engine

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from service_proc import running_service  # noqa: E402

ISSUER = "https://ehr.example.org"
SERVICE = "therapy-timed-codes"
KEY = ECKey.generate_key("P-384", parameters={"kid": "pg-test", "alg": "ES384", "use": "sig"})


def _item(card: str) -> FeedbackItem:
    return FeedbackItem.model_validate(
        {"card": card, "outcome": "accepted", "outcomeTimestamp": "2025-03-04T15:00:00Z"}
    )


def test_feedback_store_is_idempotent_on_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    store = SqlFeedbackStore(engine)
    assert engine.dialect.name == "postgresql"
    assert store.record(SERVICE, [_item("c1"), _item("c2")]) == 2
    assert store.record(SERVICE, [_item("c1"), _item("c3")]) == 1
    assert store.count(SERVICE) == 3
    engine.dispose()


def test_replay_store_has_one_winner_among_concurrent_uses(pg_url: str) -> None:
    engines = [make_engine(pg_url) for _ in range(4)]  # four "processes"
    stores = [SqlReplayStore(engine) for engine in engines]
    expires = time.time() + 300
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda i: stores[i % 4].remember(ISSUER, "jti-1", expires), range(16))
        )
    assert results.count(True) == 1
    assert stores[0].remember(ISSUER, "jti-2", expires)
    for engine in engines:
        engine.dispose()


# ------------------------------------------------------------------ two workers, one database


def _token(audience: str, jti: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": audience, "iat": now, "exp": now + 120}
    claims["jti"] = jti or str(uuid.uuid4())
    header = {"alg": "ES384", "typ": "JWT", "kid": KEY.kid}
    return jwt.encode(header, claims, KEY, algorithms=["ES384"])


def _post(port: int, path: str, body: Any, token: str) -> int:
    # A new connection per call, so the kernel spreads them over both workers.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _cpu_ns(pid: int) -> int:
    """Nanoseconds the process has run (finer than the clock ticks of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def test_two_workers_share_replay_cache_and_feedback(pg_url: str, tmp_path: Path) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text(
        json.dumps([{"iss": ISSUER, "jwks": {"keys": [KEY.as_dict(private=False)]}}])
    )
    from service_proc import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "THERAPY_CDS_DATABASE_URL": pg_url,
        "THERAPY_CDS_REQUIRE_AUTH": "true",
        "THERAPY_CDS_TRUSTED_ISSUERS_FILE": str(issuers),
        "THERAPY_CDS_SESSION_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "THERAPY_CDS_PUBLIC_BASE_URL": base,
        "THERAPY_CDS_LOG_LEVEL": "WARNING",
    }
    path = f"/cds-services/{SERVICE}/feedback"
    with running_service(env, workers=2, log_dir=tmp_path, dev=False, port=port) as service:
        workers = service.workers()
        assert len(workers) == 2
        before = {pid: _cpu_ns(pid) for pid in workers}

        # The same feedback, each post with its own token: all acknowledged, stored once.
        item = {
            "card": str(uuid.uuid4()),
            "outcome": "accepted",
            "outcomeTimestamp": "2025-03-04T15:00Z",
        }
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda _: _post(port, path, {"feedback": [item]}, _token(base + path)),
                    range(40),
                )
            )
        assert statuses == [200] * 40

        # One token used many times at once: exactly one use gets through, on either worker.
        replayed = _token(base + path)
        other = {
            "card": str(uuid.uuid4()),
            "outcome": "overridden",
            "outcomeTimestamp": "2025-03-04T15:01Z",
        }
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(lambda _: _post(port, path, {"feedback": [other]}, replayed), range(40))
            )
        assert statuses.count(200) == 1, statuses
        assert statuses.count(401) == 39

        after = {pid: _cpu_ns(pid) for pid in workers}
        assert all(after[pid] > before[pid] for pid in workers), "both workers served requests"

    engine = make_engine(pg_url)
    store = SqlFeedbackStore(engine)
    assert store.count(SERVICE) == 2
    cards = sorted(row["card_uuid"] for row in store.outcomes(SERVICE))
    engine.dispose()
    assert cards == sorted([item["card"], other["card"]])


def test_acknowledged_feedback_survives_a_killed_worker_on_postgres(
    pg_url: str, tmp_path: Path
) -> None:
    from faults import kill_worker_during_feedback

    result = kill_worker_during_feedback(pg_url, tmp_path)
    assert len(result.acknowledged) > 50
    assert result.served_after_kill > 0, "the service went on serving"
    assert result.lost == [], f"{len(result.lost)} acknowledged items lost"
