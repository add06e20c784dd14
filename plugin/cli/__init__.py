"""The ``therapy-cds`` command line: serve, check, invoke, audit, data, feedback, demo-fhir.

Each command lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

from plugin.cli import audit as _audit  # noqa: F401
from plugin.cli import check as _check  # noqa: F401
from plugin.cli import data as _data  # noqa: F401
from plugin.cli import demo_fhir as _demo_fhir  # noqa: F401
from plugin.cli import feedback as _feedback  # noqa: F401
from plugin.cli import invoke as _invoke  # noqa: F401
from plugin.cli import serve as _serve  # noqa: F401  (registers the command)
from plugin.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
