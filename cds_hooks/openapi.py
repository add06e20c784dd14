"""The OpenAPI description of the CDS Hooks routes: request bodies, responses, error answers.

:func:`cds_hooks.install.install_cds_hooks` hands these to FastAPI's routes, so the document
FastAPI builds (``/openapi.json``) describes each service at its own path with the request body
that service accepts (:func:`service_request_body`: its hook, and the context members it
requires, typed from :data:`cds_hooks.service.CONTEXT_KINDS`, which the request check reads
too). Every schema is derived from a model: the request and feedback bodies from what
:class:`~cds_hooks.models.CdsRequest` and :class:`~cds_hooks.models.FeedbackRequest` accept,
the answers from the wire models (:mod:`cds_hooks.wire_schema`); only the OperationOutcome of
the error answers, which no model sends, is written out here.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from pydantic import BaseModel

from cds_hooks.models import CdsRequest, FeedbackRequest
from cds_hooks.service import CdsService, context_kind
from cds_hooks.wire_schema import discovery_schema, inline_definitions, response_schema

__all__ = [
    "DISCOVERY_RESPONSES",
    "FEEDBACK_BODY",
    "FEEDBACK_RESPONSES",
    "INVOKE_RESPONSES",
    "service_request_body",
    "service_request_schema",
]


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema (what it validates, by alias), self-contained, so the request
    body in the OpenAPI document is derived from the model and stands on its own."""
    return inline_definitions(model.model_json_schema(by_alias=True, mode="validation"))


# What CdsRequest accepts: its members by alias, optional ones also as null (read as absent);
# the context members each service requires are added by ``service_request_schema``.
_REQUEST_SCHEMA = _inline_schema(CdsRequest)
# What FeedbackRequest accepts, member by member (spec 2.0 "Feedback"), limits included: a body
# the schema allows is stored, one it refuses is a 400. Other members are kept, as the spec lets
# clients add them.
_FEEDBACK_SCHEMA = _inline_schema(FeedbackRequest)
_OUTCOME = {
    "application/fhir+json": {
        "schema": {
            "type": "object",
            "required": ["resourceType", "issue"],
            "properties": {
                "resourceType": {"const": "OperationOutcome"},
                "issue": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["severity", "code"],
                        "properties": {
                            "severity": {"enum": ["fatal", "error", "warning", "information"]},
                            "code": {"type": "string"},
                            "diagnostics": {"type": "string"},
                        },
                    },
                },
            },
        }
    }
}


def _error_docs(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request",
        401: "Missing or invalid client JWT",
        404: "Unknown service",
        412: "Required data unavailable",
        413: "Request body too large",
        415: "Request body not sent as application/json",
        500: "Internal error",
    }
    return {code: {"description": text[code], "content": _OUTCOME} for code in codes}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    """An operation's ``requestBody`` (for a route's ``openapi_extra``)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


#: ``GET /cds-services``.
DISCOVERY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": discovery_schema()}}},
    **_error_docs(401),
}
#: ``POST /cds-services/{id}``.
INVOKE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": response_schema()}}},
    **_error_docs(400, 401, 404, 412, 413, 415, 500),
}
#: ``POST /cds-services/{id}/feedback``.
FEEDBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Accepted (stored once, however often it is sent)",
        "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}},
    },
    **_error_docs(400, 401, 404, 413, 415, 500),
    400: {
        "description": (
            "Malformed request, or items refused: one issue per refused item "
            "(at most 50), then an informational issue saying how many of the "
            "other items were stored"
        ),
        "content": _OUTCOME,
    },
}
#: The feedback request body (``openapi_extra`` of the feedback route).
FEEDBACK_BODY = _body(_FEEDBACK_SCHEMA)


def service_request_schema(service: CdsService) -> dict[str, Any]:
    """The request body ``service`` accepts: the generic request with its hook as a constant
    and the context members it requires, each with the schema of its kind
    (:data:`~cds_hooks.service.CONTEXT_KINDS`, what ``CdsService.check_context`` enforces)."""
    required = service.context_requirements
    properties = dict(_REQUEST_SCHEMA["properties"])
    properties["hook"] = {"const": service.hook}
    properties["context"] = {
        "type": "object",
        "required": list(required),
        "properties": {name: deepcopy(dict(context_kind(name).schema)) for name in required},
    }
    return {**_REQUEST_SCHEMA, "properties": properties}


def service_request_body(service: CdsService) -> dict[str, Any]:
    """``service``'s request body (``openapi_extra`` of its route)."""
    return _body(service_request_schema(service))
