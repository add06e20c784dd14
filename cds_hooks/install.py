"""Serving a :class:`~cds_hooks.runtime.CdsHooks` runtime from a FastAPI application.

:func:`install_cds_hooks` adds ordinary FastAPI routes (one router, included in the app) and
the CORS middleware:

* ``GET /cds-services`` -- discovery (B-1);
* ``POST /cds-services/{id}`` -- one route per registered service, documented with the request
  body that service accepts (:func:`cds_hooks.openapi.service_request_body`), then the generic
  route for any other id (404) and the path variants (trailing slash, ``//`` from the
  sandbox), which the document leaves out;
* ``POST /cds-services/{id}/feedback`` (F-1);
* 405 for the other methods on these paths, 404 for any other path below ``/cds-services``.

A service registered after installation gets its route (and its place in the document) when
it is registered. Nothing of the application is replaced: its lifespan, middleware stack and
OpenAPI document are FastAPI's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response

from cds_hooks.cors import CorsMiddleware
from cds_hooks.openapi import (
    DISCOVERY_RESPONSES,
    FEEDBACK_BODY,
    FEEDBACK_RESPONSES,
    INVOKE_RESPONSES,
    service_request_body,
)
from cds_hooks.runtime import BASE_PATH, CallObserver, CdsHooks
from cds_hooks.service import CdsService

__all__ = ["install_cds_hooks"]

_OTHER_METHODS = ("PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")


def install_cds_hooks(
    app: FastAPI, runtime: CdsHooks, *, observers: Iterable[CallObserver] = ()
) -> CdsHooks:
    """Serve ``runtime`` from ``app`` (B-1, C-1, F-1, CORS-1/2) and tell ``observers`` about
    every call (added to the runtime's own). Call before the application starts; the
    application's lifespan should enter ``runtime.lifespan()``. Returns ``runtime``."""
    for observer in observers:
        runtime.add_observer(observer)
    router = APIRouter(tags=["CDS Hooks"])
    for path, in_schema in ((BASE_PATH, True), (BASE_PATH + "/", False)):
        router.add_api_route(
            path,
            runtime.discovery,
            methods=["GET"],
            summary="CDS Hooks discovery",
            responses=DISCOVERY_RESPONSES,
            include_in_schema=in_schema,
        )
    for service in runtime.registry:
        _add_service_route(router, runtime, service)
    for suffix in ("", "/"):
        router.add_api_route(
            BASE_PATH + "/{service_id}" + suffix,
            runtime.invoke,
            methods=["POST"],
            include_in_schema=False,  # documented per service, above
        )
        router.add_api_route(
            BASE_PATH + "/{service_id}/feedback" + suffix,
            runtime.feedback,
            methods=["POST"],
            summary="Feedback on cards",
            responses=FEEDBACK_RESPONSES,
            openapi_extra=FEEDBACK_BODY,
            include_in_schema=suffix == "",
        )
    for path in (BASE_PATH, BASE_PATH + "/"):
        router.add_api_route(
            path, runtime.not_allowed, methods=[*_OTHER_METHODS, "POST"], include_in_schema=False
        )
    for suffix in ("", "/"):
        for tail in ("/{service_id}", "/{service_id}/feedback"):
            router.add_api_route(
                BASE_PATH + tail + suffix,
                runtime.not_allowed,
                methods=[*_OTHER_METHODS, "GET"],
                include_in_schema=False,
            )
    router.add_api_route(
        BASE_PATH + "/{rest:path}",
        runtime.not_found,
        methods=["GET", "POST", *_OTHER_METHODS],
        include_in_schema=False,
    )
    # Services registered later get their route too (after the generic one, which answers
    # them the same way until then; the route is what puts them in the document).
    runtime.registry.subscribe(lambda service: _add_service_route(router, runtime, service))
    app.include_router(router)
    app.add_middleware(CorsMiddleware, origins=runtime.config.cors_origins, path_prefix=BASE_PATH)
    return runtime


def _add_service_route(router: APIRouter, runtime: CdsHooks, service: CdsService) -> None:
    router.add_api_route(
        f"{BASE_PATH}/{service.id}",
        _invoke_endpoint(runtime, service.id),
        methods=["POST"],
        operation_id=f"invoke_{service.id}",
        summary=f"{service.title} ({service.hook})",
        description=service.description,
        responses=INVOKE_RESPONSES,
        openapi_extra=service_request_body(service),
    )


def _invoke_endpoint(
    runtime: CdsHooks, service_id: str
) -> Callable[[Request], Awaitable[Response]]:
    async def invoke(request: Request) -> Response:
        return await runtime.invoke(request, service_id)

    return invoke
