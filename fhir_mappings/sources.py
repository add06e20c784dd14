"""Where resources come from: Bundles, single resources, CDS Hooks requests, NDJSON lines.

This module only finds the resources and says where each one sat (``entry[3]``,
``prefetch.procedures.entry[0]``, ``context.draftOrders.entry[1]``, ``line 12``); it never reads
clinical fields. Problems with the container (a prefetch value that is an OperationOutcome, an
entry without a resource object, a Bundle whose ``entry`` is not a list) become
:class:`~fhir_mappings.model.MappingIssue` values; nothing here raises.

Accepted Bundle types: collection, searchset, transaction, batch, document, history, message,
subscription-notification, the two ``-response`` types, and no type at all (the CDS Hooks
Sandbox and several EHRs send ``draftOrders`` without one). Bundles nested in entries are
flattened. A searchset's ``next`` link is kept for the caller (:attr:`Collected.next_links`).

JSON objects are read as plain ``dict`` values (what ``json`` and ``orjson`` produce); a top-level
resource given as another ``Mapping`` is copied into a dict first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fhir_mappings.model import IssueCode, MappingIssue

JsonObject = Mapping[str, Any]

KNOWN_BUNDLE_TYPES = frozenset(
    {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
        "subscription-notification",
    }
)
_MAX_NESTING = 4
_CONTAINERS = frozenset({"Bundle", "OperationOutcome"})  # never data themselves


class SourcedResource(NamedTuple):
    """One resource and where it was found."""

    location: str  # "entry[3]", "prefetch.procedures.entry[0]", "line 12"
    resource: JsonObject
    full_url: str | None = None  # Bundle.entry.fullUrl, when given
    draft_order: bool = False  # came from CDS Hooks context.draftOrders: a charge being signed


@dataclass(slots=True)
class Collected:
    """Resources found in one input, with the container-level issues met on the way."""

    resources: list[SourcedResource] = field(default_factory=list)
    issues: list[MappingIssue] = field(default_factory=list)
    next_links: list[str] = field(default_factory=list)
    context_patient: str | None = None


def collect_bundle(
    bundle: JsonObject,
    into: Collected,
    prefix: str = "",
    *,
    draft_order: bool = False,
    depth: int = 0,
) -> None:
    """Add every entry resource of ``bundle`` (flattening nested Bundles) to ``into``."""
    where = prefix or "Bundle"
    bundle_type = bundle.get("type")
    if bundle_type is not None and (
        not isinstance(bundle_type, str) or bundle_type not in KNOWN_BUNDLE_TYPES
    ):
        into.issues.append(
            MappingIssue(
                where,
                "unknown Bundle.type; the entries are read as a collection",
                field="type",
                code=IssueCode.CONTAINER_NOTE,
            )
        )
    links = bundle.get("link")
    if isinstance(links, list):
        for link in links:
            if isinstance(link, dict) and link.get("relation") == "next":
                url = link.get("url")
                if isinstance(url, str) and url:
                    into.next_links.append(url)
    entries = bundle.get("entry")
    if entries is None:
        return
    if not isinstance(entries, list):
        into.issues.append(
            MappingIssue(
                where,
                "Bundle.entry is not a list; no entries read",
                field="entry",
                code=IssueCode.CONTAINER_NOTE,
            )
        )
        return
    head = f"{prefix}.entry[" if prefix else "entry["
    append = into.resources.append
    for index, entry in enumerate(entries):
        location = f"{head}{index}]"
        if not isinstance(entry, dict):
            into.issues.append(
                MappingIssue(
                    location, "entry is not a JSON object; skipped", code=IssueCode.MALFORMED_ENTRY
                )
            )
            continue
        resource = entry.get("resource")
        if resource is None:
            # DELETE requests, response-only entries: nothing to read, nothing wrong.
            continue
        full_url = entry.get("fullUrl")
        if type(full_url) is not str or not full_url:
            full_url = None
        if type(resource) is dict:
            resource_type = resource.get("resourceType")
            if type(resource_type) is str and resource_type and resource_type not in _CONTAINERS:
                # the common case, without the checks below
                append(
                    SourcedResource(
                        location=location,
                        resource=resource,
                        full_url=full_url,
                        draft_order=draft_order,
                    )
                )
                continue
        _add_resource(
            resource,
            into,
            location,
            full_url,
            draft_order=draft_order,
            depth=depth,
            search_mode=_search_mode(entry),
        )


def _search_mode(entry: JsonObject) -> str | None:
    search = entry.get("search")
    if isinstance(search, dict):
        mode = search.get("mode")
        return mode if isinstance(mode, str) else None
    return None


def _add_resource(
    resource: object,
    into: Collected,
    location: str,
    full_url: str | None,
    *,
    draft_order: bool,
    depth: int,
    search_mode: str | None = None,
) -> None:
    if not isinstance(resource, dict):
        if not isinstance(resource, Mapping):
            into.issues.append(
                MappingIssue(
                    location,
                    "resource is not a JSON object; skipped",
                    code=IssueCode.MALFORMED_ENTRY,
                )
            )
            return
        resource = dict(resource)  # the mappers read plain dicts, as json/orjson produce
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        into.issues.append(
            MappingIssue(
                location,
                "not a FHIR resource (no resourceType); skipped",
                field="resourceType",
                code=IssueCode.NOT_A_RESOURCE,
            )
        )
        return
    if resource_type == "Bundle":
        if depth >= _MAX_NESTING:
            into.issues.append(
                MappingIssue(
                    location, "Bundles nested too deeply; skipped", code=IssueCode.NESTED_BUNDLE
                )
            )
            return
        collect_bundle(resource, into, location, draft_order=draft_order, depth=depth + 1)
        return
    if resource_type == "OperationOutcome" and (search_mode == "outcome" or depth == 0):
        into.issues.append(_outcome_issue(location, resource))
        return
    into.resources.append(SourcedResource(location, resource, full_url, draft_order))


def _outcome_issue(location: str, outcome: JsonObject) -> MappingIssue:
    # Only severities and codes: diagnostics text may carry patient data.
    codes = []
    issues = outcome.get("issue")
    if isinstance(issues, list):
        for item in issues:
            if isinstance(item, dict):
                codes.append(f"{item.get('severity', '?')}/{item.get('code', '?')}")
    detail = ", ".join(codes[:5]) or "no issue codes"
    return MappingIssue(
        location,
        f"the server returned an OperationOutcome ({detail}) instead of data; nothing read here",
        resource="OperationOutcome",
        code=IssueCode.EXPORT_ERROR,
    )


def collect_resource(resource: object, into: Collected, location: str = "resource") -> None:
    """Add one top-level resource (a Bundle is expanded)."""
    _add_resource(resource, into, location, None, draft_order=False, depth=0)


def collect_resources(items: Iterable[tuple[str, object]], into: Collected) -> None:
    """Add already-parsed resources, each with the location to report issues against."""
    for location, resource in items:
        _add_resource(resource, into, location, None, draft_order=False, depth=0)


def patient_reference(patient_id: object) -> str | None:
    """``context.patientId`` ("123" or "Patient/123") -> "Patient/123"."""
    if not isinstance(patient_id, str) or not patient_id.strip():
        return None
    value = patient_id.strip()
    if "/" in value:
        parts = [p for p in value.split("/") if p]
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        return f"Patient/{parts[-1]}"
    return f"Patient/{value}"


def collect_cds_hooks(
    draft_orders: object,
    prefetch: Mapping[str, object] | None,
    into: Collected,
    *,
    patient_id: object = None,
) -> None:
    """Add ``context.draftOrders`` resources (as charges being signed) and every prefetch value.

    Prefetch values: a Bundle contributes its entries, a single resource itself; ``null`` means
    "no data" and is skipped; an OperationOutcome is reported as an issue, never read as data;
    legacy ``{"response": ..., "resource": ...}`` wrappers are unwrapped (cqf-ruler, pre-1.0).
    """
    into.context_patient = patient_reference(patient_id) or into.context_patient
    if draft_orders is not None:
        if isinstance(draft_orders, list):  # some clients send a bare array
            for index, item in enumerate(draft_orders):
                _add_resource(
                    item,
                    into,
                    f"context.draftOrders[{index}]",
                    None,
                    draft_order=True,
                    depth=0,
                )
        else:
            _add_resource(
                draft_orders, into, "context.draftOrders", None, draft_order=True, depth=0
            )
    if prefetch is None:
        return
    if not isinstance(prefetch, dict):
        into.issues.append(
            MappingIssue(
                "prefetch",
                "prefetch is not a JSON object; not read",
                code=IssueCode.MALFORMED_ENTRY,
            )
        )
        return
    for key, value in prefetch.items():
        location = f"prefetch.{key}"
        if value is None:
            continue
        if (
            isinstance(value, dict)
            and "resourceType" not in value
            and ("resource" in value or "response" in value)
        ):
            value = value.get("resource")
            if value is None:
                continue
        if not isinstance(value, dict):
            into.issues.append(
                MappingIssue(
                    location,
                    "prefetch value is not a FHIR resource; ignored",
                    code=IssueCode.NOT_A_RESOURCE,
                )
            )
            continue
        _add_resource(value, into, location, None, draft_order=False, depth=0)


def collect_cds_request(body: JsonObject, into: Collected) -> None:
    """Add the resources of a whole CDS Hooks request body (``context`` + ``prefetch``)."""
    context = body.get("context")
    draft_orders: object = None
    patient_id: object = None
    if isinstance(context, dict):
        draft_orders = context.get("draftOrders")
        patient_id = context.get("patientId")
    elif context is not None:
        into.issues.append(
            MappingIssue(
                "context", "context is not a JSON object; not read", code=IssueCode.MALFORMED_ENTRY
            )
        )
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        into.issues.append(
            MappingIssue(
                "prefetch",
                "prefetch is not a JSON object; not read",
                code=IssueCode.MALFORMED_ENTRY,
            )
        )
        prefetch = None
    collect_cds_hooks(draft_orders, prefetch, into, patient_id=patient_id)
