"""The SMART session store on PostgreSQL (what several nodes share): a launch through to a
signed-in session, the pools' caps, expiry, sealing, and one claim among concurrent workers."""

from __future__ import annotations

import concurrent.futures
import threading

from sqlalchemy import select, update

from plugin.storage import make_engine, smart_sessions_table
from plugin.web.smart_session import SessionStore, SmartSession

KEY = bytes(range(32))
TOKEN = "tok-pg-8d3e61f0a2"


def _store(url: str, now: list[float], key: bytes = KEY) -> SessionStore:
    return SessionStore(
        make_engine(url),
        key,
        lifetime_seconds=60,
        max_sessions=2,
        max_pending=3,
        max_pending_per_client=2,
        clock=lambda: now[0],
    )


def _launch(store: SessionStore, client: str) -> SmartSession:
    return store.create(
        iss="https://ehr.example/fhir",
        token_endpoint="https://ehr.example/token",
        redirect_uri="https://cds.example/smart/app",
        client=client,
    )


def test_a_launch_to_a_session_sealed_bounded_and_expiring_on_postgres(pg_url: str) -> None:
    now = [1000.0]
    store = _store(pg_url, now)
    assert store.engine.dialect.name == "postgresql"
    launch = _launch(store, "10.0.0.1")
    assert store.claim(launch) is not None
    store.authorize(launch, access_token=TOKEN, patient="p1", encounter="e1", expires_in=30)
    found = store.get(launch.id)
    assert found is not None
    assert (found.access_token, found.patient, found.encounter) == (TOKEN, "p1", "e1")
    with store.engine.connect() as connection:
        (payload,) = connection.execute(select(smart_sessions_table.c.payload)).one()
    assert TOKEN.encode() not in bytes(payload)
    other_key = _store(pg_url, now, key=bytes(32))
    assert other_key.get(launch.id) is None  # another key: dropped
    other_key.engine.dispose()
    assert store.get(launch.id) is None

    for _ in range(10):  # one client's launches: its own cap
        now[0] += 0.01
        _launch(store, "10.0.0.9")
    assert store.pending_count == 2
    for i in range(10):  # many clients: the total cap
        now[0] += 0.01
        _launch(store, f"10.1.0.{i}")
    assert store.pending_count == 3
    signed_in = []
    for i in range(3):
        now[0] += 1
        session = _launch(store, f"10.2.0.{i}")
        store.authorize(session, access_token="t", patient=None, encounter=None, expires_in=None)
        signed_in.append(session)
    assert store.authorized_count == 2
    assert store.get(signed_in[0].id) is None  # the least recently used went

    with store.engine.begin() as connection:  # a row promoted by hand does not open
        connection.execute(
            update(smart_sessions_table)
            .where(smart_sessions_table.c.stage == "pending")
            .values(stage="authorized")
        )
    assert store.pending_count == 0
    now[0] += 61
    assert store.purge() >= 3
    assert len(store) == 0
    store.engine.dispose()


def test_one_claim_among_concurrent_workers_on_postgres(pg_url: str) -> None:
    now = [1000.0]
    workers = [_store(pg_url, now) for _ in range(4)]
    launch = _launch(workers[0], "10.0.0.1")
    copies = [(w, w.get(launch.id)) for w in workers for _ in range(4)]
    barrier = threading.Barrier(len(copies))

    def claim(pair: tuple[SessionStore, SmartSession | None]) -> str | None:
        worker, copy = pair
        assert copy is not None
        barrier.wait()
        return worker.claim(copy)

    with concurrent.futures.ThreadPoolExecutor(len(copies)) as pool:
        won = [v for v in pool.map(claim, copies) if v is not None]
    assert won == [launch.code_verifier]
    for worker in workers:
        worker.engine.dispose()
