"""A FHIR Bulk Data client: ``$export`` from an EHR into a local folder the audit reads.

The flow (FHIR Bulk Data Access 2.0):

1. **Kick-off** ``GET [base]/$export`` (system), ``[base]/Group/ID/$export`` or
   ``[base]/Patient/$export`` with ``Accept: application/fhir+json`` and
   ``Prefer: respond-async``; ``_type`` lists only the resource types the audit reads
   (:data:`EXPORT_TYPES`, taken from the mapper), ``_since`` asks for what changed since an
   instant (incremental audits). The server answers 202 and a status URL (``Content-Location``).
2. **Status** polled until 200 and the manifest, honouring ``Retry-After`` (seconds or an HTTP
   date) within :data:`MAX_WAIT_SECONDS`, doubling the wait when the server gives none. An error
   answer with an OperationOutcome ends the run with its diagnostics.
3. **Download** every ``output`` and ``error`` file, at most ``concurrency`` at a time, streamed
   to disk. A file whose connection drops is resumed with a ``Range`` request (or downloaded again
   when the server ignores ranges); gzip (``Content-Encoding: gzip`` or ``*.ndjson.gz``) is
   decompressed once the file is complete.

Authorization is SMART Backend Services: a JWT client assertion signed with RS384 or ES384
(``iss`` = ``sub`` = the client id, ``aud`` = the token endpoint, found in
``[base]/.well-known/smart-configuration``), exchanged for an access token that is reused until
it expires, and fetched again when it expires or the server answers 401.

The folder keeps a state file (:data:`STATE_FILE`: the request, the status URL, the manifest;
never a token). A run that stops half-way resumes on the next run with the same request:
polling where it was, finished files kept, partial files continued. A finished export, or one
for a different request, is replaced by a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from fhir_mappings import InputError, read_input
from fhir_mappings.mapper import MAPPED_TYPES, PARTY_TYPES
from plugin.keys import PrivateKeyError, load_private_key

# What the audit reads: the mapped types (the rules' input) and the parties whose names the
# by-practitioner / by-site tables show. Everything else would be downloaded to be skipped.
EXPORT_TYPES: tuple[str, ...] = tuple(sorted(MAPPED_TYPES | PARTY_TYPES))

STATE_FILE = "_bulk_export.state"  # no .json suffix: the audit must not read it as input
PART_SUFFIX = ".part"
FHIR_JSON = "application/fhir+json"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 300  # the longest lifetime the SMART Backend Services spec allows
TOKEN_MARGIN_SECONDS = 30  # a token this close to expiry is replaced before use
FIRST_WAIT_SECONDS = 1.0
MIN_WAIT_SECONDS = 0.5  # "Retry-After: 0" or a date just past: still not a busy loop
MAX_WAIT_SECONDS = 120.0  # no single wait between two status polls is longer
DOWNLOAD_ATTEMPTS = 4  # per file and run: the first try and three resumes
KEY_FILE_BYTES = 1 << 20  # a key file, even a JWK Set, is far smaller
_NOT_A_KEY = "not a private RSA or EC key (PEM, JWK or JWK Set)"


class BulkExportError(Exception):
    """The export could not be obtained; ``str(error)`` is the one line to show."""


class _ExportFailedError(BulkExportError):
    """The server ended the export (error answer on the status URL): not to be resumed."""


class BulkProgress(Protocol):
    """What the client reports while it works (the CLI draws it with rich)."""

    def waiting(self, status: str) -> None: ...

    def downloading(self, files: int) -> None: ...

    def downloaded(self, done: int, total_known: int) -> None: ...


class _Quiet:
    def waiting(self, status: str) -> None:
        pass

    def downloading(self, files: int) -> None:
        pass

    def downloaded(self, done: int, total_known: int) -> None:
        pass


# ---------------------------------------------------------------------------------- request


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """Which export to ask for. ``url`` is the FHIR base, ``[base]/Group/ID`` or
    ``[base]/Patient`` (``/$export`` at the end is optional)."""

    url: str
    since: datetime | None = None
    types: tuple[str, ...] = EXPORT_TYPES

    @property
    def export_url(self) -> str:
        return f"{_target(self.url)}/$export"

    @property
    def fhir_base(self) -> str:
        target = _target(self.url)
        if match := re.search(r"/Group/[A-Za-z0-9\-.]{1,64}$", target):
            return target[: match.start()]
        if target.endswith("/Patient"):
            return target[: -len("/Patient")]
        return target

    @property
    def level(self) -> str:
        base = self.fhir_base
        target = _target(self.url)
        return "system" if target == base else target[len(base) + 1 :]

    def params(self) -> dict[str, str]:
        params = {"_type": ",".join(self.types)}
        if self.since is not None:
            params["_since"] = self.since.isoformat(timespec="seconds")
        return params

    def key(self) -> str:
        """What identifies the request in the state file."""
        return json.dumps([self.export_url, self.params()], sort_keys=True)


def _target(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BulkExportError(
            f"--fhir-export {url!r}: not an http(s) URL; give the FHIR base URL, "
            "[base]/Group/ID or [base]/Patient"
        )
    if parts.query or parts.fragment:
        raise BulkExportError(
            f"--fhir-export {url!r}: give the URL without a query; the audit chooses _type, "
            "and --since sets _since"
        )
    target = url.rstrip("/")
    return target.removesuffix("/$export").rstrip("/")


def parse_since(text: str) -> datetime:
    """``--since``: an ISO 8601 instant or date; a time without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BulkExportError(
            f"--since {text!r}: not a date or instant; write it like 2025-01-31 or "
            "2025-01-31T08:00:00+00:00"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------------ auth


@dataclass(frozen=True, slots=True)
class ClientKey:
    key: ECKey | RSAKey
    alg: str
    kid: str


def load_client_key(path: Path, kid: str | None = None) -> ClientKey:
    """The private key for the client assertion: PEM (RSA or EC P-384), a JWK or a JWK Set
    (``kid`` picks the key). RSA signs RS384, P-384 signs ES384 (SMART Backend Services)."""
    where = f"--private-key {path}"
    try:
        raw = read_input(path, KEY_FILE_BYTES)  # a regular file only (never waits on a FIFO)
    except InputError as exc:
        raise BulkExportError(f"--private-key {exc}") from None
    try:
        key = load_private_key(raw, where, kid)
    except PrivateKeyError as exc:
        raise BulkExportError(str(exc)) from None
    if isinstance(key, ECKey) and key.get("crv") != "P-384":
        raise BulkExportError(
            f"{where}: an EC key must be on curve P-384 (ES384); this one is {key.get('crv')}"
        )
    alg = "RS384" if isinstance(key, RSAKey) else "ES384"
    return ClientKey(key, alg, kid or key.kid or key.thumbprint())


class BackendAuth:
    """SMART Backend Services: an access token for ``client_id``, cached until it expires."""

    def __init__(self, client_id: str, key: ClientKey, scope: str) -> None:
        self.client_id = client_id
        self.key = key
        self.scope = scope
        self.token_url: str | None = None
        self._token: str | None = None
        self._expires = 0.0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.tokens_fetched = 0

    def _guard(self) -> asyncio.Lock:
        """One token fetch at a time, per event loop (the object may serve several runs)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def assertion(self, audience: str) -> str:
        now = int(time.time())
        header = {"alg": self.key.alg, "typ": "JWT", "kid": self.key.kid}
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(header, claims, self.key.key, algorithms=[self.key.alg])

    async def header(self, client: httpx.AsyncClient, fhir_base: str) -> str:
        async with self._guard():
            if self._token is None or time.monotonic() >= self._expires:
                await self._fetch(client, fhir_base)
            assert self._token is not None
            return f"Bearer {self._token}"

    def expire(self, used: str) -> None:
        """The server refused ``used`` (401): the next call fetches a new token."""
        if self._token is not None and used == f"Bearer {self._token}":
            self._token = None

    async def _fetch(self, client: httpx.AsyncClient, fhir_base: str) -> None:
        if self.token_url is None:
            self.token_url = await self._discover(client, fhir_base)
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(self.token_url),
        }
        try:
            response = await client.post(
                self.token_url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise BulkExportError(f"{self.token_url}: {_network(exc)}") from None
        body = _json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            reason = ""
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                reason = f" ({body['error']}"
                described = body.get("error_description")
                reason += f": {described})" if isinstance(described, str) else ")"
            raise BulkExportError(
                f"{self.token_url}: the token request was refused with HTTP "
                f"{response.status_code}{reason}; check --client-id, --private-key and that "
                "the EHR has the client's public key"
            )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise BulkExportError(f"{self.token_url}: the token answer has no access_token")
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300
        self._token = token
        # replaced a little before it runs out (a tenth of its life, at most TOKEN_MARGIN)
        self._expires = time.monotonic() + seconds - min(TOKEN_MARGIN_SECONDS, seconds / 10)
        self.tokens_fetched += 1

    async def _discover(self, client: httpx.AsyncClient, fhir_base: str) -> str:
        url = f"{fhir_base}/.well-known/smart-configuration"
        try:
            response = await client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise BulkExportError(f"{url}: {_network(exc)}") from None
        body = _json_or_none(response)
        endpoint = body.get("token_endpoint") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(endpoint, str) or not endpoint:
            raise BulkExportError(
                f"{url}: no token_endpoint (HTTP {response.status_code}); the server does not "
                "announce SMART Backend Services"
            )
        if url.startswith("https:") and not endpoint.startswith("https:"):
            raise BulkExportError(
                f"{url}: the token endpoint {_safe(endpoint)} is not https; refused (the token "
                "would travel in clear)"
            )
        algorithms = body.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algorithms, list) and algorithms and self.key.alg not in algorithms:
            raise BulkExportError(
                f"{url}: the server does not accept {self.key.alg} client assertions "
                f"(it accepts {', '.join(map(str, algorithms))}); use another key type"
            )
        return endpoint


def default_scope(types: tuple[str, ...]) -> str:
    return " ".join(f"system/{t}.read" for t in types)


# ---------------------------------------------------------------------------------- client


@dataclass(slots=True)
class ExportResult:
    folder: Path
    files: list[Path]
    transaction_time: str | None
    resumed: bool
    downloaded_bytes: int = 0


@dataclass(slots=True)
class _State:
    request: str
    status_url: str | None = None
    manifest: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    complete: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "status_url": self.status_url,
            "manifest": self.manifest,
            "files": self.files,
            "complete": self.complete,
        }


class BulkClient:
    """One export into ``folder`` (see the module docstring)."""

    def __init__(
        self,
        request: ExportRequest,
        folder: Path,
        auth: BackendAuth | None = None,
        *,
        concurrency: int = 4,
        timeout: float = 60.0,
        progress: BulkProgress | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.request = request
        self.folder = folder
        self.auth = auth
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.progress: BulkProgress = progress or _Quiet()
        self._sleep = sleep
        self._transport = transport
        self.downloaded_bytes = 0  # received in this run (resumed files count what was left)
        self._sizes: dict[str, int] = {}  # file -> its full size, once the server says
        self._have: dict[str, int] = {}  # file -> bytes on disk

    def run(self) -> ExportResult:
        return asyncio.run(self.export())

    async def export(self) -> ExportResult:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BulkExportError(
                f"{self.folder}: cannot hold the export ({exc.strerror or 'error'})"
            ) from None
        state, resumed = self._load_state()
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            transport=self._transport,
            follow_redirects=True,
        ) as client:
            if state.manifest is None:
                if state.status_url is None:
                    state.status_url = await self._kick_off(client)
                    self._save(state)
                try:
                    state.manifest = await self._poll(client, state.status_url)
                except _ExportFailedError as failed:
                    state.status_url = None  # the next run asks for a new export
                    self._save(state)
                    raise BulkExportError(str(failed)) from None
                self._save(state)
            files = await self._download_all(client, state)
            state.complete = True
            self._save(state)
            await self._release(client, state.status_url)
        transaction = state.manifest.get("transactionTime") if state.manifest else None
        return ExportResult(
            self.folder,
            files,
            transaction if isinstance(transaction, str) else None,
            resumed,
            self.downloaded_bytes,
        )

    # ---- state

    def _state_path(self) -> Path:
        return self.folder / STATE_FILE

    def _load_state(self) -> tuple[_State, bool]:
        key = self.request.key()
        path = self._state_path()
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _State(key), False
        except (OSError, ValueError):
            saved = None
        if (
            isinstance(saved, dict)
            and saved.get("request") == key
            and not saved.get("complete")
            and (saved.get("manifest") is None or isinstance(saved.get("manifest"), dict))
        ):
            status = saved.get("status_url")
            state = _State(
                key,
                status if isinstance(status, str) else None,
                saved.get("manifest"),
                [f for f in saved.get("files", []) if isinstance(f, str)],
            )
            return state, state.status_url is not None or state.manifest is not None
        # a finished export or another request: its files give way to the new export
        old = saved.get("files", []) if isinstance(saved, dict) else []
        for name in old:
            if isinstance(name, str) and "/" not in name and not name.startswith("."):
                for stale in (self.folder / name, self.folder / (name + PART_SUFFIX)):
                    stale.unlink(missing_ok=True)
        return _State(key), False

    def _save(self, state: _State) -> None:
        path = self._state_path()
        temporary = path.with_name(path.name + ".new")
        temporary.write_text(json.dumps(state.to_json(), indent=1), encoding="utf-8")
        os.replace(temporary, path)

    # ---- HTTP helpers

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        params: Mapping[str, str] | None = None,
        authorize: bool = True,
        stream: bool = False,
    ) -> httpx.Response:
        """One request; with auth, a 401 fetches a new token and tries once more."""
        for attempt in (1, 2):
            sent = dict(headers)
            if authorize and self.auth is not None:
                sent["Authorization"] = await self.auth.header(client, self.request.fhir_base)
            try:
                built = client.build_request(method, url, headers=sent, params=params)
                response = await client.send(built, stream=stream)
            except httpx.HTTPError as exc:
                raise BulkExportError(f"{_safe(url)}: {_network(exc)}") from None
            if response.status_code == 401 and authorize and self.auth is not None and attempt == 1:
                await response.aclose()
                self.auth.expire(sent["Authorization"])
                continue
            if response.status_code == 401:
                await response.aclose()
                what = (
                    "refused the access token"
                    if self.auth is not None
                    else "needs authorization; give --client-id and --private-key"
                )
                raise BulkExportError(f"{_safe(url)}: HTTP 401, the server {what}")
            return response
        raise AssertionError("unreachable")

    # ---- kick-off and status

    async def _kick_off(self, client: httpx.AsyncClient) -> str:
        url = self.request.export_url
        response = await self._send(
            client,
            "GET",
            url,
            {"Accept": FHIR_JSON, "Prefer": "respond-async"},
            params=self.request.params(),
        )
        if response.status_code != 202:
            raise BulkExportError(
                f"{url}: the export was not started (HTTP {response.status_code}"
                f"{_outcome_text(response)})"
            )
        location = response.headers.get("Content-Location")
        if not location:
            raise BulkExportError(f"{url}: HTTP 202 without a Content-Location status URL")
        return str(response.url.join(location))

    async def _poll(self, client: httpx.AsyncClient, status_url: str) -> dict[str, Any]:
        wait = FIRST_WAIT_SECONDS
        while True:
            response = await self._send(client, "GET", status_url, {"Accept": "application/json"})
            code = response.status_code
            if code == 200:
                manifest = _json_or_none(response)
                if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                    raise BulkExportError(
                        f"{_safe(status_url)}: the export finished but its manifest is not "
                        "JSON with an output list"
                    )
                return manifest
            if code in (202, 429, 502, 503, 504):  # running, or busy / a proxy hiccup
                text = response.headers.get("X-Progress") or (
                    "in progress" if code == 202 else "server busy"
                )
                self.progress.waiting(text[:80])
                told = retry_after(response.headers.get("Retry-After"))
                delay = min(
                    MAX_WAIT_SECONDS, max(MIN_WAIT_SECONDS, told if told is not None else wait)
                )
                wait = min(MAX_WAIT_SECONDS, wait * 2)
                await self._sleep(delay)
                continue
            if code in (404, 410):
                raise _ExportFailedError(
                    f"{_safe(status_url)}: the export is gone (HTTP {code}); it was cancelled "
                    "or expired. Run the command again to start a new one"
                )
            raise _ExportFailedError(
                f"{_safe(status_url)}: the export failed (HTTP {code}{_outcome_text(response)})"
            )

    async def _release(self, client: httpx.AsyncClient, status_url: str | None) -> None:
        """Tell the server the files are no longer needed (a courtesy the spec asks for)."""
        if status_url is None:
            return
        with contextlib.suppress(BulkExportError):
            response = await self._send(client, "DELETE", status_url, {})
            await response.aclose()

    # ---- downloads

    async def _download_all(self, client: httpx.AsyncClient, state: _State) -> list[Path]:
        assert state.manifest is not None
        manifest = state.manifest
        needs_token = manifest.get("requiresAccessToken") is True
        trusted = {_origin(self.request.fhir_base), _origin(state.status_url or "")}
        planned: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        for group in ("output", "error"):
            entries = manifest.get(group) or []
            if not isinstance(entries, list):
                continue
            for entry in entries:
                url = entry.get("url") if isinstance(entry, dict) else None
                kind = entry.get("type") if isinstance(entry, dict) else None
                if not isinstance(url, str) or not url:
                    continue
                if needs_token and self.auth is not None and _origin(url) not in trusted:
                    raise BulkExportError(
                        f"{_safe(url)}: the manifest wants the access token sent to another "
                        "host than the FHIR server's; refused (the token is not given away)"
                    )
                label = kind if isinstance(kind, str) and re.fullmatch(r"[A-Za-z]+", kind) else "x"
                if group == "error":
                    label = f"error-{label}"
                seen[label] = seen.get(label, 0) + 1
                planned.append((f"{label}.{seen[label]:03d}.ndjson", url))
        state.files = [name for name, _ in planned]
        self._save(state)
        self.progress.downloading(len(planned))
        limit = asyncio.Semaphore(self.concurrency)

        async def one(name: str, url: str) -> Path:
            async with limit:
                return await self._download(client, name, url, needs_token)

        # every file gets its chance (a failed one does not stop the others, so a rerun has
        # less to fetch); then the first failure, if any, ends the run
        results = await asyncio.gather(
            *(one(name, url) for name, url in planned), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [cast(Path, result) for result in results]

    async def _download(
        self, client: httpx.AsyncClient, name: str, url: str, needs_token: bool
    ) -> Path:
        final = self.folder / name
        if final.exists():
            return final  # finished on an earlier run
        part = self.folder / (name + PART_SUFFIX)
        failure = ""
        for _ in range(DOWNLOAD_ATTEMPTS):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Accept": "application/fhir+ndjson", "Accept-Encoding": "gzip"}
            if have:
                headers["Range"] = f"bytes={have}-"
            response = await self._send(
                client, "GET", url, headers, authorize=needs_token, stream=True
            )
            try:
                code = response.status_code
                if code == 416 and have:  # nothing left past what we have, or a stale part
                    part.unlink()
                    failure = "the server refused to resume it"
                    continue
                if code in (429, 503):  # busy: wait as told (bounded), then try again
                    told = retry_after(response.headers.get("Retry-After"))
                    failure = f"the server was busy (HTTP {code})"
                    await self._sleep(min(MAX_WAIT_SECONDS, told or FIRST_WAIT_SECONDS))
                    continue
                if code not in (200, 206):
                    body = await response.aread()
                    raise BulkExportError(
                        f"{_safe(url)}: download refused (HTTP {code}"
                        f"{_outcome_text(response, body)})"
                        + (
                            f"; the export's files have expired: delete {self._state_path()} "
                            "to start a new export"
                            if code in (404, 410)
                            else ""
                        )
                    )
                encoding = response.headers.get("Content-Encoding", "identity").lower()
                if encoding not in ("identity", "gzip"):
                    raise BulkExportError(
                        f"{_safe(url)}: unsupported Content-Encoding {encoding!r}"
                    )
                append = code == 206 and _range_start(response) == have
                if code == 206 and not append:
                    raise BulkExportError(f"{_safe(url)}: the server resumed at the wrong offset")
                expected = response.headers.get("Content-Length")
                if expected is not None and expected.isdigit():
                    self._sizes[name] = (have if append else 0) + int(expected)
                written = 0
                self._have[name] = have if append else 0
                try:
                    with part.open("ab" if append else "wb") as sink:
                        async for block in response.aiter_raw():
                            sink.write(block)
                            written += len(block)
                            self.downloaded_bytes += len(block)
                            self._have[name] += len(block)
                            self.progress.downloaded(
                                sum(self._have.values()), sum(self._sizes.values())
                            )
                except httpx.HTTPError as exc:
                    failure = _network(exc)
                    continue
                if expected is not None and expected.isdigit() and written < int(expected):
                    failure = f"the connection ended after {written} of {expected} bytes"
                    continue
            finally:
                await response.aclose()
            await asyncio.to_thread(_finish, part, final)  # gunzip off the event loop
            return final
        raise BulkExportError(
            f"{_safe(url)}: download failed {DOWNLOAD_ATTEMPTS} times ({failure}); run the same "
            "command again to resume it"
        )


def _finish(part: Path, final: Path) -> None:
    """A complete download becomes its final name, gunzipped when it came compressed."""
    with part.open("rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    if not compressed:
        os.replace(part, final)
        return
    unpacked = final.with_name(final.name + ".gunzip")
    try:
        with gzip.open(part, "rb") as source, unpacked.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    except (OSError, EOFError):
        unpacked.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
        raise BulkExportError(
            f"{final.name}: the downloaded file is damaged gzip; run the command again to "
            "download it anew"
        ) from None
    os.replace(unpacked, final)
    part.unlink()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _range_start(response: httpx.Response) -> int | None:
    found = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(found.group(1)) if found else None


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds from now: delay-seconds or an HTTP date; None if absent or
    unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def _json_or_none(response: httpx.Response, body: bytes | None = None) -> Any:
    try:
        return json.loads(body if body is not None else response.content)
    except (ValueError, httpx.ResponseNotRead):
        return None


def _outcome_text(response: httpx.Response, body: bytes | None = None) -> str:
    """``": diagnostics"`` from an OperationOutcome answer (at most 300 characters)."""
    outcome = _json_or_none(response, body)
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    said = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
        code = issue.get("code")
        if isinstance(text, str) and text:
            said.append(text)
        elif isinstance(code, str):
            said.append(code)
    joined = "; ".join(said)
    return f": {joined[:300]}" if joined else ""


def _network(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect"
    return f"connection failed ({type(exc).__name__})"


def _safe(url: str) -> str:
    """A URL for messages: without its query (signed file URLs carry credentials there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
