"""A FHIR Bulk Data server on loopback that serves the NDJSON files of a folder as an export.

A real HTTP server (``http.server``, one thread per connection) for the tests and the bulk
benchmark; it speaks just enough of Bulk Data 2.0 and SMART Backend Services to exercise a
client the way an EHR would:

* ``GET [base]/.well-known/smart-configuration``: the token endpoint and the accepted algorithms;
* ``POST /auth/token``: verifies the JWT client assertion (signature with the registered public
  key, ``iss`` = ``sub`` = client id, ``aud`` = this endpoint, not expired, ``jti`` not reused)
  and issues a random bearer token;
* kick-off ``GET [base]/$export``, ``[base]/Group/ID/$export``, ``[base]/Patient/$export``:
  checks ``Accept: application/fhir+json`` and ``Prefer: respond-async``, keeps the ``_type``
  and ``_since`` asked for, answers 202 with a ``Content-Location`` status URL;
* the status URL: 202 with ``Retry-After`` (seconds or an HTTP date) and ``X-Progress`` for the
  first ``in_progress_polls`` polls, then the manifest (one ``output`` per ``<Type>.ndjson`` of
  the folder in ``_type``; ``OperationOutcome.ndjson`` as ``error``), or an error
  OperationOutcome in ``fail_export`` mode; DELETE releases it;
* the files, with ``Range`` support, optionally gzip (``Content-Encoding: gzip`` or
  ``*.ndjson.gz`` files), optionally dropping the connection after ``drop_after`` bytes the
  first ``drop_times`` times a chosen file is asked for.

``expire_first_token`` revokes the first access token once it has been used, so the next call
is refused with 401 and the client must fetch a new one.

Run alone: .venv/bin/python bench/fake_bulk_server.py EXPORT_DIR --jwks PUBLIC_JWK.json
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey, import_key

TOKEN_PATH = "/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FHIR_PREFIX = "/fhir"


@dataclass
class Behaviour:
    in_progress_polls: int = 2
    retry_after: str = "seconds"  # or "date": an HTTP date one second ahead
    fail_export: bool = False
    expire_first_token: bool = False
    gzip: str = "none"  # "encoding": Content-Encoding gzip; "file": *.ndjson.gz files
    drop_file: str | None = None  # e.g. "Procedure"
    drop_after: int = 4096
    drop_times: int = 1
    require_auth: bool = True
    token_seconds: int = 300
    ranges: bool = True  # False: Range is ignored, every answer is the whole file (200)
    busy_files: int = 0  # the first N file requests answer 503 with Retry-After
    file_host: str | None = None  # e.g. "localhost": the manifest's file URLs name that host


@dataclass
class Record:
    """What the server saw (the tests assert on it)."""

    kickoffs: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0
    tokens_issued: int = 0
    unauthorized: int = 0
    deletes: int = 0
    busy: int = 0  # file requests answered 503
    file_requests: Counter[str] = field(default_factory=Counter)
    range_requests: Counter[str] = field(default_factory=Counter)


class FakeBulkServer:
    def __init__(
        self,
        export_dir: Path,
        client_id: str,
        public_key: RSAKey | ECKey | None,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.export_dir = export_dir
        self.client_id = client_id
        self.public_key = public_key
        self.behaviour = behaviour or Behaviour()
        self.record = Record()
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.used_jti: set[str] = set()
        self.first_token: str | None = None
        self.jobs: dict[str, dict[str, Any]] = {}
        self._packed: Path | None = None  # gzip copies of the files, made when first asked
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base = ""

    # ---- life cycle

    def __enter__(self) -> FakeBulkServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        port = self._httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{port}"
        self.base = self.origin + FHIR_PREFIX
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self.base

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._packed is not None:
            shutil.rmtree(self._packed, ignore_errors=True)

    # ---- the export

    def files(self, types: set[str] | None) -> tuple[list[tuple[str, Path]], list[Path]]:
        output, errors = [], []
        for path in sorted(self.export_dir.glob("*.ndjson")):
            kind = path.stem
            if kind == "OperationOutcome":
                errors.append(path)
            elif types is None or kind in types:
                output.append((kind, path))
        return output, errors

    def body_path(self, source: Path) -> Path:
        """The bytes to serve for ``source``: itself, or its gzip (made once)."""
        if self.behaviour.gzip == "none":
            return source
        with self.lock:
            if self._packed is None:
                self._packed = Path(tempfile.mkdtemp(prefix="fake-bulk-"))
            packed = self._packed / (source.name + ".gz")
            if not packed.exists():
                with source.open("rb") as raw, gzip.open(packed, "wb", compresslevel=1) as out:
                    shutil.copyfileobj(raw, out, 1 << 20)
        return packed

    def check_token(self, header: str | None) -> bool:
        if not self.behaviour.require_auth:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        token = header[len("Bearer ") :]
        with self.lock:
            expires = self.tokens.get(token)
            if expires is None or expires < time.monotonic():
                return False
            if self.behaviour.expire_first_token and token == self.first_token:
                del self.tokens[token]  # good for this one call, refused from the next on
            return True

    def issue_token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        def field_(name: str) -> str:
            return (form.get(name) or [""])[0]

        if field_("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if (
            field_("client_assertion_type")
            != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return 400, {"error": "invalid_request", "error_description": "assertion type"}
        if self.public_key is None:
            return 401, {"error": "invalid_client"}
        try:
            token = jwt.decode(field_("client_assertion"), self.public_key, ["RS384", "ES384"])
        except (JoseError, ValueError):
            return 401, {"error": "invalid_client", "error_description": "bad signature"}
        claims = token.claims
        now = time.time()
        if (
            claims.get("iss") != self.client_id
            or claims.get("sub") != self.client_id
            or claims.get("aud") != self.origin + TOKEN_PATH
            or not isinstance(claims.get("exp"), int)
            or claims["exp"] < now
            or claims["exp"] > now + 360
            or not claims.get("jti")
            or token.header.get("alg") not in ("RS384", "ES384")
        ):
            return 401, {"error": "invalid_client", "error_description": "claims"}
        with self.lock:
            if claims["jti"] in self.used_jti:
                return 401, {"error": "invalid_client", "error_description": "jti reused"}
            self.used_jti.add(claims["jti"])
            issued = secrets.token_urlsafe(24)
            self.tokens[issued] = time.monotonic() + self.behaviour.token_seconds
            if self.first_token is None:
                self.first_token = issued
            self.record.tokens_issued += 1
        return 200, {
            "access_token": issued,
            "token_type": "bearer",
            "expires_in": self.behaviour.token_seconds,
            "scope": field_("scope"),
        }


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBulkServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests and the benchmark print what matters

    # ---- helpers

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def _authorized(self) -> bool:
        if self.fake.check_token(self.headers.get("Authorization")):
            return True
        with self.fake.lock:
            self.fake.record.unauthorized += 1
        self._json(401, _outcome("login", "access token missing, unknown or expired"))
        return False

    # ---- routes

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        if path != TOKEN_PATH:
            self._json(404, _outcome("not-found", "no such endpoint"))
            return
        status, answer = self.fake.issue_token(parse_qs(body))
        self._json(status, answer)

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        if not self._authorized():
            return
        job = path.rsplit("/", 1)[-1]
        with self.fake.lock:
            found = self.fake.jobs.pop(job, None)
            self.fake.record.deletes += 1
        self._empty(202 if found else 404)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        if path == FHIR_PREFIX + "/.well-known/smart-configuration":
            self._json(
                200,
                {
                    "token_endpoint": self.fake.origin + TOKEN_PATH,
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                    "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                    "grant_types_supported": ["client_credentials"],
                    "capabilities": ["client-confidential-asymmetric"],
                },
            )
        elif path.endswith("/$export") and path.startswith(FHIR_PREFIX):
            self._kick_off(path[len(FHIR_PREFIX) : -len("/$export")], parse_qs(parts.query))
        elif path.startswith("/status/"):
            self._status(path.rsplit("/", 1)[-1])
        elif path.startswith("/files/"):
            self._file(path.split("/")[2:])
        else:
            self._json(404, _outcome("not-found", "no such endpoint"))

    def _kick_off(self, level: str, query: dict[str, list[str]]) -> None:
        if self.headers.get("Accept") != "application/fhir+json":
            self._json(400, _outcome("invalid", "Accept must be application/fhir+json"))
            return
        if self.headers.get("Prefer") != "respond-async":
            self._json(400, _outcome("invalid", "Prefer must be respond-async"))
            return
        if not self._authorized():
            return
        types = set(query["_type"][0].split(",")) if "_type" in query else None
        job = secrets.token_hex(8)
        with self.fake.lock:
            self.fake.jobs[job] = {"types": types, "polls": 0}
            self.fake.record.kickoffs.append(
                {
                    "level": level.strip("/") or "system",
                    "types": sorted(types) if types else None,
                    "since": query.get("_since", [None])[0],
                }
            )
        self._empty(202, {"Content-Location": f"{self.fake.origin}/status/{job}"})

    def _status(self, job: str) -> None:
        if not self._authorized():
            return
        behaviour = self.fake.behaviour
        with self.fake.lock:
            state = self.fake.jobs.get(job)
            self.fake.record.polls += 1
            if state is not None:
                state["polls"] += 1
        if state is None:
            self._json(404, _outcome("not-found", "no such export"))
            return
        if state["polls"] <= behaviour.in_progress_polls:
            wait = (
                "1"
                if behaviour.retry_after == "seconds"
                else formatdate(time.time() + 1, usegmt=True)
            )
            self._empty(
                202, {"Retry-After": wait, "X-Progress": f"poll {state['polls']}: writing files"}
            )
            return
        if behaviour.fail_export:
            self._json(500, _outcome("exception", "export failed: the database went away"))
            return
        output, errors = self.fake.files(state["types"])
        suffix = ".ndjson.gz" if behaviour.gzip == "file" else ".ndjson"
        origin = self.fake.origin
        if behaviour.file_host:
            origin = origin.replace("127.0.0.1", behaviour.file_host)
        self._json(
            200,
            {
                "transactionTime": "2026-01-01T00:00:00Z",
                "request": f"{self.fake.base}/$export",
                "requiresAccessToken": behaviour.require_auth,
                "output": [
                    {"type": kind, "url": f"{origin}/files/{job}/{path.stem}{suffix}"}
                    for kind, path in output
                ],
                "error": [
                    {
                        "type": "OperationOutcome",
                        "url": f"{origin}/files/{job}/{path.stem}{suffix}",
                    }
                    for path in errors
                ],
            },
        )

    def _file(self, parts: list[str]) -> None:
        if len(parts) != 2 or parts[0] not in self.fake.jobs:
            self._json(404, _outcome("not-found", "no such file"))
            return
        if not self._authorized():
            return
        name = parts[1].removesuffix(".gz").removesuffix(".ndjson")
        source = self.fake.export_dir / f"{name}.ndjson"
        if "/" in name or not source.is_file():
            self._json(404, _outcome("not-found", "no such file"))
            return
        behaviour = self.fake.behaviour
        body = self.fake.body_path(source)
        total = body.stat().st_size
        start = 0
        asked = self.headers.get("Range", "")
        with self.fake.lock:
            busy = self.fake.record.busy < behaviour.busy_files
            if busy:
                self.fake.record.busy += 1
        if busy:
            self._json(503, _outcome("transient", "busy"), {"Retry-After": "1"})
            return
        with self.fake.lock:
            self.fake.record.file_requests[name] += 1
            times = self.fake.record.file_requests[name]
            if asked:
                self.fake.record.range_requests[name] += 1
        if (
            behaviour.ranges
            and asked.startswith("bytes=")
            and asked.endswith("-")
            and asked[6:-1].isdigit()
        ):
            start = int(asked[6:-1])
            if start >= total:
                self._empty(416, {"Content-Range": f"bytes */{total}"})
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/fhir+ndjson")
        self.send_header("Accept-Ranges", "bytes")
        if behaviour.gzip == "encoding":
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(total - start))
        self.end_headers()
        drop = behaviour.drop_file == name and times <= behaviour.drop_times
        left = behaviour.drop_after if drop else total - start
        with body.open("rb") as handle:
            handle.seek(start)
            while left > 0:
                block = handle.read(min(left, 1 << 16))
                if not block:
                    break
                try:
                    self.wfile.write(block)
                except OSError:
                    return
                left -= len(block)
        if drop:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--client-id", default="therapy-cds-audit")
    parser.add_argument("--jwks", type=Path, help="the client's public key (JWK); none: no auth")
    args = parser.parse_args(argv)
    key = None
    if args.jwks:
        key = import_key(json.loads(args.jwks.read_text()))
        assert isinstance(key, RSAKey | ECKey)
    behaviour = Behaviour(require_auth=key is not None)
    with FakeBulkServer(args.export_dir, args.client_id, key, behaviour) as server:
        print(f"Bulk Data server at {server.base} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
