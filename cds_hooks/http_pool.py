"""The outbound HTTP client shared by FHIR callbacks and JWKS fetches.

One keep-alive pool per application. Created on first use (building an ``httpx.AsyncClient``
loads the TLS trust store, which is slow enough to matter when apps are built often, as in
tests) and closed by the application's shutdown when the pool created it.
"""

from __future__ import annotations

import httpx

__all__ = ["HttpPool"]


class HttpPool:
    """Holds an ``httpx.AsyncClient``: the caller's (never closed here) or one made lazily."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client
        self._owned = client is None

    @classmethod
    def wrap(cls, value: httpx.AsyncClient | HttpPool) -> HttpPool:
        return value if isinstance(value, HttpPool) else cls(value)

    def get(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._owned and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
