"""Read one input file: a Bundle, a single resource, a CDS Hooks request, or NDJSON.

:func:`load_path` either returns an :class:`InputDocument` or raises :class:`InputError`, whose
message is one line naming the file, what is wrong and what to do; the CLI prints it and exits 2
(product contract, ``check``). Problems *inside* an otherwise readable input (one bad NDJSON line,
one entry without a resourceType) are :class:`~fhir_mappings.model.MappingIssue` values instead.
Messages never quote file contents.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from fhir_mappings.mapper import map_collected
from fhir_mappings.model import IssueCode, MappingIssue, TherapyRecord
from fhir_mappings.sources import (
    Collected,
    SourcedResource,
    collect_bundle,
    collect_cds_request,
    collect_resource,
)

_NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")
_CDS_REQUEST_KEYS = frozenset({"hook", "hookInstance", "context", "prefetch"})


class InputError(Exception):
    """An input that cannot be read at all. ``str(error)`` is the one-line message to show."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class InputKind(StrEnum):
    BUNDLE = "bundle"
    RESOURCE = "resource"
    CDS_HOOKS_REQUEST = "cds-hooks-request"
    NDJSON = "ndjson"


@dataclass(frozen=True, slots=True)
class InputDocument:
    """The resources of one input file and where each one sat."""

    source: str  # the path as given
    kind: InputKind
    resources: tuple[SourcedResource, ...]
    issues: tuple[MappingIssue, ...] = ()
    next_links: tuple[str, ...] = ()  # searchset "next" links: the input is one page of more
    context_patient: str | None = None  # CDS Hooks context.patientId ("Patient/x")
    bundle_type: str | None = None


def load_path(path: str | os.PathLike[str]) -> InputDocument:
    """Read ``path`` and find its resources; raise :class:`InputError` if it is unusable."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except FileNotFoundError:
        raise InputError(source, "file not found; check the path") from None
    except IsADirectoryError:
        raise InputError(source, "is a directory; give a JSON or NDJSON file") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(source, f"cannot be read ({reason}); check permissions") from None
    return load_bytes(raw, source)


def load_bytes(raw: bytes, source: str) -> InputDocument:
    """Like :func:`load_path` for bytes already in memory (``source`` names them in messages)."""
    if raw.startswith(b"\x1f\x8b"):  # gzip, as bulk-data exports are often stored
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise InputError(
                source, "is a damaged gzip file; re-export or re-download it"
            ) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise InputError(source, "file is empty; expected FHIR JSON or NDJSON")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            source, f"is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8 JSON"
        ) from None
    if raw.lstrip()[:1] == b"<":
        raise InputError(
            source, "looks like XML; this tool reads FHIR JSON, export the data as JSON"
        )
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if source.lower().endswith(_NDJSON_SUFFIXES) or _looks_like_ndjson(raw):
            return _load_ndjson(raw, source)
        raise InputError(
            source,
            f"is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "expected a FHIR resource, a Bundle, a CDS Hooks request or NDJSON",
        ) from None
    return load_json(document, source)


def load_json(document: object, source: str) -> InputDocument:
    """Classify one parsed JSON document (resource, Bundle or CDS Hooks request)."""
    if isinstance(document, list):
        raise InputError(
            source,
            "is a JSON array; expected one FHIR resource, a Bundle, a CDS Hooks request, "
            "or NDJSON (one resource per line)",
        )
    if not isinstance(document, Mapping):
        raise InputError(source, "is not a JSON object; expected FHIR JSON")
    found = Collected()
    resource_type = document.get("resourceType")
    if isinstance(resource_type, str) and resource_type:
        if resource_type == "Bundle":
            collect_bundle(document, found)
            bundle_type = document.get("type")
            return _document(
                source,
                InputKind.BUNDLE,
                found,
                bundle_type if isinstance(bundle_type, str) else None,
            )
        collect_resource(document, found, "resource")
        return _document(source, InputKind.RESOURCE, found)
    if "cards" in document or "services" in document or "feedback" in document:
        raise InputError(
            source,
            "is a CDS Hooks response or feedback body, not a request or FHIR data; "
            "give the request the EHR sent, or a Bundle",
        )
    if _CDS_REQUEST_KEYS.intersection(document):
        collect_cds_request(document, found)
        return _document(source, InputKind.CDS_HOOKS_REQUEST, found)
    raise InputError(
        source,
        "is JSON but not FHIR (no resourceType) and not a CDS Hooks request (no context or "
        "prefetch); give a Bundle, a resource, a CDS Hooks request or NDJSON",
    )


def _document(
    source: str, kind: InputKind, found: Collected, bundle_type: str | None = None
) -> InputDocument:
    return InputDocument(
        source=source,
        kind=kind,
        resources=tuple(found.resources),
        issues=tuple(found.issues),
        next_links=tuple(found.next_links),
        context_patient=found.context_patient,
        bundle_type=bundle_type,
    )


def _looks_like_ndjson(raw: bytes) -> bool:
    lines = [line for line in raw.splitlines() if line.strip()]
    return len(lines) > 1 and all(line.lstrip().startswith(b"{") for line in lines[:2])


def _load_ndjson(raw: bytes, source: str) -> InputDocument:
    found = Collected()
    good = bad = 0
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        location = f"line {number}"
        try:
            resource: Any = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            bad += 1
            found.issues.append(
                MappingIssue(
                    location,
                    f"not valid JSON (column {exc.colno}); line skipped",
                    code=IssueCode.INVALID_JSON,
                )
            )
            continue
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            bad += 1
            found.issues.append(
                MappingIssue(
                    location,
                    "not a FHIR resource (no resourceType); line skipped",
                    code=IssueCode.NOT_A_RESOURCE,
                )
            )
            continue
        good += 1
        collect_resource(resource, found, location)
    if good == 0:
        raise InputError(
            source,
            f"no line is a FHIR resource ({bad} unreadable lines); expected NDJSON with one "
            "resource per line",
        )
    return _document(source, InputKind.NDJSON, found)


def map_document(document: InputDocument, *, strict: bool = False) -> TherapyRecord:
    """Map a loaded input to a :class:`TherapyRecord` (fast path; ``strict`` validates first)."""
    found = Collected(
        resources=list(document.resources),
        issues=list(document.issues),
        next_links=list(document.next_links),
        context_patient=document.context_patient,
    )
    return map_collected(found, strict=strict)


def map_path(path: str | os.PathLike[str], *, strict: bool = False) -> TherapyRecord:
    """:func:`load_path` + :func:`map_document` in one call (raises :class:`InputError`)."""
    return map_document(load_path(path), strict=strict)
