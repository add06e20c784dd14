"""Fixtures for the protocol-layer tests (helpers live in ``cdsh_support``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from cdsh_support import make_app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app()), base_url="http://testserver"
    ) as c:
        yield c
