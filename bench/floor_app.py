"""The floor for ``bench_service.py``: a bare ASGI app that reads the body, parses it with orjson
and answers ``{"cards": []}``. No framework, no validation: what uvicorn plus JSON parsing cost
on this machine, the most any Python service could do with the same payload.

Usage: ``python bench/floor_app.py PORT`` (serves on 127.0.0.1 only).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EMPTY = orjson.dumps({"cards": []})
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(EMPTY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status = 200
    try:
        payload = orjson.loads(body) if body else None
        if not isinstance(payload, dict):
            status = 400
    except orjson.JSONDecodeError:
        status = 400
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": EMPTY})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
