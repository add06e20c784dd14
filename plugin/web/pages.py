"""What every page shares: the Jinja2 environment, security headers, JSON bodies and errors.

Error messages say what is wrong and where, never echo the request body (patient data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from plugin.rules.vocabulary import (
    CHOICES,
    FROM_COVERAGE,
    FROM_COVERAGE_LABEL,
    CardPolicy,
    PairRule,
    PayerRule,
)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
ASSETS_PATH = "/assets"

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(("html", "xml"), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
# The rule vocabulary, for the forms' choices (templates/_rule_choices.html).
_env.globals.update(
    PayerRule=PayerRule,
    PairRule=PairRule,
    CardPolicy=CardPolicy,
    rule_choices=CHOICES,
    from_coverage=FROM_COVERAGE,
    from_coverage_label=FROM_COVERAGE_LABEL,
)

# Scripts, styles and images come from this service only; nothing is fetched elsewhere.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors {ancestors}"
)


def security_headers(*, embeddable: bool = False) -> dict[str, str]:
    """Headers for an HTML page. ``embeddable``: an EHR may show it in a frame (SMART app).

    The SMART pages leave ``form-action`` open: the launch form's answer redirects to the EHR's
    authorization server, and browsers apply ``form-action`` to that redirect too.
    """
    csp = _CSP.format(ancestors="*" if embeddable else "'self'")
    if not embeddable:
        csp += "; form-action 'self'"
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def render(
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    embeddable: bool = False,
) -> HTMLResponse:
    """Render ``templates/{name}`` into a page with the security headers."""
    html = _env.get_template(name).render(assets=ASSETS_PATH, **context)
    return HTMLResponse(
        html, status_code=status_code, headers=security_headers(embeddable=embeddable)
    )


def json_error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": message}, status_code=status_code, headers={"Cache-Control": "no-store"}
    )


class BodyError(Exception):
    """A request body the helpers cannot use; ``message`` is safe to show (no body content)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
