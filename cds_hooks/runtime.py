"""The CDS Hooks runtime: discovery, service invocation and feedback, bound to one registry.

:class:`CdsHooks` holds the registry, the configuration, the stores and the outbound HTTP pool,
and answers the protocol's requests: authenticate (S-3) -> read the raw body (no FastAPI
validation, so no 422 that echoes the body) -> validate -> resolve prefetch -> call the
handler. Every failure goes through :func:`cds_hooks.errors.error_response`; an unexpected
exception is a logged 500, never ``200 {"cards": []}``. Each answered call is one log line
(:data:`LOG_FIELDS`) and one notice to every :class:`CallObserver` (metrics).

The routes that lead here are added by :func:`cds_hooks.install.install_cds_hooks`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal, Protocol

import httpx
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from cds_hooks.auth import ClientAuthenticator, ClientIdentity, ReplayStore
from cds_hooks.body import read_json_object
from cds_hooks.config import CdsHooksConfig
from cds_hooks.errors import (
    CdsError,
    InternalError,
    InvalidRequest,
    ItemsRefused,
    MethodNotAllowed,
    PrefetchUnavailable,
    Unauthorized,
    UnknownService,
    describe_validation_error,
    error_response,
    json_response,
)
from cds_hooks.feedback import FeedbackStore
from cds_hooks.fhir_client import FhirFallback
from cds_hooks.http_pool import HttpPool
from cds_hooks.models import (
    AcceptedSuggestion,
    CdsRequest,
    CdsResponse,
    FeedbackCoding,
    FeedbackItem,
    FeedbackRequest,
    FhirAuthorization,
    OverrideReason,
)
from cds_hooks.prefetch import Prefetch, initial_entries
from cds_hooks.service import CdsService, FhirAccess, Invocation, ServiceRegistry, has_text

__all__ = [
    "BASE_PATH",
    "LOG_FIELDS",
    "Authenticator",
    "CallEvent",
    "CallObserver",
    "CdsHooks",
    "PrefetchResolver",
    "RequestOnlyResolver",
    "log_safe_hook_instance",
]

logger = logging.getLogger("cds_hooks")
#: The log record attribute holding the fields of the one line per call (a dict), for
#: formatters that write them as members (``THERAPY_CDS_LOG_FORMAT=json``).
LOG_FIELDS = "cds_fields"

BASE_PATH = "/cds-services"

#: What a call was: ``GET /cds-services``, ``POST /cds-services/{id}`` or ``.../feedback``.
CallEvent = Literal["discovery", "invoke", "feedback"]


class Authenticator(Protocol):
    """Verifies the client JWT for one endpoint (S-3, S-6). Raises :class:`Unauthorized`."""

    async def authenticate(
        self, authorization: str | None, audience: str
    ) -> ClientIdentity | None: ...


class PrefetchResolver(Protocol):
    """Turns the request's prefetch (plus, in the FHIR fallback, server calls) into the
    :class:`Prefetch` a handler sees, and optionally a :class:`FhirAccess` for extra queries."""

    async def resolve(
        self, service: CdsService, request: CdsRequest
    ) -> tuple[Prefetch, FhirAccess | None]: ...


class CallObserver(Protocol):
    """Told about every call the runtime answers (metrics plug in here).

    Called on the event loop, inside the request: keep each method to a few dictionary or
    counter updates. ``service`` is ``None`` when the call named no registered service (or
    was discovery). Nothing here carries request content.
    """

    def on_call(
        self, event: CallEvent, service: CdsService | None, status: int, seconds: float
    ) -> None:
        """A call was answered with ``status`` after ``seconds`` (every status, 405 too)."""

    def on_prefetch(self, service: CdsService, prefetch: Prefetch) -> None:
        """The prefetch of an invocation was resolved (before the handler runs)."""

    def on_feedback(self, service: CdsService, items: int, new: int) -> None:
        """``items`` valid feedback items were stored, ``new`` of them not seen before (F-8)."""


class RequestOnlyResolver:
    """No FHIR access: absent keys stay missing (P-7), so ``require`` answers 412 (P-13)."""

    async def resolve(
        self, service: CdsService, request: CdsRequest
    ) -> tuple[Prefetch, FhirAccess | None]:
        entries = initial_entries(service.prefetch, request.prefetch, request.context)
        return Prefetch(entries), None


class _RejectAll:
    """Used when auth is required but no authenticator was supplied: fail closed."""

    async def authenticate(self, authorization: str | None, audience: str) -> ClientIdentity | None:
        raise Unauthorized("no authenticator configured")


# ---------------------------------------------------------------- logging helpers


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def log_safe_hook_instance(value: object) -> str:
    """A hookInstance is meant to be a UUID (C-3); log it as such, anything else only as a
    short hash so no caller-chosen text reaches the logs."""
    if isinstance(value, str):
        if _CANONICAL_UUID.fullmatch(value):
            return value  # what str(uuid.UUID(value)) gives, without building it
        try:
            return str(uuid.UUID(value))
        except ValueError:
            digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]
            return f"sha256:{digest}"
    return "-"


def _where(exc: BaseException) -> str:
    """Innermost frame of a traceback, as file:line in function -- no message, no values."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "-"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


def _known_names(*models: type[BaseModel]) -> frozenset[str]:
    names: set[str] = set()
    for model in models:
        for name, info in model.model_fields.items():
            names.add(name)
            if info.alias:
                names.add(info.alias)
    return frozenset(names)


_REQUEST_NAMES = _known_names(CdsRequest, FhirAuthorization)
_FEEDBACK_NAMES = _known_names(
    FeedbackRequest, FeedbackItem, AcceptedSuggestion, OverrideReason, FeedbackCoding
)
#: The protocol layer's own fields of the log line; a handler's fields never replace them.
_OWN_FIELDS = frozenset({"event", "status", "service", "hook_instance", "duration_ms"})
# The sandbox builds service URLs by concatenation, so a discovery URL entered with a trailing
# slash yields ".../cds-services//{id}" (SANDBOX.md §2): served as the single-slash path.
_DOUBLE_SLASH = re.compile(r"^.*/cds-services//+(?P<id>[^/]+)(?P<feedback>/feedback)?/?$")


def _is_discovery(path: str) -> bool:
    return path.rstrip("/").endswith(BASE_PATH)


def _prefetch_summary(service: CdsService, prefetch: Prefetch) -> str:
    # Declared key names and states only; undeclared keys are caller-chosen text.
    return ",".join(f"{key}={prefetch.state(key).value}" for key in service.prefetch)


# ---------------------------------------------------------------- the runtime


class CdsHooks:
    """The protocol layer bound to one application: registry, config, stores, HTTP pool.

    * ``replay_store`` -- where seen JWT ``jti`` values are kept (S-11); defaults to a
      single-process :class:`~cds_hooks.auth.InMemoryReplayStore`. Give a shared one when
      running several workers.
    * ``http_client`` -- the keep-alive pool used for FHIR callbacks and JWKS fetches; one is
      created lazily (and closed when :meth:`lifespan` ends) when not given.
    * ``clock`` -- seconds since the epoch, for JWT time checks (tests pin it).
    * ``authenticator`` / ``resolver`` -- replace the JWT verifier or the prefetch resolver
      (by default the FHIR fallback, :class:`~cds_hooks.fhir_client.FhirFallback`).
    * ``observers`` -- told about every call (:class:`CallObserver`); more can be added with
      :meth:`add_observer` before the application starts.

    Serve it with :func:`cds_hooks.install.install_cds_hooks`, and enter :meth:`lifespan` in the
    application's lifespan (``FastAPI(lifespan=runtime.lifespan)`` when nothing else runs
    there), so that the HTTP pool it owns is closed at shutdown.
    """

    def __init__(
        self,
        registry: ServiceRegistry,
        config: CdsHooksConfig,
        feedback_store: FeedbackStore,
        *,
        replay_store: ReplayStore | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        authenticator: Authenticator | None = None,
        resolver: PrefetchResolver | None = None,
        observers: Iterable[CallObserver] = (),
    ) -> None:
        if not config.require_auth:
            logger.warning(
                "client authentication is OFF: any caller can invoke the services "
                "(development only; set require_auth for production)"
            )
        self.registry = registry
        self.config = config
        self.feedback_store = feedback_store
        self._pool = HttpPool(http_client)
        self.authenticator: Authenticator | None = None
        if config.require_auth:
            self.authenticator = authenticator or ClientAuthenticator(
                config, replay_store=replay_store, http_client=self._pool, clock=clock
            )
        self.resolver: PrefetchResolver = resolver or FhirFallback(config, self._pool)
        self.observers: tuple[CallObserver, ...] = tuple(observers)

    def add_observer(self, observer: CallObserver) -> None:
        """Tell ``observer`` about every call from now on."""
        self.observers = (*self.observers, observer)

    async def aclose(self) -> None:
        """Close the HTTP pool, when the runtime created it."""
        await self._pool.aclose()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """The runtime while the application runs: closes what it owns at shutdown. Takes the
        application as FastAPI's ``lifespan`` argument does (unused)."""
        try:
            yield
        finally:
            await self.aclose()

    # ------------------------------------------------------------ plumbing

    def audience(self, request: Request) -> str:
        """The exact ``aud`` expected for this call (S-6, S-11): the configured public base URL
        (never the Host header) plus the path exactly as the client called it, so a client
        that called ``.../cds-services/`` or ``.../cds-services//id`` must have signed that."""
        path = request.url.path
        root = request.scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :]
        return f"{self.config.public_base_url or ''}{path}"

    async def _authenticate(self, request: Request) -> ClientIdentity | None:
        if self.authenticator is None:
            return None
        return await self.authenticator.authenticate(
            request.headers.get("authorization"), self.audience(request)
        )

    async def _read_json(self, request: Request) -> dict[str, Any]:
        return await read_json_object(request, max_bytes=self.config.max_request_bytes)

    @staticmethod
    def _parse_request(payload: dict[str, Any], service: CdsService) -> CdsRequest:
        try:
            parsed = CdsRequest.model_validate(payload, by_name=False)
        except ValidationError as exc:
            raise InvalidRequest(describe_validation_error(exc, _REQUEST_NAMES)) from None
        if not has_text(parsed.hook_instance):
            raise InvalidRequest("member 'hookInstance' must not be empty")
        if parsed.hook != service.hook:
            # C-2: name the hook we expect, never echo the one received.
            raise InvalidRequest(
                f"member 'hook' does not match this service, which handles '{service.hook}'"
            )
        service.check_context(parsed.context)
        return parsed

    # ------------------------------------------------------------ endpoints

    async def discovery(self, request: Request) -> Response:
        """B-1, B-2: ``GET /cds-services``; authenticated when auth is on (B-11)."""
        started = time.perf_counter()
        try:
            await self._authenticate(request)
        except CdsError as exc:
            return self._fail(exc, event="discovery", started=started)
        except Exception as exc:
            return self._crash(exc, event="discovery", started=started)
        self._done("discovery", 200, started)
        discovery = self.registry.discovery().model_dump(mode="json", by_alias=True)
        return json_response(discovery)

    async def invoke(self, request: Request, service_id: str) -> Response:
        """C-1..C-8, P-7..P-13, R-1: ``POST /cds-services/{id}``."""
        started = time.perf_counter()
        service = self.registry.get(service_id)  # for the log line; 401 still comes first
        hook_instance: object = None
        try:
            client = await self._authenticate(request)
            if service is None:
                raise UnknownService()
            payload = await self._read_json(request)
            hook_instance = payload.get("hookInstance")
            cds_request = self._parse_request(payload, service)
            prefetch, fhir = await self.resolver.resolve(service, cds_request)
            for observer in self.observers:
                observer.on_prefetch(service, prefetch)
            for key in service.required_prefetch:
                prefetch.require(key)  # P-13: 412 before the handler runs
            invocation = Invocation(
                service=service,
                request=cds_request,
                prefetch=prefetch,
                fhir=fhir,
                client=client,
            )
            result = await service.handler(invocation)
            if not isinstance(result, CdsResponse):
                raise TypeError("handler did not return a CdsResponse")
            body = result.encode()
        except CdsError as exc:
            return self._fail(
                exc, event="invoke", started=started, service=service, hook_instance=hook_instance
            )
        except Exception as exc:
            return self._crash(
                exc, event="invoke", started=started, service=service, hook_instance=hook_instance
            )
        # The fields only the log line uses are worked out only when it is written.
        fields: dict[str, Any] = (
            {"cards": len(result.cards), "prefetch": _prefetch_summary(service, prefetch)}
            if logger.isEnabledFor(logging.INFO)
            else {}
        )
        self._done(
            "invoke",
            200,
            started,
            service=service,
            hook_instance=hook_instance,
            handler_fields=invocation.log,
            **fields,
        )
        return Response(content=body, media_type="application/json")

    async def feedback(self, request: Request, service_id: str) -> Response:
        """F-1..F-10: ``POST /cds-services/{id}/feedback``; stored idempotently, 200 ``{}``.

        Each item is judged on its own (F-8: a batch mixes cards and hook calls): the valid
        ones are stored even when others are refused; then the answer is a 400 naming each
        refused item, with an informational issue saying how many were stored."""
        started = time.perf_counter()
        service = self.registry.get(service_id)  # for the log line; 401 still comes first
        try:
            await self._authenticate(request)
            if service is None:
                raise UnknownService()
            payload = await self._read_json(request)
            entries = payload.get("feedback")
            if entries is None:
                raise InvalidRequest("member 'feedback' is required")
            if not isinstance(entries, list):
                raise InvalidRequest("member 'feedback' must be an array")
            items: list[FeedbackItem] = []
            refused: list[str] = []
            for index, entry in enumerate(entries):
                try:
                    items.append(FeedbackItem.model_validate(entry, by_name=False))
                except ValidationError as exc:
                    where = ("feedback", index)
                    refused.append(describe_validation_error(exc, _FEEDBACK_NAMES, prefix=where))
            new = await run_in_threadpool(self.feedback_store.record, service.id, items)
            for observer in self.observers:
                observer.on_feedback(service, len(items), new)
            if refused:
                raise ItemsRefused(refused, accepted=len(items), total=len(entries))
        except CdsError as exc:
            return self._fail(exc, event="feedback", started=started, service=service)
        except Exception as exc:
            return self._crash(exc, event="feedback", started=started, service=service)
        self._done("feedback", 200, started, service=service, items=len(items), new_items=new)
        return json_response({})

    async def not_allowed(self, request: Request) -> Response:
        """A CDS Hooks path called with a method it does not serve (405), or a plain OPTIONS
        that is not a CORS preflight (204 with ``Allow``)."""
        started = time.perf_counter()
        path = request.url.path
        discovery = _is_discovery(path)
        allowed = ("GET", "OPTIONS") if discovery else ("POST", "OPTIONS")
        if request.method == "OPTIONS":
            response = Response(status_code=204, headers={"Allow": ", ".join(allowed)})
        else:
            response = error_response(MethodNotAllowed(allowed))
        if self.observers:  # no log line for these, as before; the observers count them
            event: CallEvent = "discovery"
            service: CdsService | None = None
            if not discovery:
                event = "feedback" if path.rstrip("/").endswith("/feedback") else "invoke"
                service = self.registry.get(request.path_params.get("service_id", ""))
            seconds = time.perf_counter() - started
            for observer in self.observers:
                observer.on_call(event, service, response.status_code, seconds)
        return response

    async def not_found(self, request: Request) -> Response:
        # ".../cds-services//{id}" from the sandbox (see _DOUBLE_SLASH): served anyway.
        match = _DOUBLE_SLASH.match(request.url.path)
        if match is not None and request.method == "POST":
            if match.group("feedback"):
                return await self.feedback(request, match.group("id"))
            return await self.invoke(request, match.group("id"))
        return error_response(UnknownService("no such CDS Hooks endpoint"))

    # ------------------------------------------------------------ the end of a call

    def _done(
        self,
        event: CallEvent,
        status: int,
        started: float,
        *,
        service: CdsService | None = None,
        hook_instance: object = None,
        level: int = logging.INFO,
        handler_fields: Mapping[str, object] | None = None,
        **fields: Any,
    ) -> None:
        """Tell the observers, then write the one log line of the call: ids, status, timing --
        never bodies or tokens. ``handler_fields`` (what the service's handler noted, see
        ``Invocation.log``) come last and never replace the protocol layer's own fields."""
        seconds = time.perf_counter() - started
        for observer in self.observers:
            observer.on_call(event, service, status, seconds)
        if not logger.isEnabledFor(level):
            return
        record: dict[str, object] = {
            "event": event,
            "status": status,
            "service": service.id if service is not None else "-",
            "hook_instance": log_safe_hook_instance(hook_instance),
            "duration_ms": round(seconds * 1000, 1),
        }
        record.update(fields)
        if handler_fields:
            record.update(
                (key, value)
                for key, value in handler_fields.items()
                if key not in _OWN_FIELDS and key not in fields
            )
        # The message is the key=value text; the fields ride along for a structured formatter.
        # (The logger's name is the formatter's to print: it is not repeated in the message.)
        text = " ".join(f"{key}={value}" for key, value in record.items())
        logger.log(level, "%s", text, extra={LOG_FIELDS: record})

    def _fail(
        self,
        exc: CdsError,
        *,
        event: CallEvent,
        started: float,
        service: CdsService | None = None,
        hook_instance: object = None,
    ) -> Response:
        extra: dict[str, Any] = {"error": type(exc).__name__}
        if isinstance(exc, Unauthorized):
            extra["auth_reason"] = exc.reason
            extra.update({f"jwt_{k}": v for k, v in exc.log_fields.items()})
        if isinstance(exc, PrefetchUnavailable):
            extra["prefetch_key"] = exc.key
            extra["prefetch_reason"] = exc.reason
        self._done(
            event,
            exc.status_code,
            started,
            service=service,
            hook_instance=hook_instance,
            level=logging.WARNING,
            **extra,
        )
        return error_response(exc)

    def _crash(
        self,
        exc: Exception,
        *,
        event: CallEvent,
        started: float,
        service: CdsService | None = None,
        hook_instance: object = None,
    ) -> Response:
        # Only the type and the location: exception messages may carry patient data.
        self._done(
            event,
            500,
            started,
            service=service,
            hook_instance=hook_instance,
            level=logging.ERROR,
            error=type(exc).__name__,
            where=_where(exc),
        )
        return error_response(InternalError())
