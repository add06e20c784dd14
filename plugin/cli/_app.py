"""The Typer application every command module registers on."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

#: The distribution name on PyPI (pyproject ``[project] name``).
DISTRIBUTION = "therapy-cds"

app = typer.Typer(
    name="therapy-cds",
    help="CDS Hooks service and offline checker for PT/OT timed-code billing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def distribution_version() -> str:
    """The installed distribution's version (from its metadata, so it is pyproject's)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def browsable_host(host: str) -> str:
    """The host to print in a URL for a server bound to ``host``: a wildcard bind address is not
    one, loopback reaches the server from this machine; IPv6 addresses go in brackets."""
    if host in ("0.0.0.0", ""):  # noqa: S104 (compared, not bound)
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"therapy-cds {distribution_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the installed version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """CDS Hooks service and offline checker for PT/OT timed-code billing."""
