"""FHIR server fallback for prefetch (P-1, P-2, P-7..P-13, C-9, C-10).

Keys the client did not satisfy -- absent, or reported as an ``OperationOutcome`` -- are fetched
from ``fhirServer`` with the ``fhirAuthorization`` bearer token, all keys in parallel, each call
with its own timeout inside one overall deadline. Prefetched searchsets with a ``next`` link are
completed page by page up to a bound (P-10). ``null`` keys are never refetched (P-8).

SSRF guard: only servers matching ``fhir_server_allowlist`` are ever contacted, compared on
parsed scheme, host, port and path segments (``https://ehr.example.org.evil.com`` does not match
``https://ehr.example.org``); ``next`` links must stay under the same server; redirects are not
followed. The access token is kept only for the life of the invocation and never logged (C-9).
Failure reasons name what went wrong, never a URL or its query values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from cds_hooks.config import CdsHooksConfig
from cds_hooks.errors import PrefetchUnavailable
from cds_hooks.http_pool import HttpPool
from cds_hooks.models import CdsRequest
from cds_hooks.prefetch import (
    Prefetch,
    PrefetchEntry,
    PrefetchState,
    classify_prefetch_value,
    initial_entries,
    next_link,
    render_template,
)
from cds_hooks.service import CdsService, FhirAccess

__all__ = [
    "FhirFallback",
    "FhirSession",
    "RedactHttpxUrls",
    "ResponseTooLarge",
    "read_capped",
    "redact_httpx_logs",
    "server_allowed",
    "url_within",
]

logger = logging.getLogger("cds_hooks.fhir")

JsonObject = dict[str, Any]
_DEFAULT_PORTS = {"http": 80, "https": 443}


# ---------------------------------------------------------------- httpx request logs


class RedactHttpxUrls(logging.Filter):
    """httpx logs every request URL at INFO; for FHIR searches that URL holds patient ids in
    its path and query. Keep only the origin so no patient data reaches the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("HTTP Request:")
            and isinstance(record.args, tuple)
            and len(record.args) >= 2
        ):
            url = record.args[1]
            origin = (
                f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"
                if isinstance(url, httpx.URL)
                else "-"
            )
            record.args = (record.args[0], f"{origin}/…", *record.args[2:])
        return True


def redact_httpx_logs() -> None:
    """Install :class:`RedactHttpxUrls` on the ``httpx`` logger once (idempotent)."""
    target = logging.getLogger("httpx")
    if not any(isinstance(f, RedactHttpxUrls) for f in target.filters):
        target.addFilter(RedactHttpxUrls())


# ---------------------------------------------------------------- URL matching (SSRF guard)


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]


def _parse(url: str, *, allow_query: bool) -> _Url | None:
    if not isinstance(url, str) or any(ch in url for ch in "\\\t\r\n ") or len(url) > 4096:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or parts.fragment:
        return None
    if parts.query and not allow_query:
        return None
    lowered = parts.path.lower()
    if "%2e" in lowered or "%2f" in lowered or "%5c" in lowered:
        return None
    segments = tuple(s for s in parts.path.split("/") if s)
    if any(s in (".", "..") for s in segments):
        return None
    host = parts.hostname.lower().rstrip(".")
    return _Url(scheme, host, port or _DEFAULT_PORTS[scheme], segments)


def url_within(url: str, base: str, *, allow_query: bool = False) -> bool:
    """True when ``url`` is ``base`` or below it: same scheme, host and port, and the base's
    path segments as a prefix of the URL's. No string-prefix tricks get through."""
    target, root = _parse(url, allow_query=allow_query), _parse(base, allow_query=False)
    if target is None or root is None:
        return False
    return (target.scheme, target.host, target.port) == (
        root.scheme,
        root.host,
        root.port,
    ) and target.segments[: len(root.segments)] == root.segments


def server_allowed(fhir_server: str, allowlist: Sequence[str]) -> bool:
    """P-12 with an allowlist: may this ``fhirServer`` be contacted at all?"""
    return any(url_within(fhir_server, entry) for entry in allowlist)


# ---------------------------------------------------------------- bounded reads


class ResponseTooLarge(Exception):  # noqa: N818 -- a refusal, not a bug
    """An answer passed the byte cap; it was not read further."""


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body of a *streamed* ``response``, refused as soon as it passes ``limit`` bytes.

    A declared ``Content-Length`` over the cap is refused before reading; otherwise the body is
    read chunk by chunk (decoded) and reading stops at the first byte over the cap, so memory
    stays bounded by ``limit`` whatever the server sends.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- one invocation's FHIR access


class _FetchFailed(Exception):  # noqa: N818 -- internal signal, carries a safe reason
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FhirSession(FhirAccess):
    """FHIR access bound to one invocation: base URL, optional bearer token, deadline.

    The token lives only here, for the invocation's lifetime, and is left out of ``repr``.
    """

    def __init__(
        self,
        config: CdsHooksConfig,
        client: httpx.AsyncClient,
        base_url: str,
        token: str | None,
        deadline: float,
    ) -> None:
        self._config = config
        self._client = client
        self._base = base_url.rstrip("/")
        self._headers = {"Accept": "application/fhir+json, application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._deadline = deadline

    def __repr__(self) -> str:
        return "FhirSession(<redacted>)"

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    async def fetch(self, relative_url: str, *, key: str = "query") -> JsonObject | None:
        """See :class:`~cds_hooks.service.FhirAccess`. Pages of a searchset are merged."""
        remaining = self.remaining()
        if remaining <= 0:
            raise PrefetchUnavailable(key, "the FHIR deadline for this request was exhausted")
        try:
            value, complete, reason = await asyncio.wait_for(
                self.read_or_search(relative_url), remaining
            )
        except TimeoutError:
            raise PrefetchUnavailable(key, "the FHIR server did not answer in time") from None
        except _FetchFailed as exc:
            raise PrefetchUnavailable(key, exc.reason) from None
        if not complete:
            raise PrefetchUnavailable(key, reason or "not all pages could be fetched")
        return value

    # -- internals

    async def _get(self, url: str) -> tuple[int, JsonObject | None]:
        remaining = self.remaining()
        if remaining <= 0:
            raise TimeoutError
        timeout = min(self._config.fhir_request_timeout_seconds, remaining)
        limit = self._config.fhir_max_response_bytes
        try:
            async with self._client.stream(
                "GET",
                url,
                headers=self._headers,
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
            ) as response:
                if response.status_code != 200:
                    return response.status_code, None
                raw = await read_capped(response, limit)
        except ResponseTooLarge:
            raise _FetchFailed("the FHIR server's answer is too large") from None
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise _FetchFailed(
                f"the FHIR server could not be reached ({type(exc).__name__})"
            ) from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _FetchFailed("the FHIR server's answer is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise _FetchFailed("the FHIR server's answer is not a FHIR resource")
        return 200, body

    async def read_or_search(self, relative_url: str) -> tuple[JsonObject | None, bool, str | None]:
        """GET a relative read or search. Returns (value, complete, reason-if-incomplete);
        ``None`` value for a read that found nothing (P-8 equivalent)."""
        relative = relative_url.lstrip("/")
        url = f"{self._base}/{relative}"
        if not url_within(url, self._base, allow_query=True):
            raise _FetchFailed("the query does not stay on the FHIR server")
        is_read = "?" not in relative and relative.count("/") == 1
        status, body = await self._get(url)
        if status in (404, 410) and is_read:
            return None, True, None
        if status != 200 or body is None:
            raise _FetchFailed(f"the FHIR server answered HTTP {status}")
        entry = classify_prefetch_value("-", body)
        if entry.state is not PrefetchState.PRESENT:
            raise _FetchFailed("the FHIR server answered with an error (OperationOutcome)")
        if body.get("resourceType") == "Bundle":
            return await self.complete_pages(body)
        return body, True, None

    async def complete_pages(self, bundle: JsonObject) -> tuple[JsonObject, bool, str | None]:
        """Follow ``next`` links (P-10) until done or ``fhir_max_pages`` pages in total.

        Returns the merged Bundle, whether it is complete, and why not.
        """
        entries = list(bundle.get("entry") or [])
        link = next_link(bundle)
        pages = 1
        reason: str | None = None
        while link is not None:
            if pages >= self._config.fhir_max_pages:
                reason = f"the search has more than {self._config.fhir_max_pages} pages"
                break
            if not url_within(link, self._base, allow_query=True):
                reason = "a next link points outside the FHIR server"
                break
            status, page = await self._get(link)
            if status != 200 or page is None:
                reason = f"fetching the next page failed (HTTP {status})"
                break
            checked = classify_prefetch_value("-", page)
            if checked.state is not PrefetchState.PRESENT or page.get("resourceType") != "Bundle":
                reason = "fetching the next page failed (not a searchset)"
                break
            entries.extend(page.get("entry") or [])
            pages += 1
            link = next_link(page)
        merged = dict(bundle)
        merged["entry"] = entries
        links = [
            item
            for item in bundle.get("link") or []
            if not (isinstance(item, dict) and item.get("relation") == "next")
        ]
        if links:
            merged["link"] = links
        else:
            merged.pop("link", None)
        if reason is not None:
            return bundle if pages == 1 else merged, False, reason
        return merged, True, None


# ---------------------------------------------------------------- the resolver


class FhirFallback:
    """The :class:`~cds_hooks.runtime.PrefetchResolver` with FHIR server fallback (P-2)."""

    def __init__(self, config: CdsHooksConfig, client: httpx.AsyncClient | HttpPool) -> None:
        self._config = config
        self._pool = HttpPool.wrap(client)
        redact_httpx_logs()

    def session(self, request: CdsRequest) -> tuple[FhirSession | None, str]:
        """FHIR access for this request, or ``None`` and the reason there is none."""
        config = self._config
        if not request.fhir_server:
            return None, "the request has no fhirServer"
        if not server_allowed(request.fhir_server, config.fhir_server_allowlist):
            return None, "the request's fhirServer is not on this service's allowlist"
        token: str | None = None
        auth = request.fhir_authorization
        if auth is not None:
            if auth.token_type.lower() != "bearer" or not auth.access_token:
                return None, "fhirAuthorization is not a usable Bearer token"
            token = auth.access_token
        elif not config.allow_unauthenticated_fhir:
            return None, "the request has no fhirAuthorization"
        deadline = time.monotonic() + config.fhir_deadline_seconds
        session = FhirSession(config, self._pool.get(), request.fhir_server, token, deadline)
        return session, ""

    async def resolve(
        self, service: CdsService, request: CdsRequest
    ) -> tuple[Prefetch, FhirAccess | None]:
        entries = initial_entries(service.prefetch, request.prefetch, request.context)
        session, why_not = self.session(request)
        jobs: dict[str, Any] = {}
        for key in service.prefetch:
            entry = entries[key]
            needs_fetch = entry.state is PrefetchState.MISSING
            needs_pages = entry.state is PrefetchState.PRESENT and not entry.complete
            if not (needs_fetch or needs_pages):
                continue
            if session is None:
                entries[key] = replace(entry, reason=f"{entry.reason}; {why_not}")
                continue
            if needs_pages:
                assert entry.value is not None
                jobs[key] = self._pages(session, entry)
                continue
            relative, _ = render_template(service.prefetch[key], request.context)
            if relative is not None:
                jobs[key] = self._fetch(session, key, relative)
        if jobs and session is not None:
            entries.update(await self._run(session, entries, jobs))
        return Prefetch(entries), session

    async def _run(
        self, session: FhirSession, entries: dict[str, PrefetchEntry], jobs: dict[str, Any]
    ) -> dict[str, PrefetchEntry]:
        tasks = {key: asyncio.ensure_future(job) for key, job in jobs.items()}
        done, pending = await asyncio.wait(tasks.values(), timeout=max(session.remaining(), 0))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        results: dict[str, PrefetchEntry] = {}
        for key, task in tasks.items():
            if task in done and task.exception() is None:
                results[key] = task.result()
                continue
            entry = entries[key]
            late = task not in done
            if entry.state is PrefetchState.PRESENT:  # a partial page whose rest never came
                reason = "the remaining pages did not arrive in time" if late else "paging failed"
                results[key] = replace(entry, complete=False, reason=reason)
            else:
                reason = "the FHIR server did not answer in time" if late else "the fetch failed"
                results[key] = replace(entry, reason=reason)
            if not late:
                logger.error(
                    "key=%s unexpected error=%s",
                    key,
                    type(task.exception()).__name__,
                )
        return results

    async def _fetch(self, session: FhirSession, key: str, relative: str) -> PrefetchEntry:
        started = time.perf_counter()
        try:
            value, complete, reason = await session.read_or_search(relative)
        except TimeoutError:
            outcome = PrefetchEntry(
                key, PrefetchState.MISSING, reason="the FHIR server did not answer in time"
            )
        except _FetchFailed as exc:
            outcome = PrefetchEntry(key, PrefetchState.MISSING, reason=exc.reason)
        else:
            state = PrefetchState.NULL if value is None else PrefetchState.PRESENT
            outcome = PrefetchEntry(
                key, state, value, reason=reason, complete=complete, fetched=True
            )
        _log_fetch(key, outcome, started)
        return outcome

    async def _pages(self, session: FhirSession, entry: PrefetchEntry) -> PrefetchEntry:
        started = time.perf_counter()
        assert entry.value is not None
        try:
            merged, complete, reason = await session.complete_pages(entry.value)
        except TimeoutError:
            outcome = replace(entry, reason="the remaining pages did not arrive in time")
        except _FetchFailed as exc:
            outcome = replace(entry, reason=f"fetching the next page failed: {exc.reason}")
        else:
            outcome = replace(entry, value=merged, complete=complete, reason=reason, fetched=True)
        _log_fetch(entry.key, outcome, started)
        return outcome


def _log_fetch(key: str, entry: PrefetchEntry, started: float) -> None:
    logger.info(
        "key=%s state=%s complete=%s duration_ms=%.1f",
        key,
        entry.state.value,
        entry.complete,
        (time.perf_counter() - started) * 1000,
        extra={
            "cds_prefetch_key": key,
            "cds_prefetch_state": entry.state.value,
            "cds_prefetch_complete": entry.complete,
            "cds_prefetch_reason": entry.reason,
        },
    )
