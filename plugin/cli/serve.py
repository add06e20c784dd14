"""``therapy-cds serve``: run the service with uvicorn."""

from __future__ import annotations

import os
import sys

import typer
from pydantic import ValidationError

from plugin.cli._app import app, browsable_host


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(1, min=1, help="Worker processes."),
    dev: bool = typer.Option(
        False, "--dev", help="Development mode: client authentication OFF. Never in production."
    ),
) -> None:
    """Run the CDS Hooks service (discovery at /cds-services)."""
    import uvicorn

    from plugin.settings import Settings

    if dev:
        # Through the environment so that every worker process sees the same settings.
        os.environ["THERAPY_CDS_DEV_MODE"] = "true"
        os.environ["THERAPY_CDS_REQUIRE_AUTH"] = "false"
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            typer.echo(f"therapy-cds: configuration error: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    from plugin.rules.cms_data import CmsFileError, tables_from

    try:  # the CMS data files: refused here with their line, before any worker starts
        tables_from(settings.ptp_files, settings.mue_files)
    except CmsFileError as exc:
        typer.echo(f"therapy-cds: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    from plugin.web.smart_session import SessionKeyError, session_key, sqlite_file

    if settings.session_key is None and sqlite_file(settings.database_url) is not None:
        try:  # development: the key kept beside the database, made here before any worker starts
            session_key(settings)
        except SessionKeyError as exc:
            typer.echo(f"therapy-cds: configuration error: {exc}", err=True)
            raise typer.Exit(2) from None
    if not settings.require_auth:
        typer.secho(
            "*** DEVELOPMENT MODE: client authentication is OFF. Any caller can invoke the "
            "services. Do not expose this instance to patient data. ***",
            fg=typer.colors.RED,
            bold=True,
            err=True,
        )
    shown = browsable_host(host)
    typer.echo(f"therapy-cds: discovery at http://{shown}:{port}/cds-services", err=True)
    _announce_sandbox(settings.require_auth, host, port)
    sys.stderr.flush()
    uvicorn.run(
        "plugin.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        timeout_worker_healthcheck=settings.worker_healthcheck_seconds,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def _announce_sandbox(require_auth: bool, host: str, port: int) -> None:
    """Where the sandbox page is, when it is served, and whether it has samples to offer."""
    from plugin.web.samples import scenarios
    from plugin.web.settings import WebSettings

    try:
        web = WebSettings()
    except ValidationError:
        return  # the application reports its own configuration errors at start-up
    if not web.sandbox_enabled(require_auth=require_auth):
        return
    typer.echo(
        f"therapy-cds: sandbox page at http://{browsable_host(host)}:{port}/sandbox", err=True
    )
    count = len(scenarios(web.sample_bundles_dir))
    if count:
        typer.echo(f"therapy-cds: {count} sample bundles offered on the sandbox page", err=True)
    else:
        typer.secho(
            f"therapy-cds: no sample bundles: no readable scenarios.json in "
            f"{web.sample_bundles_dir} (THERAPY_CDS_SAMPLE_BUNDLES_DIR); the sandbox page lists "
            "none, paste or upload a bundle there",
            fg=typer.colors.YELLOW,
            err=True,
        )
