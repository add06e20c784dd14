"""One key scheme for every resource and every reference in an input.

Key scheme (what ``TimedService.ref``, ``plan_refs``, ``patient``, ``encounter`` and the
``TherapyRecord.plans`` / ``encounters`` mappings use):

* a resource with an ``id`` is ``"Type/id"`` (``"Procedure/p1"``), whatever its fullUrl;
* a resource without an ``id`` is its entry's ``fullUrl`` (``"urn:uuid:..."``; an absolute
  RESTful fullUrl gives ``"Type/id"``), else ``"Type@location"``
  (``"ServiceRequest@context.draftOrders.entry[0]"``);
* a contained resource is ``"<container key>#<local id>"`` (``"Procedure/p1#plan"``).

References are normalised to the same scheme: ``urn:uuid:``/absolute fullUrls that name an entry
in the input become that entry's key; absolute URLs end in ``Type/id``; ``/_history/n`` is
dropped; ``#id`` is qualified with its container. A reference that cannot be resolved keeps its
normalised text (``urn:uuid:...`` stays as written) so it can still be reported as unresolved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def resource_key(
    resource_type: str, resource_id: object, full_url: str | None, location: str
) -> str:
    """The key of a top-level resource (see the module docstring)."""
    if isinstance(resource_id, str) and resource_id:
        return f"{resource_type}/{resource_id}"
    if full_url:
        # an absolute RESTful fullUrl names the resource ("https://ehr/fhir/Procedure/p1")
        if not full_url.startswith("urn:") and "/" in full_url:
            tail = _tail(full_url)
            if tail.startswith(resource_type + "/"):
                return tail
        return full_url
    return f"{resource_type}@{location}"


def _tail(reference: str) -> str:
    parts = [p for p in reference.split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return reference


class ReferenceIndex:
    """Resolves reference strings against the resources at hand."""

    __slots__ = ("_by_full_url", "known")

    def __init__(self) -> None:
        self._by_full_url: dict[str, str] = {}
        # reference text -> key, for every reference already read that resolves the same way
        # from any container (never "#id"); the same references recur on every resource, and
        # hot loops may look here first. Read-only outside this class.
        self.known: dict[str, str] = {}

    def add_full_url(self, full_url: str, key: str) -> None:
        if full_url != key:
            self._by_full_url.setdefault(full_url, key)
            self.known.clear()

    def add_full_urls(self, pairs: Iterable[tuple[str, str]]) -> None:
        """:meth:`add_full_url` for each ``(full_url, key)``, in order."""
        by_full_url = self._by_full_url
        for full_url, key in pairs:
            if full_url != key:
                by_full_url.setdefault(full_url, key)
        self.known.clear()

    def normalise(self, reference: object, container: str) -> str | None:
        """A reference string -> key, or ``None`` when there is no usable reference."""
        if not isinstance(reference, str):
            return None
        known = self.known.get(reference)
        if known is not None:
            return known
        ref = reference.strip()
        if not ref:
            return None
        if ref[0] == "#":
            return container if ref == "#" else f"{container}{ref}"
        found = self._by_full_url.get(ref)
        if found is None:
            # an unresolved urn or a conditional reference stays as written
            found = ref if ref.startswith("urn:") or "?" in ref else _tail(ref)
        self.known[reference] = found
        return found

    def of(self, reference_object: object, container: str) -> str | None:
        """``{"reference": ...}`` -> key; display-only or identifier-only references -> None."""
        if type(reference_object) is not dict:
            return None
        reference = reference_object.get("reference")
        if type(reference) is str:  # most references were seen before: answer without a call
            known = self.known.get(reference)
            if known is not None:
                return known
        return self.normalise(reference, container)


def reference_type(key: str) -> str | None:
    """The resource type a key names ("Patient/1" -> "Patient"); ``None`` for urn: keys."""
    if key.startswith("urn:") or "?" in key:
        return None
    base = key.split("#", 1)[0] if "#" in key else key
    head, sep, _ = base.partition("/")
    if sep:
        return head
    head, sep, _ = base.partition("@")
    return head if sep else None


def find_contained(container: Mapping[str, Any], local_id: str) -> Mapping[str, Any] | None:
    """The contained resource with ``id == local_id`` inside ``container``, if any."""
    contained = container.get("contained")
    if isinstance(contained, list):
        for item in contained:
            if isinstance(item, dict) and item.get("id") == local_id:
                return item
    return None
