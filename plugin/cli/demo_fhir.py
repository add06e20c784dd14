"""``therapy-cds demo-fhir``: serve FHIR files as a read-only FHIR R4 server (no authorization)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from pydantic import ValidationError

from plugin.cli._app import app, browsable_host
from plugin.cli.check import expand_paths

#: Patients listed at start-up as ids to try.
EXAMPLES_SHOWN = 5


@app.command("demo-fhir")
def demo_fhir(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8080, help="TCP port."),
    bundles: list[Path] = typer.Option(
        [],
        "--bundles",
        help="A folder of FHIR JSON/NDJSON files, or one file (repeatable). Default: the sample "
        "bundles (THERAPY_CDS_SAMPLE_BUNDLES_DIR).",
    ),
) -> None:
    """Serve sample bundles as a read-only FHIR R4 server, for demos (no authorization)."""
    import uvicorn

    from plugin.demo_fhir import DemoFhirError, create_demo_app, load_store
    from plugin.web.settings import WebSettings

    if not bundles:
        try:
            bundles = [WebSettings().sample_bundles_dir]
        except ValidationError as exc:
            for error in exc.errors():
                typer.echo(f"therapy-cds: configuration error: {error['msg']}", err=True)
            raise typer.Exit(2) from None
    for path in bundles:
        if not path.exists():
            typer.echo(f"therapy-cds demo-fhir: {path}: no such file or folder", err=True)
            raise typer.Exit(2)
    try:
        store = load_store(expand_paths(bundles))
    except DemoFhirError as exc:
        typer.echo(f"therapy-cds demo-fhir: {exc}", err=True)
        raise typer.Exit(2) from None
    for note in store.notes:
        typer.secho(f"therapy-cds demo-fhir: note: {note}", fg=typer.colors.YELLOW, err=True)
    if not len(store):
        given = ", ".join(str(p) for p in bundles)
        typer.echo(
            f"therapy-cds demo-fhir: no FHIR R4 resources found in {given}; give a folder of "
            "FHIR JSON with --bundles",
            err=True,
        )
        raise typer.Exit(2)
    base = f"http://{browsable_host(host)}:{port}"
    say = typer.echo
    say(f"therapy-cds demo-fhir: read-only FHIR R4 server at {base} (no authorization)", err=True)
    say(f"  serving: {', '.join(f'{n} {t}' for t, n in store.counts().items())}", err=True)
    for key, new, source in store.renamed:
        say(f"  {key} of {source} differs from another file's: served as {new}", err=True)
    examples = list(store.examples())
    if examples:
        say("  patients and encounters to try (the file is the sample scenario):", err=True)
        for example in examples[:EXAMPLES_SHOWN]:
            visits = ", ".join(f"{ident} ({day})" for ident, day in example.encounters)
            say(
                f"    Patient {example.patient}  Encounter {visits or '-'}  [{example.source}]",
                err=True,
            )
        if len(examples) > EXAMPLES_SHOWN:
            say(f"    ... {len(examples) - EXAMPLES_SHOWN} more: GET {base}/Patient", err=True)
    say(f"  capability statement: GET {base}/metadata", err=True)
    sys.stderr.flush()
    uvicorn.run(
        create_demo_app(store),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # request URLs carry patient ids
    )
