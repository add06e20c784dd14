"""Mount the web pages (sandbox, SMART app, rule catalogue) on the application: one call,
:func:`install_web`, in :func:`plugin.app.create_app`."""

from __future__ import annotations

import logging

import httpx
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from plugin.settings import Settings
from plugin.storage import make_engine
from plugin.web.catalogue import catalogue_router
from plugin.web.feedback import feedback_router
from plugin.web.pages import ASSETS_PATH, STATIC
from plugin.web.sandbox import sandbox_router
from plugin.web.settings import WebSettings
from plugin.web.smart import SmartApp, smart_router

logger = logging.getLogger(__name__)

__all__ = ["WebSettings", "install_web"]


def install_web(
    app: FastAPI,
    settings: Settings,
    web: WebSettings | None = None,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Mount ``/sandbox`` (when enabled), ``/smart/*`` (its sessions on ``app.state.engine``,
    else on ``settings.database_url``), ``/rules``, ``/rules/feedback`` (when
    enabled: ``settings.feedback_page_served()``, on ``app.state.engine``) and their assets.

    ``http_transport``: how the SMART app reaches other servers (tests pass an in-process one).
    """
    web = web if web is not None else WebSettings()
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC), name="web-assets")
    sandbox_on = web.sandbox_enabled(require_auth=settings.require_auth)
    # The report reads the service's database; an app with pages only (tests) has none.
    feedback_on = settings.feedback_page_served() and hasattr(app.state, "engine")
    if feedback_on:
        app.include_router(feedback_router(app.state.engine, sandbox_on=sandbox_on))
    app.include_router(catalogue_router(web, sandbox_on=sandbox_on, feedback_on=feedback_on))
    # SMART sessions live in the service's database, so any worker serves any launch step; an
    # app with pages only (tests) opens the database the settings name.
    engine = getattr(app.state, "engine", None) or make_engine(settings.database_url)
    smart = SmartApp(settings, web, engine=engine, transport=http_transport)
    app.state.smart = smart
    app.include_router(smart_router(smart))
    if sandbox_on:
        app.include_router(sandbox_router(settings, web))

        @app.get("/", include_in_schema=False)
        async def home() -> RedirectResponse:
            return RedirectResponse("/sandbox", status_code=307)

        if settings.require_auth:
            logger.warning(
                "sandbox page enabled with client authentication on: it sends the JWT the user "
                "pastes (THERAPY_CDS_SANDBOX=true)"
            )
    else:
        logger.info("sandbox page off (client authentication is on; THERAPY_CDS_SANDBOX=true)")
