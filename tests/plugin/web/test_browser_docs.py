"""/docs in real headless Chromium with every request off loopback refused (issue 18).

Swagger UI used to come from a CDN, so on a hospital network without outside access the page
was blank. Now its files are served by the service itself: the page must render the operations
with the browser unable to reach anything but the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from web_support import LiveServer, chromium_context, dev_settings, needs_chromium, screenshot

from plugin.app import create_app

pytestmark = [pytest.mark.browser, needs_chromium]

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    app = create_app(dev_settings(tmp_path_factory.mktemp("docs")))
    with LiveServer(app) as live:
        yield live


def test_docs_render_with_outside_access_blocked(server: LiveServer) -> None:
    requested: list[str] = []
    blocked: list[str] = []
    errors: list[str] = []

    def route(route: Any) -> None:
        url = route.request.url
        requested.append(url)
        host = urlsplit(url).hostname or ""
        if urlsplit(url).scheme in ("http", "https") and host not in LOOPBACK:
            blocked.append(url)
            route.abort("blockedbyclient")
        else:
            route.continue_()

    with chromium_context() as context:
        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{server.url}/docs")
        operation = page.locator(
            ".opblock.opblock-post:has(.opblock-summary-path"
            "[data-path='/cds-services/therapy-timed-codes'])"
        )
        operation.wait_for(timeout=20_000)
        assert page.locator(".opblock").count() >= 3
        assert page.locator(".swagger-ui .info .title").inner_text().startswith("therapy-cds")
        screenshot(page, "docs-offline.png")
        page.close()

    assert blocked == [], blocked
    assert errors == [], errors
    assert f"{server.url}/docs-assets/swagger-ui-bundle.js" in requested
    assert f"{server.url}/openapi.json" in requested
    assert all(urlsplit(url).hostname in LOOPBACK for url in requested), requested
