"""The read-only FHIR R4 REST API of ``demo-fhir`` (FastAPI).

- ``GET /metadata``: a CapabilityStatement listing the types served, ``read`` and
  ``search-type`` on each, and the search parameters really supported (no ``_include``).
- ``GET /{type}/{id}``: the resource, or 404 with an OperationOutcome.
- ``GET /{type}?...`` and ``POST /{type}/_search`` (form-encoded body): a ``searchset`` Bundle
  with ``total`` and ``self`` / ``first`` / ``previous`` / ``next`` / ``last`` links. Paging is
  stateless: the links carry ``_count`` and this server's own ``_offset``. ``_count`` defaults to
  :data:`~plugin.demo_fhir.search.DEFAULT_COUNT` and is cut to
  :data:`~plugin.demo_fhir.search.MAX_COUNT`; ``_count=0`` or ``_summary=count`` gives the total
  only. ``_sort`` takes ``_id`` and the type's date parameters (``-`` for descending).
- Unknown parameters: by default (``Prefer: handling=lenient``) left out of the search and named
  in an OperationOutcome entry (``search.mode = outcome``, severity warning) and left out of the
  ``self`` link; with ``Prefer: handling=strict`` refused with 400.
- Every write (create, update, patch, delete, batch/transaction) answers 405. A bad query
  answers 400 naming the parameter, never its value. Every body is ``application/fhir+json``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_hooks.errors import FHIR_JSON, operation_outcome
from plugin.cli._app import distribution_version
from plugin.demo_fhir.search import (
    CONTROL,
    DEFAULT_COUNT,
    MAX_COUNT,
    MAX_PARAMETERS,
    Criterion,
    Param,
    SearchError,
    check_modifier,
    parameters_for,
    parse_values,
    sort_instant,
)
from plugin.demo_fhir.store import FHIR_ID, RESOURCE_TYPE, Store

JsonObject = dict[str, Any]
#: Largest ``POST _search`` body read (form-encoded parameters).
MAX_SEARCH_BODY = 64 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})


class FhirError(Exception):
    def __init__(
        self, status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def fhir_response(
    body: JsonObject,
    status: int = 200,
    *,
    pretty: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return Response(orjson.dumps(body, option=option), status, headers, media_type=FHIR_JSON)


def _outcome(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> Response:
    return fhir_response(operation_outcome(message, code=code), status, headers=headers)


def _shown(name: str) -> str:
    """A parameter name fit to repeat in an answer."""
    return name if _SAFE_NAME.match(name) else "(a parameter with unusual characters)"


# ---------------------------------------------------------------- one search


class Query:
    """A search request, parsed: what to match, how to order and page, what was ignored."""

    def __init__(
        self, resource_type: str, pairs: Sequence[tuple[str, str]], base: str, *, strict: bool
    ) -> None:
        if len(pairs) > MAX_PARAMETERS:
            raise SearchError(f"more than {MAX_PARAMETERS} search parameters in one search")
        self.criteria: list[Criterion] = []
        self.applied: list[tuple[str, str]] = []
        self.sort: list[tuple[Param, bool]] = []
        self.count = DEFAULT_COUNT
        self.offset = 0
        self.summary_count = False
        self.pretty = False
        self.ignored: list[str] = []
        self._strict = strict
        self._type = resource_type
        params = parameters_for(resource_type)
        for name, value in pairs:
            if value == "":
                continue  # FHIR R4: a parameter without a value is ignored
            stem, _, modifier = name.partition(":")
            if stem in CONTROL:
                if modifier:
                    raise SearchError(f"parameter '{stem}' takes no modifier")
                self._control(stem, value, params)
                continue
            param = params.get(stem)
            if param is None:
                self._not_applied(_shown(name))
                continue
            check_modifier(param, modifier)
            values = parse_values(param, modifier, value, base)
            self.criteria.append(Criterion(param, modifier, values))
            self.applied.append((name, value))

    def _not_applied(self, what: str) -> None:
        if self._strict:
            raise SearchError(
                f"parameter '{what}' is not supported on {self._type} (GET /metadata lists "
                "the supported ones); refused because the request asked handling=strict",
                code="not-supported",
            )
        self.ignored.append(what)

    def _control(self, name: str, value: str, params: dict[str, Param]) -> None:
        if name in ("_count", "_offset"):
            if not value.isdigit() or len(value) > 9:
                raise SearchError(f"parameter '{name}' must be a whole number, 0 or more")
            if name == "_count":
                self.count = min(int(value), MAX_COUNT)
            else:
                self.offset = int(value)
        elif name == "_sort":
            kept = []
            for item in value.split(","):
                desc = item.startswith("-")
                param = params.get(item.removeprefix("-"))
                if param is None or not (param.name == "_id" or param.kind == "date"):
                    self._not_applied(f"_sort={_shown(item)}")
                    continue
                self.sort.append((param, desc))
                kept.append(item)
            if kept:
                self.applied.append(("_sort", ",".join(kept)))
        elif name == "_format":
            if value not in _JSON_FORMATS:
                raise SearchError(
                    "parameter '_format': this server answers JSON only (application/fhir+json)",
                    code="not-supported",
                    status=406,
                )
        elif name == "_pretty":
            self.pretty = value == "true"
        elif name == "_summary":
            if value == "count":
                self.summary_count = True
                self.applied.append(("_summary", "count"))
            elif value != "false":
                self._not_applied(f"_summary={_shown(value)}")
        # _total: the total is always counted exactly

    def run(self, store: Store) -> list[JsonObject]:
        found = [
            held.resource
            for held in store.of_type(self._type)
            if all(c.matches(held.resource) for c in self.criteria)
        ]
        for param, desc in reversed(self.sort):
            keyed = [(_sort_key(param, r), r) for r in found]
            present = [item for item in keyed if item[0] is not None]
            present.sort(key=lambda item: item[0], reverse=desc)  # type: ignore[arg-type,return-value]
            found = [r for _, r in present] + [r for key, r in keyed if key is None]
        return found


def _sort_key(param: Param, resource: JsonObject) -> str | datetime | None:
    if param.name == "_id":
        ident = resource.get("id")
        return ident if isinstance(ident, str) else None
    spans = param.extract(resource)
    return min((sort_instant(span) for span in spans), default=None)


def searchset(query: Query, found: list[JsonObject], resource_type: str, base: str) -> JsonObject:
    total = len(found)
    count = 0 if query.summary_count else query.count
    page = found[query.offset : query.offset + count] if count else []

    def link(relation: str, offset: int) -> dict[str, str]:
        pairs = [*query.applied, ("_count", str(count))]
        if offset:
            pairs.append(("_offset", str(offset)))
        return {"relation": relation, "url": f"{base}/{resource_type}?{urlencode(pairs)}"}

    links = [link("self", query.offset)]
    if count:
        last = max(0, (total - 1) // count * count)
        links.append(link("first", 0))
        if query.offset > 0:
            links.append(link("previous", max(0, min(query.offset - count, last))))
        if query.offset + count < total:
            links.append(link("next", query.offset + count))
        links.append(link("last", last))
    entries: list[JsonObject] = []
    if query.ignored:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": operation_outcome(
                    "parameters not applied (not supported here, see GET /metadata): "
                    + ", ".join(query.ignored),
                    code="not-supported",
                    severity="warning",
                ),
                "search": {"mode": "outcome"},
            }
        )
    entries += [
        {
            "fullUrl": f"{base}/{resource_type}/{resource['id']}",
            "resource": resource,
            "search": {"mode": "match"},
        }
        for resource in page
    ]
    bundle: JsonObject = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle


# ---------------------------------------------------------------- the CapabilityStatement


def capability_statement(store: Store, base: str) -> JsonObject:
    resources = []
    for resource_type in sorted(store.by_type):
        resources.append(
            {
                "type": resource_type,
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "versioning": "no-version",
                "readHistory": False,
                "updateCreate": False,
                "searchParam": [
                    {"name": p.name, "type": p.kind, "documentation": p.documentation}
                    for p in parameters_for(resource_type).values()
                ],
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": store.loaded_at,
        "publisher": "therapy-cds",
        "kind": "instance",
        "software": {"name": "therapy-cds demo-fhir", "version": distribution_version()},
        "implementation": {
            "description": "Read-only demonstration FHIR server over sample bundles "
            "(fictional patients); no authorization",
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Read and type-level search only. Search results are paged "
                f"(_count, default {DEFAULT_COUNT}, at most {MAX_COUNT}); _sort on _id and the "
                "date parameters; _include and _revinclude are not supported. Unknown "
                "parameters are reported in an OperationOutcome entry, or refused with "
                "Prefer: handling=strict.",
                "security": {
                    "cors": True,
                    "description": "None: this server does no authorization. For SMART, put a "
                    "SMART launcher in front of it as authorization server and FHIR proxy.",
                },
                "resource": resources,
            }
        ],
    }


# ---------------------------------------------------------------- the application


def _strict(request: Request) -> bool:
    """``Prefer: handling=strict`` (else lenient, the FHIR default)."""
    prefer = request.headers.get("prefer", "").replace(";", ",").lower()
    return any(part.strip().replace(" ", "") == "handling=strict" for part in prefer.split(","))


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _known_type(store: Store, resource_type: str) -> None:
    if not RESOURCE_TYPE.match(resource_type):
        raise FhirError(404, "not a resource type; GET /metadata lists what is served", "not-found")
    if resource_type not in store.by_type:
        raise FhirError(
            404,
            f"no {resource_type} resources are served here; GET /metadata lists what is",
            "not-supported",
        )


async def _form_body(request: Request) -> list[tuple[str, str]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise FhirError(
            415,
            "POST _search takes its parameters as application/x-www-form-urlencoded",
            "not-supported",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SEARCH_BODY:
            raise FhirError(
                413, f"the search body is larger than {MAX_SEARCH_BODY} bytes", "too-costly"
            )
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise FhirError(400, "the search body is not UTF-8 text", "invalid") from None


def create_demo_app(store: Store) -> FastAPI:
    """The FHIR API over ``store``."""
    app = FastAPI(
        title="therapy-cds demo FHIR server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "Prefer", "Accept"],
    )

    @app.exception_handler(FhirError)
    async def fhir_error(_: Request, exc: FhirError) -> Response:
        return _outcome(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(SearchError)
    async def search_error(_: Request, exc: SearchError) -> Response:
        return _outcome(exc.status, exc.message, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return _outcome(
                405, "this server is read-only", "not-supported", dict(exc.headers or {})
            )
        if exc.status_code == 404:
            return _outcome(
                404, "no such endpoint; GET /metadata lists what is served", "not-found"
            )
        return _outcome(exc.status_code, "the request cannot be answered", "processing")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        return _outcome(400, "the request is not valid", "invalid")

    @app.get("/metadata")
    async def metadata(request: Request) -> Response:
        return fhir_response(
            capability_statement(store, _base(request)),
            pretty=request.query_params.get("_pretty") == "true",
        )

    @app.get("/")
    async def system_search() -> Response:
        raise FhirError(
            400,
            "system-wide search is not supported: search one type (GET /Patient); "
            "GET /metadata lists the types",
            "not-supported",
        )

    @app.api_route("/", methods=["POST", "PUT", "PATCH", "DELETE"])
    async def system_write() -> Response:
        raise FhirError(
            405,
            "this server is read-only: no batch or transaction",
            "not-supported",
            {"Allow": "GET"},
        )

    async def _search(
        request: Request, resource_type: str, pairs: list[tuple[str, str]]
    ) -> Response:
        _known_type(store, resource_type)
        base = _base(request)
        query = Query(resource_type, pairs, base, strict=_strict(request))
        bundle = searchset(query, query.run(store), resource_type, base)
        return fhir_response(bundle, pretty=query.pretty)

    @app.get("/{resource_type}")
    async def search_get(resource_type: str, request: Request) -> Response:
        return await _search(request, resource_type, list(request.query_params.multi_items()))

    @app.post("/{resource_type}/_search")
    async def search_post(resource_type: str, request: Request) -> Response:
        _known_type(store, resource_type)
        pairs = list(request.query_params.multi_items()) + await _form_body(request)
        return await _search(request, resource_type, pairs)

    @app.api_route("/{resource_type}", methods=["POST", "PUT", "PATCH", "DELETE"])
    async def type_write(resource_type: str) -> Response:
        raise FhirError(
            405,
            "this server is read-only: no create, update or delete",
            "not-supported",
            {"Allow": "GET"},
        )

    @app.get("/{resource_type}/{ident}")
    async def read(resource_type: str, ident: str, request: Request) -> Response:
        _known_type(store, resource_type)
        if not FHIR_ID.match(ident):
            raise FhirError(400, f"the {resource_type} id is not a FHIR id", "invalid")
        resource = store.get(resource_type, ident)
        if resource is None:
            raise FhirError(404, f"no {resource_type} with that id", "not-found")
        return fhir_response(resource, pretty=request.query_params.get("_pretty") == "true")

    @app.api_route("/{resource_type}/{ident}", methods=["POST", "PUT", "PATCH", "DELETE"])
    async def instance_write(resource_type: str, ident: str) -> Response:
        raise FhirError(
            405,
            "this server is read-only: no update, patch or delete",
            "not-supported",
            {"Allow": "GET"},
        )

    return app
