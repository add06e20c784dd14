"""The CDS Hooks HTTP surface: discovery, service invocation and feedback routes.

``install_cds_hooks(app, registry, config, feedback_store)`` adds the routes and the CORS
middleware to a FastAPI application and returns the :class:`CdsHooks` runtime. Routes are thin:
authenticate (S-3) -> read the raw body (no FastAPI validation, so no 422 that echoes the body)
-> validate -> resolve prefetch -> call the handler. Every failure goes through
:func:`cds_hooks.errors.error_response`; an unexpected exception is a logged 500, never
``200 {"cards": []}``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol, cast

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cds_hooks.auth import ClientAuthenticator, ClientIdentity, ReplayStore
from cds_hooks.body import read_json_object
from cds_hooks.config import CdsHooksConfig
from cds_hooks.cors import CorsMiddleware
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
from cds_hooks.service import CdsService, FhirAccess, Invocation, ServiceRegistry

__all__ = [
    "Authenticator",
    "CdsHooks",
    "PrefetchResolver",
    "RequestOnlyResolver",
    "install_cds_hooks",
]

logger = logging.getLogger("cds_hooks")
#: The log record attribute holding the fields of the one line per call (a dict), for
#: formatters that write them as members (``THERAPY_CDS_LOG_FORMAT=json``).
LOG_FIELDS = "cds_fields"

BASE_PATH = "/cds-services"


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

#: Context members that must be non-empty strings / objects / arrays when a hook requires them.
_OBJECT_CONTEXT = frozenset({"draftOrders", "dispatchedOrders", "appointments"})
_ARRAY_CONTEXT = frozenset({"selections"})
#: A character that is not white space, spelled out so that Python's ``re`` and the JSON Schema
#: (ECMA-262) pattern of the OpenAPI document mean the same set: ECMA-262 white space and line
#: terminators, plus the separators \x1c-\x1f and NEL that Python's ``str.strip`` also removes.
_NOT_BLANK = (
    "[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
)
_HAS_TEXT = re.compile(_NOT_BLANK)

_DISCOVERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["services"],
    "properties": {
        "services": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["hook", "id", "description"],
                "properties": {
                    "hook": {"type": "string"},
                    "id": {"type": "string"},
                    "title": {"type": "string"},
                    "description": {"type": "string"},
                    "prefetch": {"type": "object", "additionalProperties": {"type": "string"}},
                    "usageRequirements": {"type": "string"},
                },
            },
        }
    },
}
# What CdsRequest accepts. Optional members may also be null (as absent). ``hookInstance`` is a
# UUID per the spec; any non-blank string is accepted, as some EHRs send other identifiers.
_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"type": "string"},
        "hookInstance": {
            "type": "string",
            "pattern": _NOT_BLANK,
            "description": "a UUID for this call (spec); any non-blank string is accepted",
        },
        "fhirServer": {"type": ["string", "null"]},
        "fhirAuthorization": {
            "type": ["object", "null"],
            "required": ["access_token", "token_type"],
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"type": "string"},
                "expires_in": {"type": ["integer", "null"]},
                "scope": {"type": ["string", "null"]},
                "subject": {"type": ["string", "null"]},
                "patient": {"type": ["string", "null"]},
            },
        },
        "context": {"type": "object"},
        "prefetch": {"type": ["object", "null"]},
        "extension": {"type": ["object", "null"]},
    },
}
_CODING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "system"],
    "properties": {
        "code": {"type": "string", "minLength": 1},
        "system": {"type": "string", "minLength": 1},
        "display": {"type": "string", "minLength": 1},
    },
}
_ACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "description"],
    "properties": {
        "type": {"enum": ["create", "update", "delete"]},
        "description": {"type": "string"},
        "resource": {"type": "object"},
        "resourceId": {"type": "string"},
    },
}
_CARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["summary", "indicator", "source"],
    "properties": {
        "uuid": {"type": "string"},
        "summary": {"type": "string", "minLength": 1, "maxLength": 139},
        "detail": {"type": "string"},
        "indicator": {"enum": ["info", "warning", "critical"]},
        "source": {
            "type": "object",
            "required": ["label"],
            "properties": {
                "label": {"type": "string"},
                "url": {"type": "string"},
                "icon": {"type": "string"},
                "topic": _CODING_SCHEMA,
            },
        },
        "suggestions": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["label"],
                "properties": {
                    "label": {"type": "string"},
                    "uuid": {"type": "string"},
                    "isRecommended": {"type": "boolean"},
                    "actions": {"type": "array", "minItems": 1, "items": _ACTION_SCHEMA},
                },
            },
        },
        "selectionBehavior": {"enum": ["at-most-one", "any"]},
        "overrideReasons": {"type": "array", "minItems": 1, "items": _CODING_SCHEMA},
        "links": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["label", "url", "type"],
                "properties": {
                    "label": {"type": "string"},
                    "url": {"type": "string"},
                    "type": {"enum": ["absolute", "smart"]},
                    "appContext": {"type": "string"},
                    "autolaunchable": {"type": "boolean"},
                },
            },
        },
    },
}
_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["cards"],
    "properties": {
        "cards": {"type": "array", "items": _CARD_SCHEMA},
        "systemActions": {"type": "array", "items": _ACTION_SCHEMA},
    },
}


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema (what it validates, by alias) with its ``$defs`` inlined, so the
    request body in the OpenAPI document is derived from the model and stands on its own."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {
                key: inline(value)
                for key, value in node.items()
                if not (key == "title" and isinstance(value, str))  # pydantic's class names
            }
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


# What FeedbackRequest accepts, member by member (spec 2.0 "Feedback"), limits included: a body
# the schema allows is stored, one it refuses is a 400. Other members are kept, as the spec lets
# clients add them.
_FEEDBACK_SCHEMA = _inline_schema(FeedbackRequest)
_OUTCOME = {
    "application/fhir+json": {
        "schema": {
            "type": "object",
            "required": ["resourceType", "issue"],
            "properties": {
                "resourceType": {"const": "OperationOutcome"},
                "issue": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["severity", "code"],
                        "properties": {
                            "severity": {"enum": ["fatal", "error", "warning", "information"]},
                            "code": {"type": "string"},
                            "diagnostics": {"type": "string"},
                        },
                    },
                },
            },
        }
    }
}


def _error_docs(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request",
        401: "Missing or invalid client JWT",
        404: "Unknown service",
        412: "Required data unavailable",
        413: "Request body too large",
        415: "Request body not sent as application/json",
        500: "Internal error",
    }
    return {code: {"description": text[code], "content": _OUTCOME} for code in codes}


# ---------------------------------------------------------------- the runtime


class CdsHooks:
    """The protocol layer bound to one application: registry, config, stores, HTTP router.

    Build it through :func:`install_cds_hooks`. ``aclose`` releases the FHIR/JWKS HTTP client
    (installed apps do this at shutdown automatically).
    """

    def __init__(
        self,
        registry: ServiceRegistry,
        config: CdsHooksConfig,
        feedback_store: FeedbackStore,
        *,
        authenticator: Authenticator | None = None,
        resolver: PrefetchResolver | None = None,
        on_close: Callable[[], Any] | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.feedback_store = feedback_store
        self.authenticator: Authenticator | None = (
            (authenticator or _RejectAll()) if config.require_auth else None
        )
        self.resolver: PrefetchResolver = resolver or RequestOnlyResolver()
        self._on_close = on_close
        self.router = self._build_router()

    async def aclose(self) -> None:
        if self._on_close is not None:
            result = self._on_close()
            if hasattr(result, "__await__"):
                await result

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

    def _service(self, service_id: str) -> CdsService:
        service = self.registry.get(service_id)
        if service is None:
            raise UnknownService()
        return service

    async def _read_json(self, request: Request) -> dict[str, Any]:
        return await read_json_object(request, max_bytes=self.config.max_request_bytes)

    @staticmethod
    def _parse_request(payload: dict[str, Any], service: CdsService) -> CdsRequest:
        try:
            parsed = CdsRequest.model_validate(payload, by_name=False)
        except ValidationError as exc:
            raise InvalidRequest(describe_validation_error(exc, _REQUEST_NAMES)) from None
        if not _HAS_TEXT.search(parsed.hook_instance):
            raise InvalidRequest("member 'hookInstance' must not be empty")
        if parsed.hook != service.hook:
            # C-2: name the hook we expect, never echo the one received.
            raise InvalidRequest(
                f"member 'hook' does not match this service, which handles '{service.hook}'"
            )
        for name in service.context_requirements:
            value = parsed.context.get(name)
            if value is None:
                raise InvalidRequest(f"member 'context.{name}' is required for {service.hook}")
            if name in _OBJECT_CONTEXT:
                if not isinstance(value, dict):
                    raise InvalidRequest(f"member 'context.{name}' must be a JSON object")
                kind = value.get("resourceType", "Bundle")
                if kind != "Bundle":
                    raise InvalidRequest(f"member 'context.{name}' must be a FHIR Bundle")
            elif name in _ARRAY_CONTEXT:
                if not isinstance(value, list):
                    raise InvalidRequest(f"member 'context.{name}' must be an array")
            elif not isinstance(value, str) or not _HAS_TEXT.search(value):
                raise InvalidRequest(f"member 'context.{name}' must be a non-empty string")
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
        _log_done("discovery", 200, started)
        discovery = self.registry.discovery().model_dump(mode="json", by_alias=True)
        return json_response(discovery)

    async def invoke(self, request: Request, service_id: str) -> Response:
        """C-1..C-8, P-7..P-13, R-1: ``POST /cds-services/{id}``."""
        started = time.perf_counter()
        service = self.registry.get(service_id)  # for the log line; 401 still comes first
        hook_instance: object = None
        try:
            client = await self._authenticate(request)
            service = self._service(service_id)
            payload = await self._read_json(request)
            hook_instance = payload.get("hookInstance")
            cds_request = self._parse_request(payload, service)
            prefetch, fhir = await self.resolver.resolve(service, cds_request)
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
        _log_done(
            "invoke",
            200,
            started,
            service=service,
            hook_instance=hook_instance,
            cards=len(result.cards),
            prefetch=_prefetch_summary(service, prefetch),
            handler_fields=invocation.log,
        )
        return Response(content=body, media_type="application/json")

    async def feedback(self, request: Request, service_id: str) -> Response:
        """F-1..F-10: ``POST /cds-services/{id}/feedback``; stored idempotently, 200 ``{}``.

        Each item is judged on its own (F-8: a batch mixes cards and hook calls): the valid
        ones are stored even when others are refused; then the answer is a 400 naming each
        refused item, with an informational issue saying how many were stored."""
        started = time.perf_counter()
        service: CdsService | None = None
        try:
            await self._authenticate(request)
            service = self._service(service_id)
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
            if refused:
                raise ItemsRefused(refused, accepted=len(items), total=len(entries))
        except CdsError as exc:
            return self._fail(exc, event="feedback", started=started, service=service)
        except Exception as exc:
            return self._crash(exc, event="feedback", started=started, service=service)
        _log_done("feedback", 200, started, service=service, items=len(items), new_items=new)
        return json_response({})

    async def not_allowed(self, request: Request) -> Response:
        allowed = ("GET", "OPTIONS") if _is_discovery(request.url.path) else ("POST", "OPTIONS")
        if request.method == "OPTIONS":  # a plain OPTIONS that is not a CORS preflight
            return Response(status_code=204, headers={"Allow": ", ".join(allowed)})
        return error_response(MethodNotAllowed(allowed))

    async def not_found(self, request: Request) -> Response:
        # The sandbox builds service URLs by concatenation, so a discovery URL entered with a
        # trailing slash yields ".../cds-services//{id}" (SANDBOX.md §2): serve it anyway.
        match = _DOUBLE_SLASH.match(request.url.path)
        if match is not None and request.method == "POST":
            if match.group("feedback"):
                return await self.feedback(request, match.group("id"))
            return await self.invoke(request, match.group("id"))
        return error_response(UnknownService("no such CDS Hooks endpoint"))

    # ------------------------------------------------------------ failures

    def _fail(
        self,
        exc: CdsError,
        *,
        event: str,
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
        _log_done(
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
        event: str,
        started: float,
        service: CdsService | None = None,
        hook_instance: object = None,
    ) -> Response:
        # Only the type and the location: exception messages may carry patient data.
        _log_done(
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

    # ------------------------------------------------------------ routes

    def _build_router(self) -> APIRouter:
        router = APIRouter(tags=["CDS Hooks"])
        discovery_doc: dict[int | str, dict[str, Any]] = {
            200: {"content": {"application/json": {"schema": _DISCOVERY_SCHEMA}}}
        }
        for path, in_schema in ((BASE_PATH, True), (BASE_PATH + "/", False)):
            router.add_api_route(
                path,
                self.discovery,
                methods=["GET"],
                summary="CDS Hooks discovery",
                responses={**discovery_doc, **_error_docs(401)},
                include_in_schema=in_schema,
            )
        invoke_doc: dict[int | str, dict[str, Any]] = {
            200: {"content": {"application/json": {"schema": _RESPONSE_SCHEMA}}},
            **_error_docs(400, 401, 404, 412, 413, 415, 500),
        }
        request_body = {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _REQUEST_SCHEMA}},
            }
        }
        feedback_body = {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _FEEDBACK_SCHEMA}},
            }
        }
        for suffix, in_schema in (("", True), ("/", False)):
            router.add_api_route(
                BASE_PATH + "/{service_id}" + suffix,
                self.invoke,
                methods=["POST"],
                summary="Invoke a CDS service",
                responses=invoke_doc,
                openapi_extra=request_body,
                include_in_schema=in_schema,
            )
            router.add_api_route(
                BASE_PATH + "/{service_id}/feedback" + suffix,
                self.feedback,
                methods=["POST"],
                summary="Feedback on cards",
                responses={
                    200: {
                        "description": "Accepted (stored once, however often it is sent)",
                        "content": {
                            "application/json": {"schema": {"type": "object", "maxProperties": 0}}
                        },
                    },
                    **_error_docs(400, 401, 404, 413, 415, 500),
                    400: {
                        "description": (
                            "Malformed request, or items refused: one issue per refused item "
                            "(at most 50), then an informational issue saying how many of the "
                            "other items were stored"
                        ),
                        "content": _OUTCOME,
                    },
                },
                openapi_extra=feedback_body,
                include_in_schema=in_schema,
            )
        other = ["PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
        for path in (BASE_PATH, BASE_PATH + "/"):
            router.add_api_route(
                path, self.not_allowed, methods=[*other, "POST"], include_in_schema=False
            )
        for suffix in ("", "/"):
            for tail in ("/{service_id}", "/{service_id}/feedback"):
                router.add_api_route(
                    BASE_PATH + tail + suffix,
                    self.not_allowed,
                    methods=[*other, "GET"],
                    include_in_schema=False,
                )
        router.add_api_route(
            BASE_PATH + "/{rest:path}",
            self.not_found,
            methods=["GET", "POST", *other],
            include_in_schema=False,
        )
        return router


_DOUBLE_SLASH = re.compile(r"^.*/cds-services//+(?P<id>[^/]+)(?P<feedback>/feedback)?/?$")


def _is_discovery(path: str) -> bool:
    return path.rstrip("/").endswith(BASE_PATH)


def _prefetch_summary(service: CdsService, prefetch: Prefetch) -> str:
    # Declared key names and states only; undeclared keys are caller-chosen text.
    return ",".join(f"{key}={prefetch.state(key).value}" for key in service.prefetch)


def _log_done(
    event: str,
    status: int,
    started: float,
    *,
    service: CdsService | None = None,
    hook_instance: object = None,
    level: int = logging.INFO,
    handler_fields: Mapping[str, object] | None = None,
    **fields: Any,
) -> None:
    """One structured record per request: ids, status, timing -- never bodies or tokens.
    ``handler_fields`` (what the service's handler noted, see ``Invocation.log``) come last and
    never replace the protocol layer's own fields."""
    if not logger.isEnabledFor(level):
        return
    record: dict[str, object] = {
        "event": event,
        "status": status,
        "service": service.id if service is not None else "-",
        "hook_instance": log_safe_hook_instance(hook_instance),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
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


_OWN_FIELDS = frozenset({"event", "status", "service", "hook_instance", "duration_ms"})


_INVOKE_PATH = re.compile(BASE_PATH + r"/(?P<id>[^/]+)")


class _FastLane:
    """The hot route, ``POST /cds-services/{id}``, from the server straight to the runtime.

    The call still passes through every middleware the application added (CORS, metrics and
    any other), built exactly as Starlette builds them; it skips only the framework's own
    layers (error page, body limit, exception handlers, routing, dependency solving), which
    this endpoint never uses: it reads, limits and validates its own body and answers every
    failure with an OperationOutcome itself. Every other request -- discovery, feedback, the
    trailing-slash and double-slash variants, OPTIONS, docs, pages -- goes the usual way.
    """

    def __init__(self, runtime: CdsHooks, app: FastAPI, inner: ASGIApp) -> None:
        self.runtime = runtime
        self.inner = inner
        endpoint: ASGIApp = self._endpoint
        for cls, args, kwargs in reversed(app.user_middleware):
            endpoint = cls(endpoint, *args, **kwargs)
        self.fast = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root: str = scope.get("root_path") or ""
            if root and path.startswith(root):
                path = path[len(root) :]
            match = _INVOKE_PATH.fullmatch(path)
            if match is not None:
                scope["path_params"] = {"service_id": match["id"]}
                await self.fast(scope, receive, send)
                return
        await self.inner(scope, receive, send)

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self.runtime.invoke(request, scope["path_params"]["service_id"])
        except Exception as exc:  # invoke answers every failure itself: this is a last guard
            response = self.runtime._crash(exc, event="invoke", started=time.perf_counter())
        await response(scope, receive, send)


def _install_fast_lane(app: FastAPI, runtime: CdsHooks) -> None:
    """Put :class:`_FastLane` in front of the application's middleware stack (built lazily
    on the first request, after every middleware has been added)."""
    build = app.build_middleware_stack

    def build_with_fast_lane() -> ASGIApp:
        return _FastLane(runtime, app, build())

    app.build_middleware_stack = build_with_fast_lane  # type: ignore[method-assign]


# ---------------------------------------------------------------- installation


def install_cds_hooks(
    app: FastAPI,
    registry: ServiceRegistry,
    config: CdsHooksConfig,
    feedback_store: FeedbackStore,
    *,
    replay_store: ReplayStore | None = None,
    http_client: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.time,
    authenticator: Authenticator | None = None,
    resolver: PrefetchResolver | None = None,
) -> CdsHooks:
    """Add the CDS Hooks routes and CORS middleware to ``app`` (B-1, C-1, F-1, CORS-1/2).

    * ``replay_store`` -- where seen JWT ``jti`` values are kept (S-11); defaults to a
      single-process :class:`~cds_hooks.auth.InMemoryReplayStore`. Give a shared one when
      running several workers.
    * ``http_client`` -- the keep-alive pool used for FHIR callbacks and JWKS fetches; one is
      created (and closed at app shutdown) when not given.
    * ``clock`` -- seconds since the epoch, for JWT time checks (tests pin it).
    * ``authenticator`` / ``resolver`` -- replace the JWT verifier or the prefetch resolver.

    Call before the application starts. Returns the runtime (``runtime.aclose()`` closes the
    HTTP client it owns; this is chained into the app's lifespan).
    """
    if not config.require_auth:
        logger.warning(
            "client authentication is OFF: any caller can invoke the services "
            "(development only; set require_auth for production)"
        )
    pool = HttpPool(http_client)
    if authenticator is None and config.require_auth:
        authenticator = ClientAuthenticator(
            config, replay_store=replay_store, http_client=pool, clock=clock
        )
    runtime = CdsHooks(
        registry,
        config,
        feedback_store,
        authenticator=authenticator,
        resolver=resolver or FhirFallback(config, pool),
        on_close=pool.aclose,
    )
    app.include_router(runtime.router)
    app.add_middleware(CorsMiddleware, origins=config.cors_origins, path_prefix=BASE_PATH)
    _install_fast_lane(app, runtime)
    _document_services(app, registry)
    _chain_shutdown(app, runtime)
    return runtime


def _service_request_schema(service: CdsService) -> dict[str, Any]:
    """The request body one service accepts: the generic request with its hook as a constant
    and the context members it requires, typed as :meth:`CdsHooks._parse_request` checks them."""
    context: dict[str, Any] = {}
    for name in service.context_requirements:
        if name in _OBJECT_CONTEXT:
            context[name] = {
                "type": "object",
                "properties": {"resourceType": {"const": "Bundle"}},
            }
        elif name in _ARRAY_CONTEXT:
            context[name] = {"type": "array"}
        else:
            context[name] = {"type": "string", "pattern": _NOT_BLANK}
    properties = dict(_REQUEST_SCHEMA["properties"])
    properties["hook"] = {"const": service.hook}
    properties["context"] = {
        "type": "object",
        "required": list(service.context_requirements),
        "properties": context,
    }
    return {**_REQUEST_SCHEMA, "properties": properties}


def _document_services(app: FastAPI, registry: ServiceRegistry) -> None:
    """Document ``POST /cds-services/{id}`` once per registered service, at its own path and
    with its own request body, in place of the one generic template: a body that a service's
    schema allows is one that service accepts. Built when the document is first asked for, so
    that services registered after installation are included."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        paths: dict[str, Any] = document.get("paths", {})
        template = paths.pop(BASE_PATH + "/{service_id}", None)
        if template is None or "post" not in template:
            return document
        generic = template["post"]
        for service in registry:
            operation = {k: v for k, v in generic.items() if k != "parameters"}
            operation["operationId"] = f"invoke_{service.id}"
            operation["summary"] = f"{service.title} ({service.hook})"
            operation["description"] = service.description
            schema = _service_request_schema(service)
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
            paths[f"{BASE_PATH}/{service.id}"] = {"post": operation}
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _chain_shutdown(app: FastAPI, runtime: CdsHooks) -> None:
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        async with original(asgi_app) as state:
            try:
                yield state
            finally:
                await runtime.aclose()

    app.router.lifespan_context = cast(Any, lifespan)
