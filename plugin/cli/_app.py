"""The Typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="therapy-cds",
    help="CDS Hooks service and offline checker for PT/OT timed-code billing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
