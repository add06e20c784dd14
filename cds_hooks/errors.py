"""One exception tree for the protocol layer, mapped to HTTP responses in one place.

Every non-2xx body is a FHIR ``OperationOutcome`` (H-4, 3.0-ballot practice that does no harm in
2.0). Messages say *what* is wrong and *where* (a member name, a prefetch key) but never carry a
value taken from the request: no body content, no pydantic ``input``, no URL query values, no
tokens. 401 bodies say nothing about which check failed (S-11).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from cds_hooks.models import NO_NUL

__all__ = [
    "CdsError",
    "InternalError",
    "InvalidRequest",
    "ItemsRefused",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "PrefetchUnavailable",
    "Unauthorized",
    "UnknownService",
    "UnsupportedMediaType",
    "describe_validation_error",
    "error_response",
    "json_response",
    "operation_outcome",
]

FHIR_JSON = "application/fhir+json"


class CdsError(Exception):
    """Base of every error the protocol layer turns into an HTTP response.

    ``diagnostics`` must be safe to show to the caller: written by us, never containing request
    content. Subclasses fix the HTTP status and the OperationOutcome ``issue.code``.
    """

    status_code: ClassVar[int] = 500
    issue_code: ClassVar[str] = "exception"
    default_message: ClassVar[str] = "the request could not be processed"

    def __init__(self, diagnostics: str | None = None) -> None:
        self.diagnostics = diagnostics or self.default_message
        super().__init__(self.diagnostics)

    def headers(self) -> dict[str, str]:
        return {}

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome body sent for this error."""
        return operation_outcome(self.diagnostics, code=self.issue_code)


class InvalidRequest(CdsError):  # noqa: N818 -- names fixed by the public API
    """400: malformed JSON, missing or mistyped REQUIRED members, hook/id mismatch (H-3)."""

    status_code = 400
    issue_code = "invalid"
    default_message = "the request is not a valid CDS Hooks request"


class ItemsRefused(InvalidRequest):
    """400 for a batch judged item by item (feedback, F-8): one issue per refused item, then
    an informational issue saying how many of the others were accepted. At most
    ``MAX_LISTED`` items are listed, so the answer stays small whatever the batch."""

    MAX_LISTED: ClassVar[int] = 50

    def __init__(self, refused: Sequence[str], *, accepted: int, total: int) -> None:
        self.refused = tuple(refused)
        self.accepted = accepted
        self.total = total
        super().__init__(
            f"{len(self.refused)} of {total} item(s) refused; {accepted} accepted and stored"
        )

    def outcome(self) -> dict[str, Any]:
        issues = [
            {"severity": "error", "code": self.issue_code, "diagnostics": text}
            for text in self.refused[: self.MAX_LISTED]
        ]
        unlisted = len(self.refused) - self.MAX_LISTED
        if unlisted > 0:
            issues.append(
                {
                    "severity": "error",
                    "code": self.issue_code,
                    "diagnostics": f"and {unlisted} more refused item(s)",
                }
            )
        issues.append(
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": (
                    f"{self.accepted} of {self.total} item(s) were stored; the "
                    f"{len(self.refused)} listed were refused and not stored. Correct and resend "
                    "them (resending stored items is harmless: each is stored once)."
                ),
            }
        )
        return {"resourceType": "OperationOutcome", "issue": issues}


class Unauthorized(CdsError):  # noqa: N818 -- names fixed by the public API
    """401: missing or invalid client JWT (S-3, S-11). The body never says which check failed;
    the reason is only logged (``reason`` is kept for that and never sent)."""

    status_code = 401
    issue_code = "login"
    default_message = "authentication is required: send a valid CDS Hooks client JWT"

    def __init__(self, reason: str = "unspecified") -> None:
        super().__init__(None)
        self.reason = reason
        #: iss / kid / jti of the rejected token, already sanitised; logged, never sent.
        self.log_fields: dict[str, str] = {}

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="cds-services"'}


class UnknownService(CdsError):  # noqa: N818 -- names fixed by the public API
    """404: no service with that id (H-3)."""

    status_code = 404
    issue_code = "not-found"
    default_message = "no CDS service with this id; see GET /cds-services for the list"


class MethodNotAllowed(CdsError):  # noqa: N818 -- names fixed by the public API
    """405: wrong HTTP method for an endpoint (H-3)."""

    status_code = 405
    issue_code = "not-supported"
    default_message = "method not allowed on this endpoint"

    def __init__(self, allowed: Sequence[str], diagnostics: str | None = None) -> None:
        super().__init__(diagnostics or f"method not allowed; use {', '.join(allowed)}")
        self.allowed = tuple(allowed)

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class PayloadTooLarge(CdsError):  # noqa: N818 -- names fixed by the public API
    """413: the request body exceeds the configured limit."""

    status_code = 413
    issue_code = "too-costly"
    default_message = "the request body is too large"


class UnsupportedMediaType(CdsError):  # noqa: N818 -- names fixed by the public API
    """415: a body sent with a media type other than JSON. Refusing ``text/plain`` and the form
    types is what keeps a cross-site page from posting without a CORS preflight."""

    status_code = 415
    issue_code = "not-supported"
    default_message = "the request body must be sent with Content-Type: application/json"


class PrefetchUnavailable(CdsError):  # noqa: N818 -- names fixed by the public API
    """412: data the service requires could be had neither from prefetch nor from the FHIR
    server (P-13, H-2). Names the prefetch key and why, never a URL or its query values."""

    status_code = 412
    issue_code = "processing"

    def __init__(self, key: str, reason: str = "it was not prefetched") -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"required prefetch key '{key}' is unavailable: {reason}")


class InternalError(CdsError):
    """500: a handler or store crashed. The message is generic on purpose; details are logged
    (exception type and location only, since exception messages may carry patient data)."""

    status_code = 500
    issue_code = "exception"
    default_message = "internal error while processing the request; it has been logged"


def operation_outcome(
    diagnostics: str, *, code: str = "processing", severity: str = "error"
) -> dict[str, Any]:
    """A minimal FHIR OperationOutcome with one issue (H-4)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def json_response(
    body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Serialise with orjson; the one place JSON bodies are produced."""
    return Response(
        content=orjson.dumps(body),
        status_code=status_code,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def error_response(error: CdsError) -> Response:
    """Map any :class:`CdsError` to its HTTP response. This is the only such mapping."""
    return Response(
        content=orjson.dumps(error.outcome()),
        status_code=error.status_code,
        headers=error.headers(),
        media_type=FHIR_JSON,
    )


# ------------------------------------------------------------- pydantic errors, made safe

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

_TYPE_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be an array",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "literal_error": "has a value outside the allowed codes",
    "enum": "has a value outside the allowed codes",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long",
}


def _location(loc: Iterable[int | str], known_names: frozenset[str]) -> str:
    """Render a pydantic ``loc`` as ``feedback[0].outcome``; names we do not know (which could
    be keys chosen by the caller) are replaced so nothing from the request is echoed."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if part in known_names and _SAFE_NAME.match(part) else "(member)"
            out += f".{name}" if out else name
    return out or "(body)"


def describe_validation_error(
    error: ValidationError,
    known_names: Iterable[str],
    *,
    limit: int = 5,
    prefix: Sequence[int | str] = (),
) -> str:
    """Turn a pydantic error into "member 'hookInstance' is required; ..." without input values.

    Only the error *type* is used, and for length limits the limit itself (from the model, so
    never request content); pydantic's ``msg`` and ``input`` are ignored because they can
    contain the offending value. ``prefix`` is prepended to every location (``feedback[3]``).
    """
    names = frozenset(known_names)
    parts: list[str] = []
    for item in error.errors(include_url=False, include_input=False)[:limit]:
        where = _location((*prefix, *item["loc"]), names)
        parts.append(f"member '{where}' {_problem(item['type'], item.get('ctx') or {})}")
    extra = error.error_count() - len(parts)
    if extra > 0:
        parts.append(f"and {extra} more problem(s)")
    return "; ".join(parts)


def _problem(kind: str, ctx: Mapping[str, Any]) -> str:
    if kind == "string_too_long" and isinstance(ctx.get("max_length"), int):
        return f"is too long (at most {ctx['max_length']} characters)"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NO_NUL:
        return "must not contain the NUL character (U+0000)"
    return _TYPE_MESSAGES.get(kind, "has an invalid value")
