"""CORS for the CDS Hooks endpoints (CORS-1, CORS-2).

A small pure-ASGI middleware instead of Starlette's so that (a) it only touches the
``/cds-services`` paths, (b) the headers land on every response, 4xx/5xx included, because it
wraps ``send`` rather than relying on the route, and (c) it can answer Chrome's Private Network
Access preflight. The JWT travels in a header, not a cookie, so no ``Allow-Credentials``.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds_hooks.errors import operation_outcome

__all__ = ["ALLOWED_HEADERS", "ALLOWED_METHODS", "CorsMiddleware"]

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"


class CorsMiddleware:
    """Answer preflights and decorate responses under ``path_prefix``.

    ``origins`` is an allowlist of exact origins (``scheme://host[:port]``); ``"*"`` allows any
    origin and is answered with ``Access-Control-Allow-Origin: *``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        origins: Sequence[str],
        path_prefix: str = "/cds-services",
        max_age: int = 600,
    ) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")
        self.prefix = path_prefix.rstrip("/")
        self.max_age = str(max_age)

    def _applies(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path == self.prefix or path.startswith(self.prefix + "/")

    def _allow_origin(self, origin: str | None) -> str | None:
        if origin is None:
            return None
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(scope):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        allowed = self._allow_origin(origin)
        if (
            scope["method"] == "OPTIONS"
            and origin is not None
            and "access-control-request-method" in headers
        ):
            await self._preflight(headers, allowed, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.add_vary_header("Origin")
                if allowed is not None:
                    out["Access-Control-Allow-Origin"] = allowed
                    out["Access-Control-Expose-Headers"] = "WWW-Authenticate"
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, headers: Headers, allowed: str | None, send: Send) -> None:
        if allowed is None:
            body = orjson.dumps(
                operation_outcome("origin not allowed for this service", code="forbidden")
            )
            await _respond(send, 403, [(b"content-type", b"application/json")], body)
            return
        out: list[tuple[bytes, bytes]] = [
            (b"access-control-allow-origin", allowed.encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", self.max_age.encode()),
        ]
        if headers.get("access-control-request-private-network", "").lower() == "true":
            out.append((b"access-control-allow-private-network", b"true"))
        await _respond(send, 204, out, b"")


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [
        *headers,
        (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
