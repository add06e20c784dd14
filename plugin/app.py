"""Application assembly: settings -> storage -> protocol layer -> services -> pages.

``uvicorn plugin.app:create_app --factory`` (what ``therapy-cds serve`` runs) builds everything
from the environment; tests call :func:`create_app` with their own :class:`Settings`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from sqlalchemy import text

from cds_hooks import CdsHooks, CdsHooksConfig, install_cds_hooks, load_trusted_issuers
from cds_hooks.runtime import LOG_FIELDS
from fhir_mappings.writeback import warm_up as warm_up_suggestions
from plugin.cards_shown import CardsShown
from plugin.metrics import ServiceMetrics, serve_metrics
from plugin.rules.cms_data import tables_from, use_tables
from plugin.services import RuleChoice, build_registry
from plugin.settings import LogFormat, Settings
from plugin.storage import SqlCardStore, SqlFeedbackStore, SqlReplayStore, make_engine

logger = logging.getLogger("therapy_cds")

try:
    __version__ = version("therapy-cds")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"


_LOG_LINE = "%(asctime)s %(levelname)s %(name)s %(message)s"
_LOG_TIME = "%Y-%m-%dT%H:%M:%S"
#: uvicorn's loggers: their lines go through the service's handler (and format) too.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class _LineFormatter(logging.Formatter):
    """``time level logger message``; the time text is computed once per second, not per
    line (the service writes one line per call)."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._text = super().formatTime(record, datefmt)
            self._second = second
        return self._text


class _JsonFormatter(_LineFormatter):
    """One JSON object per line (``THERAPY_CDS_LOG_FORMAT=json``): ``time``, ``level``,
    ``logger``, then the call's fields as members for the one line per CDS call (what the text
    line says as key=value, see ``cds_hooks.runtime.LOG_FIELDS``), or ``message`` for any other
    line (the service's own and uvicorn's). A traceback, when a line has one, is ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, LOG_FIELDS, None)
        if isinstance(fields, dict):
            line.update((key, value) for key, value in fields.items() if key not in line)
        else:
            line["message"] = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def log_formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of the service's log lines for ``THERAPY_CDS_LOG_FORMAT``."""
    if log_format == "json":
        return _JsonFormatter(datefmt=_LOG_TIME)
    return _LineFormatter(_LOG_LINE, _LOG_TIME)


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Plain, parseable log lines (or JSON ones). Handlers log ids, counts and timings only
    (never bodies, patient identifiers or tokens). uvicorn's loggers hand their lines to the
    same handler, so a log pipeline gets one format. The record attributes no line uses
    (caller's source location, thread, process and process names) are not collected: the
    Python logging documentation's own optimisation for busy services."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_therapy_cds", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._therapy_cds = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(log_formatter(log_format))
    root.setLevel(level.upper())
    for name in _UVICORN_LOGGERS:
        # A logger uvicorn writes through its own handler writes through ours instead; one it
        # switched off (the access log: no handler, not propagating) stays off.
        uvicorn_logger = logging.getLogger(name)
        if uvicorn_logger.handlers:
            for own in list(uvicorn_logger.handlers):
                uvicorn_logger.removeHandler(own)
            uvicorn_logger.propagate = True
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _telemetry_config() -> TelemetryConfig:
    """FastAPI's built-in OpenTelemetry instrumentation when the deployment configures
    OpenTelemetry (any ``OTEL_*`` variable, or ``FASTAPI_OTEL_AUTO_CONFIGURE=true``); otherwise
    it is off, so no request pays for looking up providers that are not there. The service's
    own Prometheus metrics are always collected (``/metrics`` is served as the settings say)."""
    wanted = os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true" or any(
        name.startswith("OTEL_") for name in os.environ
    )
    if wanted:
        return {}
    return {"tracing": False, "metrics": False, "logs": False}


def cds_config(settings: Settings) -> CdsHooksConfig:
    """The protocol layer's configuration from the service settings."""
    issuers = (
        load_trusted_issuers(settings.trusted_issuers_file)
        if settings.trusted_issuers_file is not None
        else ()
    )
    return CdsHooksConfig(
        require_auth=settings.require_auth,
        public_base_url=settings.public_base_url,
        trusted_issuers=issuers,
        cors_origins=tuple(settings.cors_origins),
        fhir_server_allowlist=tuple(settings.fhir_server_allowlist),
        allow_unauthenticated_fhir=settings.allow_unauthenticated_fhir,
        fhir_request_timeout_seconds=settings.fhir_timeout_seconds,
        fhir_deadline_seconds=settings.fhir_deadline_seconds,
        fhir_max_response_bytes=settings.fhir_max_response_bytes,
    )


def _announce_operator_endpoints(settings: Settings) -> None:
    """Say at start-up what is served beside the API, and how to change it."""
    if not settings.metrics_served():
        logger.info("GET /metrics is off (set THERAPY_CDS_METRICS_TOKEN to serve it to a scraper)")
    elif settings.metrics_token is None and not settings.development:
        logger.warning(
            "GET /metrics is served without authentication (THERAPY_CDS_METRICS=true); "
            "set THERAPY_CDS_METRICS_TOKEN or expose it to your scraper only"
        )
    if settings.api_docs_served() and not settings.development:
        logger.warning("/docs and /openapi.json are served (THERAPY_CDS_API_DOCS=true)")


#: Where Swagger UI's script, style sheet and icon are served from (see :func:`install_api_docs`).
DOCS_ASSETS_PATH = "/docs-assets"


def install_api_docs(app: FastAPI) -> None:
    """``GET /docs``: Swagger UI over ``/openapi.json``, with every file it loads served by this
    service, so the page works on a network without outside access. The files are the ones the
    ``fastapi-offline`` package ships (swagger-ui-dist, kept current by that package); the page is
    FastAPI's own (``get_swagger_ui_html``, its documented self-hosting recipe). No validator
    badge: Swagger UI would otherwise send the document's URL to swagger.io's validator."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url
    assert openapi_url is not None

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. Refuses to start on unsafe or unreadable configuration."""
    settings = settings if settings is not None else Settings()
    configure_logging(settings.log_level, settings.log_format)
    # The CMS PTP / MUE files (issue 15): read before anything else, a bad file raises
    # CmsFileError naming its line and the service does not start; every entry point of the
    # process (services, sandbox, SMART app) then applies the same tables.
    use_tables(tables_from(settings.ptp_files, settings.mue_files))
    engine = make_engine(settings.database_url)
    # Cards shown per finding and week, counted in memory and flushed (plugin/cards_shown.py);
    # feedback is stored with the finding of its card.
    cards_shown = CardsShown(SqlCardStore(engine))
    feedback_store = SqlFeedbackStore(engine, topic_of=cards_shown.topic_of)
    replay_store = SqlReplayStore(engine)
    config = cds_config(settings)

    smart_launch = f"{settings.public_base_url}/smart/launch" if settings.public_base_url else None
    metrics = ServiceMetrics()  # GET /metrics (plugin/metrics.py), below
    registry = build_registry(
        RuleChoice(
            payer_rule=settings.payer_rule,
            pair_rule=settings.pair_interval_rule,
            card_policy=settings.card_policy,
            payer_mapping=settings.payer_mapping(),
        ),
        smart_launch_url=smart_launch,
        rules_url=f"{settings.public_base_url}/rules" if settings.public_base_url else None,
        on_findings=metrics.observe_findings,
        max_procedures_per_visit=settings.max_procedures_per_visit,
    )
    runtime = CdsHooks(
        cards_shown.wrap(registry), config, feedback_store, replay_store=replay_store
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """While the service runs (in each worker): cards shown are flushed periodically and
        at shutdown, then the runtime closes its outbound HTTP connections."""
        async with (
            runtime.lifespan(app),
            cards_shown.flushing(settings.feedback_flush_seconds),
        ):
            yield

    docs = settings.api_docs_served()  # /docs and /openapi.json: development by default
    app = FastAPI(
        title="therapy-cds",
        version=__version__,
        summary="CDS Hooks 2.0 service for PT/OT timed-code billing",
        docs_url=None,  # served from the package's files by install_api_docs, not a CDN
        openapi_url="/openapi.json" if docs else None,
        redoc_url=None,  # ReDoc is not served (it too would load from a CDN)
        telemetry=_telemetry_config(),
        lifespan=lifespan,
    )
    if docs:
        install_api_docs(app)
    app.state.settings = settings
    app.state.engine = engine
    app.state.feedback_store = feedback_store
    app.state.cards_shown = cards_shown

    # The CDS Hooks routes; the metrics count every call (latency, statuses, prefetch states,
    # feedback) as an observer of the runtime, and the findings through the services.
    install_cds_hooks(app, runtime, observers=[metrics])
    if settings.metrics_served():
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        serve_metrics(app, metrics, token=token)
    _announce_operator_endpoints(settings)
    warm_up_suggestions()  # no model building on the first request

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # any database failure means not ready
            logger.warning("readiness check failed: database unreachable")
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    if not settings.require_auth:
        logger.warning(
            "DEVELOPMENT MODE: client authentication is OFF; do not expose this instance"
        )
    # --- web pages (sandbox, SMART app, rule catalogue): plugin/web ---
    from plugin.web.install import install_web

    install_web(app, settings)
    # --- end web pages ---
    return app
