"""The EHR's FHIR server misbehaves: slow, down, answering 500, garbage, the wrong JSON, or
hanging up. Every time the service answers 412 within its FHIR deadline, and stays healthy:
``/healthz`` is fine and the next good request is answered normally.

The FHIR server is a real HTTP server on 127.0.0.1 (a thread of this process), so the service's
real HTTP client, timeouts and deadline are what is exercised.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.settings import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "sample_bundles"
SERVICE = "therapy-timed-codes"
TIMEOUT = 0.5  # per FHIR call
DEADLINE = 1.0  # all FHIR calls of one hook request
TOKEN = "fhir-access-token-not-logged"


class FakeFhir(BaseHTTPRequestHandler):
    """Answers FHIR reads and searches from one bundle, or misbehaves as ``mode`` says."""

    mode: ClassVar[str] = "ok"
    bundle: ClassVar[dict[str, Any]] = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/fhir+json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        mode = type(self).mode
        if mode == "slow":
            time.sleep(TIMEOUT * 4)
        if mode == "500":
            self._send(500, b'{"resourceType":"OperationOutcome"}')
            return
        if mode == "garbage":
            self._send(200, b"\x00\xffnot json at all <html>", "text/html")
            return
        if mode == "wrong-json":
            self._send(200, b'[1, 2, {"resourceType": 7}]')
            return
        if mode == "hang-up":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(200, json.dumps(self._answer()).encode())

    def _answer(self) -> dict[str, Any]:
        path = self.path.split("?", 1)[0].strip("/").removeprefix("fhir/")
        resources = [e["resource"] for e in type(self).bundle.get("entry", [])]
        if "/" in path:
            kind, ident = path.split("/", 1)
            for resource in resources:
                if resource["resourceType"] == kind and resource.get("id") == ident:
                    return resource
            return {"resourceType": "OperationOutcome", "issue": []}
        matches = [r for r in resources if r["resourceType"] == path]
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in matches],
        }


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a slow answer is expected here


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[str]:
    FakeFhir.bundle = json.loads((SAMPLES / "pair-no-modifier.json").read_text())
    server = QuietServer(("127.0.0.1", 0), FakeFhir)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    server.shutdown()
    server.server_close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/fhir"


#: An allow-listed FHIR server that is down: nothing listens on its port.
DOWN = _closed_port_url()


@pytest.fixture
async def client(fhir_server: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        require_auth=False,
        dev_mode=True,
        database_url=f"sqlite:///{tmp_path / 'faults.db'}",
        fhir_server_allowlist=[fhir_server, DOWN],
        fhir_timeout_seconds=TIMEOUT,
        fhir_deadline_seconds=DEADLINE,
        log_level="WARNING",
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c,
    ):
        yield c


def _request(fhir: str, *, prefetch: bool = False) -> dict[str, Any]:
    bundle = json.loads((SAMPLES / "pair-no-modifier.json").read_text())
    body = build_hook_request(bundle, fhir_server=fhir)
    if not prefetch:
        del body["prefetch"]
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "therapy-cds",
    }
    return body


@pytest.mark.anyio
async def test_a_healthy_fhir_server_fills_the_prefetch(
    client: httpx.AsyncClient, fhir_server: str
) -> None:
    FakeFhir.mode = "ok"
    response = await client.post(f"/cds-services/{SERVICE}", json=_request(fhir_server))
    assert response.status_code == 200
    topics = [c["source"]["topic"]["code"] for c in response.json()["cards"]]
    assert "E-PAIR-NO-MODIFIER" in topics


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["slow", "down", "500", "garbage", "wrong-json", "hang-up"])
async def test_a_failing_fhir_server_gives_412_within_the_deadline(
    client: httpx.AsyncClient,
    fhir_server: str,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    FakeFhir.mode = mode
    target = DOWN if mode == "down" else fhir_server
    started = time.monotonic()
    response = await client.post(f"/cds-services/{SERVICE}", json=_request(target))
    elapsed = time.monotonic() - started
    assert response.status_code == 412, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert elapsed < DEADLINE + 1.5, f"{mode}: answered after {elapsed:.2f} s"
    assert TOKEN not in caplog.text
    assert TOKEN not in response.text

    # ... and the service is still well: health, a request with prefetch, and a good server.
    assert (await client.get("/healthz")).status_code == 200
    with_prefetch = await client.post(
        f"/cds-services/{SERVICE}", json=_request(target, prefetch=True)
    )
    assert with_prefetch.status_code == 200
    FakeFhir.mode = "ok"
    recovered = await client.post(f"/cds-services/{SERVICE}", json=_request(fhir_server))
    assert recovered.status_code == 200
