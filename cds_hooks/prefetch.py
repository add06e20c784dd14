"""Prefetch templates and the prefetched data a handler sees (P-3..P-10, P-14).

Each declared key ends up in one of three states:

* ``PRESENT`` -- a FHIR resource or Bundle (from the request or fetched from ``fhirServer``);
* ``NULL``    -- the client sent ``null``: "no such data", satisfied and empty, never refetched
  (P-8);
* ``MISSING`` -- absent from the request (P-7), or reported as an ``OperationOutcome`` (P-9), or
  not a FHIR resource at all, and not (yet) fetched. ``reason`` says why, in words safe to send
  back in a 412.

A present searchset that carries a ``next`` link is *incomplete* until the remaining pages are
fetched (P-10); :meth:`Prefetch.require` refuses incomplete data rather than let a handler
reason over a partial list.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cds_hooks.errors import PrefetchUnavailable

__all__ = [
    "USER_TOKENS",
    "Prefetch",
    "PrefetchEntry",
    "PrefetchState",
    "classify_prefetch_value",
    "initial_entries",
    "next_link",
    "render_template",
    "template_tokens",
    "validate_template",
]

JsonObject = dict[str, Any]

#: Tokens identifying the user (P-4, new in 2.0), mapped to the resource type in ``userId``.
USER_TOKENS: Mapping[str, str] = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}

_TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_CONTEXT_TOKEN = re.compile(r"^context\.([A-Za-z_][A-Za-z0-9_]*)$")
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class PrefetchState(enum.Enum):
    PRESENT = "present"
    NULL = "null"
    MISSING = "missing"


@dataclass(frozen=True)
class PrefetchEntry:
    """One prefetch key after resolution. ``reason`` explains a MISSING key or an incomplete
    PRESENT one; it never contains request values."""

    key: str
    state: PrefetchState
    value: JsonObject | None = None
    reason: str | None = None
    complete: bool = True
    fetched: bool = False  # True when the data came from the FHIR server, not from prefetch

    def __repr__(self) -> str:  # never print resource content
        return (
            f"PrefetchEntry(key={self.key!r}, state={self.state.value}, "
            f"complete={self.complete}, fetched={self.fetched})"
        )


# ---------------------------------------------------------------- templates (P-4, P-5)


def template_tokens(template: str) -> list[str]:
    """The token expressions in a template, whitespace-trimmed: ``["context.patientId"]``."""
    return [m.group(1) for m in _TOKEN.finditer(template)]


def validate_template(key: str, template: str) -> None:
    """Refuse templates a 2.0 client could not fill (P-4) or that are not relative (P-3).

    Raises ``ValueError`` with a message naming the key.
    """
    if not _KEY.match(key):
        raise ValueError(f"prefetch key {key!r} must match {_KEY.pattern} (P-14)")
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"prefetch template for {key!r} must be a non-empty string")
    if "://" in template or template.startswith("/"):
        raise ValueError(f"prefetch template for {key!r} must be a relative FHIR URL (P-3)")
    for token in template_tokens(template):
        if token not in USER_TOKENS and not _CONTEXT_TOKEN.match(token):
            raise ValueError(
                f"prefetch template for {key!r} uses token {{{{{token}}}}}; only "
                "context.<field> and the user tokens are allowed in CDS Hooks 2.0 (P-4)"
            )
    leftover = _TOKEN.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise ValueError(f"prefetch template for {key!r} has unbalanced braces")


def _token_value(token: str, context: Mapping[str, Any]) -> str | None:
    if token in USER_TOKENS:
        user = context.get("userId")
        if not isinstance(user, str):
            return None
        kind, _, ident = user.partition("/")
        return ident if kind == USER_TOKENS[token] and ident and "/" not in ident else None
    match = _CONTEXT_TOKEN.match(token)
    if match is None:
        return None
    value = context.get(match.group(1))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float) and str(value) != "":
        return str(value)
    return None  # absent, null, object or array: not tokenizable (P-5)


def render_template(template: str, context: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Fill a template from the request context (P-4, P-5).

    Returns ``(relative_url, None)`` or ``(None, unresolved_token)`` when a token cannot be
    filled (e.g. ``context.encounterId`` absent), in which case the key stays missing -- the
    same rule the sandbox applies. Values are percent-encoded; values that would escape the
    path (``..`` segments) count as unresolved.
    """
    query_start = template.find("?")
    out: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(template):
        token = match.group(1)
        value = _token_value(token, context)
        if value is None:
            return None, token
        in_path = query_start < 0 or match.start() < query_start
        if in_path:
            segments = value.split("/")
            if any(seg in ("", ".", "..") for seg in segments):
                return None, token
            encoded = quote(value, safe="/")
        else:
            encoded = quote(value, safe="/")
        out.append(template[pos : match.start()])
        out.append(encoded)
        pos = match.end()
    out.append(template[pos:])
    return "".join(out), None


# ---------------------------------------------------------------- classification (P-7..P-10)

_ERROR_SEVERITIES = frozenset({"error", "fatal"})


def _is_error_outcome(resource: Any) -> bool:
    if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
        return False
    issues = resource.get("issue")
    if not isinstance(issues, list) or not issues:
        return True  # an OperationOutcome with nothing in it still is not data
    return any(
        isinstance(i, dict)
        and isinstance(i.get("severity"), str)
        and i["severity"] in _ERROR_SEVERITIES
        for i in issues
    )


def next_link(bundle: Mapping[str, Any]) -> str | None:
    """The ``link[relation=next].url`` of a Bundle, if any (P-10)."""
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None


def classify_prefetch_value(key: str, value: Any) -> PrefetchEntry:
    """Classify one value of the request's ``prefetch`` object (P-7..P-10)."""
    if value is None:
        return PrefetchEntry(key, PrefetchState.NULL)
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return PrefetchEntry(
            key, PrefetchState.MISSING, reason="the prefetched value is not a FHIR resource"
        )
    if value["resourceType"] == "OperationOutcome":
        return PrefetchEntry(
            key,
            PrefetchState.MISSING,
            reason="the client reported a prefetch error (OperationOutcome)",
        )
    if value["resourceType"] == "Bundle":
        entries = value.get("entry")
        if entries is not None and not isinstance(entries, list):
            return PrefetchEntry(
                key, PrefetchState.MISSING, reason="the prefetched Bundle has a malformed entry"
            )
        for item in entries or ():
            if isinstance(item, dict) and _is_error_outcome(item.get("resource")):
                return PrefetchEntry(
                    key,
                    PrefetchState.MISSING,
                    reason="the client reported a prefetch error (OperationOutcome in Bundle)",
                )
        if next_link(value) is not None:
            return PrefetchEntry(
                key,
                PrefetchState.PRESENT,
                value,
                reason="only the first page was prefetched and the rest was not fetched",
                complete=False,
            )
    return PrefetchEntry(key, PrefetchState.PRESENT, value)


# ---------------------------------------------------------------- what handlers see


class Prefetch(Mapping[str, PrefetchEntry]):
    """The resolved prefetch of one invocation, read-only.

    ``get`` is lenient (``None`` for null or missing); ``require`` raises
    :class:`PrefetchUnavailable` (412) for a missing or incomplete key; ``state`` tells the three
    cases apart. Keys never declared nor sent read as MISSING.
    """

    def __init__(self, entries: Mapping[str, PrefetchEntry]) -> None:
        self._entries = dict(entries)

    # Mapping protocol: key -> PrefetchEntry
    def __getitem__(self, key: str) -> PrefetchEntry:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        states = ", ".join(f"{k}={e.state.value}" for k, e in self._entries.items())
        return f"Prefetch({states})"

    def entry(self, key: str) -> PrefetchEntry:
        found = self._entries.get(key)
        if found is None:
            return PrefetchEntry(key, PrefetchState.MISSING, reason="it was not prefetched")
        return found

    def state(self, key: str) -> PrefetchState:
        return self.entry(key).state

    def is_present(self, key: str) -> bool:
        return self.state(key) is PrefetchState.PRESENT

    def is_null(self, key: str) -> bool:
        """True when the client said "no data" (P-8) -- distinct from absent."""
        return self.state(key) is PrefetchState.NULL

    def is_missing(self, key: str) -> bool:
        return self.state(key) is PrefetchState.MISSING

    def reason(self, key: str) -> str | None:
        return self.entry(key).reason

    def get(self, key: str, default: Any = None) -> Any:
        """The resource or Bundle for ``key``; ``default`` when null or missing. May be an
        incomplete first page; use :meth:`require` when completeness matters."""
        entry = self._entries.get(key)
        if entry is None or entry.value is None:
            return default
        return entry.value

    def require(self, key: str) -> JsonObject | None:
        """The data for ``key``; ``None`` when the client sent ``null`` (no such resource).

        Raises :class:`PrefetchUnavailable` (412, P-13) when the key is missing or only partly
        fetched, naming the key and the reason.
        """
        entry = self.entry(key)
        if entry.state is PrefetchState.MISSING:
            raise PrefetchUnavailable(key, entry.reason or "it was not prefetched")
        if not entry.complete:
            raise PrefetchUnavailable(key, entry.reason or "not all pages could be fetched")
        return entry.value

    def resources(self, key: str, *, required: bool = True) -> list[JsonObject]:
        """The resources behind ``key`` as a list: a Bundle's entry resources (skipping
        OperationOutcome entries), a single resource as ``[resource]``, ``[]`` for null.

        With ``required`` a missing or incomplete key raises :class:`PrefetchUnavailable`;
        otherwise it yields ``[]`` (missing) or what was received (incomplete).
        """
        value = self.require(key) if required else self.get(key)
        if value is None:
            return []
        if value.get("resourceType") != "Bundle":
            return [value]
        out: list[JsonObject] = []
        for item in value.get("entry") or ():
            resource = item.get("resource") if isinstance(item, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
                out.append(resource)
        return out


def initial_entries(
    templates: Mapping[str, str], sent: Mapping[str, Any] | None, context: Mapping[str, Any]
) -> dict[str, PrefetchEntry]:
    """Classify what the client sent and mark declared-but-absent keys MISSING (P-7).

    The reason for an absent key names the template token the context could not fill, if any
    (e.g. ``context.encounterId``, which the sandbox never sends).
    """
    entries = {key: classify_prefetch_value(key, value) for key, value in (sent or {}).items()}
    for key, template in templates.items():
        if key in entries:
            continue
        _, token = render_template(template, context)
        reason = "it was not prefetched"
        if token is not None:
            reason += f" and its template needs {{{{{token}}}}}, which the request does not carry"
        entries[key] = PrefetchEntry(key, PrefetchState.MISSING, reason=reason)
    return entries
