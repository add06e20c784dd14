"""The SMART session store on the database: the two bounded pools, expiry, one claim of a launch,
and what is stored -- sealed with AES-256-GCM, bound to its row, useless under another key."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from web_support import dev_settings

from plugin.settings import Settings
from plugin.storage import make_engine, smart_sessions_table
from plugin.web.smart_session import (
    KEY_FILE_SUFFIX,
    SessionKeyError,
    SessionStore,
    SmartSession,
    development_key,
    session_key,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
TOKEN = "tok-sealed-5f1c9e0a7b3d"
table = smart_sessions_table


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(f"sqlite:///{tmp_path / 'sessions.db'}")
    yield made
    made.dispose()


def _store(engine: Engine, now: list[float], key: bytes = KEY, **caps: int) -> SessionStore:
    limits = {"max_sessions": 2, "max_pending": 3, "max_pending_per_client": 2} | caps
    return SessionStore(engine, key, lifetime_seconds=60, clock=lambda: now[0], **limits)


def _pending(store: SessionStore, client: str) -> SmartSession:
    return store.create(
        iss="https://ehr.example/fhir",
        token_endpoint="https://ehr.example/token",
        redirect_uri="https://cds.example/smart/app",
        client=client,
    )


def _authorize(store: SessionStore, session: SmartSession, token: str = "tok") -> None:
    store.authorize(
        session, access_token=token, patient="pat-1", encounter="enc-1", expires_in=None
    )


def _rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(table)))


def _alive(store: SessionStore, session: SmartSession) -> bool:
    found = store.get(session.id)
    return found is not None and found.id == session.id


def test_a_session_comes_back_whole_and_expires_with_the_token(engine: Engine) -> None:
    now = [1000.0]
    store = _store(engine, now)
    first = _pending(store, "10.0.0.1")
    again = store.get(first.id)
    assert again == dataclasses.replace(first, client="")  # the address is not kept readable
    assert again is not None
    assert again.access_token is None
    assert store.claim(first) == again.code_verifier
    store.authorize(
        first,
        access_token="secret-123",
        patient="pat-1",
        encounter="enc-1",
        expires_in=10,
        need_patient_banner=True,
    )
    assert "secret-123" not in repr(first)
    signed_in = store.get(first.id)
    assert signed_in is not None
    assert (signed_in.access_token, signed_in.patient, signed_in.encounter) == (
        "secret-123",
        "pat-1",
        "enc-1",
    )
    assert signed_in.need_patient_banner
    assert signed_in.state is None
    assert signed_in.code_verifier is None
    now[0] += 11
    assert store.get(first.id) is None
    pending = _pending(store, "10.0.0.1")
    now[0] += 61
    assert store.get(pending.id) is None
    assert _rows(engine) == []  # both expired rows were deleted when read


def test_what_is_stored_is_sealed_and_names_no_cookie(engine: Engine, tmp_path: Path) -> None:
    store = _store(engine, [1000.0])
    session = _pending(store, "10.0.0.1")
    state, verifier = session.state, session.code_verifier
    assert state is not None
    assert verifier is not None
    store.claim(session)
    _authorize(store, session, TOKEN)
    other = _pending(store, "10.0.0.2")
    assert other.state is not None
    assert other.code_verifier is not None
    secrets_in_use = [
        TOKEN,
        session.id,
        other.id,
        other.state,
        other.code_verifier,
        "pat-1",
        "enc-1",
        "ehr.example",
        "10.0.0.2",
    ]
    for row in _rows(engine):
        stored = b" ".join(str(value).encode() for value in row if not isinstance(value, bytes))
        stored += b" " + bytes(row.payload)
        for secret in secrets_in_use:
            assert secret.encode() not in stored, secret
    engine.dispose()  # the WAL written back: the file on disk holds none of them either
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("sessions.db*"))
    assert on_disk
    for secret in secrets_in_use:
        assert secret.encode() not in on_disk, secret


def test_another_key_opens_nothing_and_the_row_is_dropped(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    mine = _store(engine, now)
    session = _pending(mine, "10.0.0.1")
    mine.claim(session)
    _authorize(mine, session, TOKEN)
    theirs = _store(engine, now, key=OTHER_KEY)
    with caplog.at_level(logging.WARNING):
        assert theirs.get(session.id) is None
    assert "does not open under THERAPY_CDS_SESSION_KEY" in caplog.text
    assert TOKEN not in caplog.text
    assert session.id not in caplog.text
    assert _rows(engine) == []
    assert mine.get(session.id) is None


def _tamper(engine: Engine, session: SmartSession, **values: Any) -> None:
    rows = _rows(engine)
    target = next(r for r in rows if mine_of(r, session))
    with engine.begin() as connection:
        connection.execute(update(table).where(table.c.id_hash == target.id_hash).values(**values))


def mine_of(row: Any, session: SmartSession) -> bool:
    return bool(row.id_hash == hashlib.sha256(session.id.encode()).hexdigest())


def test_an_altered_row_is_refused(engine: Engine) -> None:
    now = [1000.0]
    store = _store(engine, now, max_pending=10, max_pending_per_client=10)

    # one byte of the ciphertext flipped
    flipped = _pending(store, "a")
    payload = bytearray(next(r for r in _rows(engine) if mine_of(r, flipped)).payload)
    payload[20] ^= 0x01
    _tamper(engine, flipped, payload=bytes(payload))
    assert store.get(flipped.id) is None

    # another row's sealed payload moved under this id
    victim, donor = _pending(store, "a"), _pending(store, "b")
    donor_payload = next(r for r in _rows(engine) if mine_of(r, donor)).payload
    _tamper(engine, victim, payload=donor_payload)
    assert store.get(victim.id) is None
    assert _alive(store, donor)

    # a pending launch promoted to an authorized session by editing its stage
    promoted = _pending(store, "c")
    _tamper(engine, promoted, stage="authorized")
    assert store.get(promoted.id) is None

    # a pushed-back expiry does not outlive the sealed one
    extended = _pending(store, "d")
    _tamper(engine, extended, expires_at=now[0] + 10_000)
    now[0] += 61
    assert store.get(extended.id) is None

    # a payload cut short, or of another format
    now[0] += 1
    for payload in (b"", b"\x01short", b"\x02" + bytes(40)):
        cut = _pending(store, "e")
        _tamper(engine, cut, payload=payload)
        assert store.get(cut.id) is None
    assert store.get(donor.id) is None  # expired meanwhile
    assert _rows(engine) == []


def test_expired_rows_are_removed_by_the_next_launch_or_a_purge(engine: Engine) -> None:
    now = [1000.0]
    store = _store(engine, now, max_pending=100, max_pending_per_client=100, max_sessions=100)
    old = [_pending(store, f"10.0.0.{i}") for i in range(5)]
    signed_in = _pending(store, "10.0.1.1")
    _authorize(store, signed_in)
    store.shorten(signed_in, 5)
    now[0] += 30
    assert len(_rows(engine)) == 6
    fresh = _pending(store, "10.0.2.1")  # a launch sweeps every expired row, unread ones too
    assert len(_rows(engine)) == 6  # 5 pending still alive (60 s) + the new one
    assert store.get(signed_in.id) is None
    now[0] += 31
    assert store.purge() == 5
    rows = _rows(engine)
    assert len(rows) == 1
    assert mine_of(rows[0], fresh)
    assert all(store.get(s.id) is None for s in old)
    assert store.pending_count == 1
    assert store.authorized_count == 0


def test_a_launch_is_claimed_once_whichever_worker_is_asked(engine: Engine) -> None:
    now = [1000.0]
    workers = [_store(make_engine(str(engine.url)), now) for _ in range(4)]
    launch = _pending(workers[0], "10.0.0.1")
    copies = [w.get(launch.id) for w in workers for _ in range(2)]
    assert all(c is not None for c in copies)
    won: list[str | None] = []
    barrier = threading.Barrier(len(copies))

    def claim(i: int) -> None:
        copy = copies[i]
        assert copy is not None
        barrier.wait()
        won.append(workers[i // 2].claim(copy))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(copies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [w for w in won if w is not None] == [launch.code_verifier]
    claimed = workers[3].get(launch.id)
    assert claimed is not None
    assert claimed.state is None
    assert claimed.code_verifier is None
    assert workers[1].claim(claimed) is None
    for worker in workers:
        worker.engine.dispose()


def test_a_client_flooding_launches_only_pushes_out_its_own_pending_launches(
    engine: Engine,
) -> None:
    now = [1000.0]
    store = _store(engine, now, max_pending=10, max_pending_per_client=2)
    other = _pending(store, "10.0.0.2")
    signed_in = _pending(store, "10.0.0.3")
    _authorize(store, signed_in)
    flood = []
    for _ in range(200):
        now[0] += 0.01
        flood.append(_pending(store, "10.0.0.1"))
    assert store.get(flood[0].id) is None  # the flood's own oldest launches went
    assert _alive(store, flood[-1])
    assert _alive(store, flood[-2])
    assert _alive(store, other)  # another client's launch stays
    assert _alive(store, signed_in)
    assert store.pending_count == 3


def test_a_flood_from_many_clients_never_evicts_an_authorized_session(engine: Engine) -> None:
    now = [1000.0]
    store = _store(engine, now, max_pending=3, max_pending_per_client=2)
    signed_in = _pending(store, "10.0.0.1")
    _authorize(store, signed_in)
    launches = []
    for i in range(200):
        now[0] += 0.01
        launches.append(_pending(store, f"10.1.{i // 250}.{i % 250}"))
    assert store.pending_count == 3  # the global cap on pending launches
    assert store.get(launches[0].id) is None
    assert _alive(store, launches[-1])
    assert _alive(store, signed_in)
    assert store.authorized_count == 1


def test_when_the_authorized_pool_is_full_the_least_recently_used_session_goes(
    engine: Engine,
) -> None:
    now = [1000.0]
    store = _store(engine, now, max_sessions=2)
    first, second, third = (_pending(store, f"10.0.0.{i}") for i in range(3))
    _authorize(store, first)
    now[0] += 1
    _authorize(store, second)
    now[0] += 1
    assert _alive(store, first)  # first used again: second is now the oldest
    now[0] += 1
    _authorize(store, third)
    assert store.get(second.id) is None
    assert _alive(store, first)
    assert _alive(store, third)
    assert len(store) == 2


@pytest.mark.parametrize("cookie", ["", "x" * 129, "not-a-session"])
def test_any_cookie_value_is_no_session_or_an_error(engine: Engine, cookie: str) -> None:
    store = _store(engine, [1000.0])
    assert store.get(cookie) is None
    store.drop(cookie)


def test_a_key_that_is_not_32_bytes_is_refused(engine: Engine) -> None:
    with pytest.raises(SessionKeyError, match="32 bytes"):
        _store(engine, [0.0], key=b"short")


# --------------------------------------------------------------------------- where the key is


def test_the_settings_key_is_used_when_set(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path, session_key="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
    assert session_key(settings) == KEY
    assert not list(tmp_path.glob(f"*{KEY_FILE_SUFFIX}"))


def test_development_keeps_one_generated_key_beside_the_sqlite_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dev_settings(tmp_path)
    with caplog.at_level(logging.WARNING):
        first = session_key(settings)
    key_file = tmp_path / f"therapy-cds.db{KEY_FILE_SUFFIX}"
    assert "generated a key for the SMART sessions" in caplog.text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert session_key(settings) == first  # a restart, or another worker: the same key
    assert len(first) == 32
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_workers_starting_together_agree_on_one_development_key(tmp_path: Path) -> None:
    path = tmp_path / f"shared.db{KEY_FILE_SUFFIX}"
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        keys.append(development_key(path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8
    assert len(set(keys)) == 1


def test_a_damaged_development_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / f"therapy-cds.db{KEY_FILE_SUFFIX}"
    path.write_text("not a key\n", encoding="ascii")
    with pytest.raises(SessionKeyError, match=r"does not hold a session key.*delete it"):
        session_key(dev_settings(tmp_path))


def test_a_development_key_readable_by_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / f"therapy-cds.db{KEY_FILE_SUFFIX}"
    session_key(dev_settings(tmp_path))
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        session_key(dev_settings(tmp_path))
    assert "chmod 600" in caplog.text


def test_without_a_database_file_development_keeps_the_key_in_the_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dev_settings(tmp_path, database_url="sqlite://")
    with caplog.at_level(logging.WARNING):
        first, second = session_key(settings), session_key(settings)
    assert first != second
    assert "set it when running several" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_production_without_a_key_keeps_one_beside_the_sqlite_file_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text("[]")
    settings = Settings.model_construct(
        **dev_settings(tmp_path).model_dump()
        | {"dev_mode": False, "require_auth": True, "trusted_issuers_file": issuers}
    )
    with caplog.at_level(logging.WARNING):
        first, second = session_key(settings), session_key(settings)
    assert first == second
    assert len(list(tmp_path.glob(f"*{KEY_FILE_SUFFIX}"))) == 1
    assert "THERAPY_CDS_SESSION_KEY is not set" in caplog.text
    assert "openssl rand -base64 32" in caplog.text


def test_serve_refuses_a_damaged_development_key_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from plugin.cli import app

    (tmp_path / f"cds.db{KEY_FILE_SUFFIX}").write_text("?\n", encoding="ascii")
    monkeypatch.setenv("THERAPY_CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'cds.db'}")
    for name, value in (("DEV_MODE", "true"), ("REQUIRE_AUTH", "false")):
        monkeypatch.setenv(f"THERAPY_CDS_{name}", value)  # serve --dev sets them; restored
    result = CliRunner().invoke(app, ["serve", "--dev"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("therapy-cds: configuration error: cds.db.session-key does not")
