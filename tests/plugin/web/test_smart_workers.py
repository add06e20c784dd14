"""The SMART EHR launch across two real ``therapy-cds serve`` processes sharing one SQLite file,
each request of the launch sent to the other process than the one before -- what a load balancer
without sticky sessions does. The fake EHR (authorization and FHIR server) runs on loopback.

launch (A) -> the EHR's authorize redirect -> callback with the code (B) -> token exchange (B)
-> the visit's page (A) -> the page with another payer rule (B); the callback replayed (A) is
refused, and of two callbacks racing on A and B with one code exactly one exchanges it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fake_ehr import FakeEhr, load_bundle_resources, make_fake_ehr_app
from web_support import LiveServer, free_port

from plugin.web.smart_session import COOKIE_NAME, KEY_FILE_SUFFIX

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from service_proc import Service, running_service  # noqa: E402

pytestmark = pytest.mark.slow
ENCOUNTER = "enc-dario-overlap"
SESSION_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


@dataclass
class TwoWorkers:
    ehr: FakeEhr
    a: Service
    b: Service
    database: Path


@contextlib.contextmanager
def two_workers(tmp_path: Path, *, session_key: str | None) -> Iterator[TwoWorkers]:
    port = free_port()
    resources = load_bundle_resources("overlapping-time-blocks.json")
    assert any(r.get("id") == ENCOUNTER for r in resources)
    ehr = FakeEhr(
        base=f"http://127.0.0.1:{port}",
        resources=resources,
        app_context=json.dumps({"encounter": ENCOUNTER}),
    )
    database = tmp_path / "shared.db"
    env = {
        "THERAPY_CDS_DATABASE_URL": f"sqlite:///{database}",
        "THERAPY_CDS_FHIR_SERVER_ALLOWLIST": ehr.fhir_base,
        "THERAPY_CDS_LOG_LEVEL": "INFO",
    }
    if session_key is not None:
        env["THERAPY_CDS_SESSION_KEY"] = session_key
    with (
        LiveServer(make_fake_ehr_app(ehr), port=port),
        running_service(env, log_dir=tmp_path) as a,
        running_service(env, log_dir=tmp_path) as b,
    ):
        yield TwoWorkers(ehr, a, b, database)


def _on(service: Service, url: str) -> str:
    """``url``'s path and query at ``service`` (a load balancer sending it there)."""
    parts = urlsplit(url)
    return f"{service.base_url}{parts.path}?{parts.query}"


def _get(client: httpx.Client, url: str, cookie: str | None = None) -> httpx.Response:
    """GET ``url`` carrying the session cookie ``cookie`` (a browser on one load-balanced host),
    and nothing else the client may have kept."""
    client.cookies.clear()
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {}
    return client.get(url, headers=headers)


def _get_alone(url: str, cookie: str) -> httpx.Response:
    """:func:`_get` on a client of its own (requests sent at the same time)."""
    with httpx.Client(timeout=60) as client:
        return _get(client, url, cookie)


def _cookie(response: httpx.Response) -> str:
    value = response.cookies.get(COOKIE_NAME)
    assert value, response.headers.get("set-cookie")
    return value


def _authorize(client: httpx.Client, workers: TwoWorkers, launch: httpx.Response) -> str:
    """The EHR's authorize answer: the redirect back to the app, with the code and state."""
    assert launch.status_code == 302, launch.text
    assert launch.headers["location"].startswith(f"{workers.ehr.base}/auth/authorize?")
    back = client.get(launch.headers["location"])
    assert back.status_code == 302, back.text
    location = back.headers["location"]
    assert urlsplit(location).path == "/smart/app"
    return location


@pytest.mark.parametrize("session_key", [SESSION_KEY, None], ids=["key-set", "dev-key-file"])
def test_an_ehr_launch_alternating_between_two_serve_processes(
    tmp_path: Path, session_key: str | None
) -> None:
    with two_workers(tmp_path, session_key=session_key) as workers, httpx.Client(timeout=60) as c:
        a, b, ehr = workers.a, workers.b, workers.ehr
        assert a.process.pid != b.process.pid

        launch = c.get(f"{a.base_url}/smart/launch", params={"iss": ehr.fhir_base, "launch": "L1"})
        cookie = _cookie(launch)
        set_cookie = launch.headers["set-cookie"]
        assert "HttpOnly" in set_cookie
        assert "SameSite=lax" in set_cookie
        assert "Secure" not in set_cookie  # plain http on loopback
        callback_url = _authorize(c, workers, launch)

        callback = _get(c, _on(b, callback_url), cookie)
        assert callback.status_code == 303, callback.text
        assert urlsplit(callback.headers["location"]).path == "/smart/app"
        assert ehr.pkce_verified == 1

        page = _get(c, f"{a.base_url}/smart/app", cookie)
        assert page.status_code == 200, page.text
        assert 'data-ref="Procedure/proc-dario-overlap-1"' in page.text
        assert 'data-rule="E-PAIR-SAME-TIMEBLOCK"' in page.text
        other_rule = _get(c, f"{b.base_url}/smart/app?payerRule=ama", cookie)
        assert other_rule.status_code == 200, other_rule.text
        assert 'data-ref="Procedure/proc-dario-overlap-2"' in other_rule.text

        replay = _get(c, _on(a, callback_url), cookie)
        assert replay.status_code == 400
        assert "already used" in replay.text
        assert len(ehr.token_requests) == 1
        assert _get(c, f"{a.base_url}/smart/app").status_code == 401  # no cookie, no session

        # Two callbacks with one code at once, one on each process: one exchange, one refusal.
        second = c.get(f"{b.base_url}/smart/launch", params={"iss": ehr.fhir_base, "launch": "L2"})
        second_cookie = _cookie(second)
        second_back = _authorize(c, workers, second)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            raced = list(
                pool.map(
                    lambda service: _get_alone(_on(service, second_back), second_cookie),
                    (a, b),
                )
            )
        assert sorted(r.status_code for r in raced) == [303, 400]
        assert len(ehr.token_requests) == 2
        assert _get(c, f"{a.base_url}/smart/app", second_cookie).status_code == 200
        assert _get(c, f"{b.base_url}/smart/app", cookie).status_code == 200

        tokens = list(ehr.tokens)
        assert len(tokens) == 2

    # Each process served its share: the launch on A, the first token exchange on B.
    log_a, log_b = a.log.read_text(), b.log.read_text()
    assert "smart launch started kind=ehr" in log_a
    assert "smart token exchange ok" in log_b
    with sqlite3.connect(workers.database) as connection:
        rows = connection.execute("SELECT stage, payload FROM smart_sessions").fetchall()
    assert sorted(stage for stage, _ in rows) == ["authorized", "authorized"]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("shared.db*"))
    for secret in (*tokens, cookie, second_cookie, "pat-dario"):
        assert secret.encode() not in stored
        assert secret not in log_a
        assert secret not in log_b
    key_file = tmp_path / f"shared.db{KEY_FILE_SUFFIX}"
    assert key_file.exists() is (session_key is None)
