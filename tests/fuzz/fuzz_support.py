"""Shared pieces of the fuzz tests: the app under test, a sync caller, the example budget.

``make test`` runs a bounded number of examples per test (``FUZZ_EXAMPLES``, default 40);
``make fuzz`` raises it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_bundles"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
#: Planted in request content; must never come back in an error body or reach a log line.
MARKER = "QQFUZZMARKER7311"
ORDER_SIGN = "therapy-timed-codes"
DB_DIR = tempfile.TemporaryDirectory(prefix="therapy-cds-fuzz-")
DISCHARGE = "therapy-timed-codes-discharge"


def make_app() -> Any:
    # A file database: feedback is written from a worker thread, and every SQLite ":memory:"
    # connection would be a database of its own.
    return create_app(
        Settings(
            require_auth=False,
            dev_mode=True,
            database_url=f"sqlite:///{DB_DIR.name}/fuzz.db",
            log_level="INFO",
        )
    )


def sample_requests() -> list[tuple[str, dict[str, Any]]]:
    """(service id, request) for every sample bundle, both hooks where the bundle allows."""
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(SAMPLES.glob("*.json")):
        bundle = json.loads(path.read_text())
        if bundle.get("resourceType") != "Bundle":
            continue
        found.append((ORDER_SIGN, build_hook_request(bundle, hook="order-sign")))
        with contextlib.suppress(ValueError):  # no Encounter: no discharge request
            found.append((DISCHARGE, build_hook_request(bundle, hook="encounter-discharge")))
    return found


class Caller:
    """Posts to the app in-process from synchronous (hypothesis) tests, capturing the logs."""

    def __init__(self) -> None:
        self.app = make_app()
        self.runner = asyncio.Runner()
        self.records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: self.records.append(  # type: ignore[method-assign]
            record.getMessage() + " " + repr(record.__dict__.get("exc_info"))
        )
        self.handler = handler
        logging.getLogger().addHandler(handler)

    def close(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.runner.close()

    def post(
        self, path: str, content: bytes, content_type: str = "application/json"
    ) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.post(
                    path, content=content, headers={"content-type": content_type}
                )

        self.records.clear()
        return self.runner.run(call())


def caller() -> Iterator[Caller]:
    instance = Caller()
    try:
        yield instance
    finally:
        instance.close()
