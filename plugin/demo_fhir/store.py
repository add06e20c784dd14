"""The resources ``demo-fhir`` serves: read from FHIR files, one id per resource.

Each file is read with the ``check`` reader (:func:`fhir_mappings.load_path`: Bundles, single
resources, CDS Hooks requests, NDJSON, gzip, with its size cap); nested Bundles are flattened.

- **FHIR version.** The server speaks R4. A file whose resources show R5 shapes (the same
  majority vote ``check`` uses, :func:`fhir_mappings.version.shape_version`) is left out with a
  start-up note: serving it as R4 would hand R4 clients fields they do not know.
- **Ids shared between files.** Samples are written one visit per file and may repeat a resource
  (every sample carries the same Practitioner). Copies with identical content are served once.
  Copies that differ (in content, or in referring to a resource of their file that is renamed)
  are each renamed ``<id>-<8 hex digits of SHA-256 of the file's name>``
  (the id cut to 55 characters first, so the result is a valid FHIR id), and every reference to
  that resource *inside the same file* is rewritten to the new id. The new id depends only on
  the id and the file name, so it is the same at every start whatever the other files are.
- **References.** A reference naming a resource of the same file (relative, absolute or by
  ``fullUrl``, ``urn:uuid:`` included) is served as the relative ``Type/id`` of that resource;
  any other reference is served as written.
- A resource without an id, and a second copy of an id inside one file, are left out with a note.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from fhir_mappings import InputError, NotFhirError, load_path
from fhir_mappings.model import FhirVersion
from fhir_mappings.references import ReferenceIndex
from fhir_mappings.version import decide, shape_version

JsonObject = dict[str, Any]
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


class DemoFhirError(Exception):
    """A file named on the command line cannot be served; ``str()`` is the one-line message."""


@dataclass(frozen=True, slots=True)
class Held:
    """One served resource and the file it came from (as given)."""

    resource: JsonObject
    source: str


@dataclass(frozen=True, slots=True)
class Example:
    """A patient to try, with the encounters that name it (id and start date)."""

    patient: str
    encounters: tuple[tuple[str, str], ...]
    source: str


@dataclass(slots=True)
class Store:
    """Resources by type and id, in the order the files were read."""

    by_type: dict[str, dict[str, Held]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # (type/old, new id, file)
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def get(self, resource_type: str, ident: str) -> JsonObject | None:
        held = self.by_type.get(resource_type, {}).get(ident)
        return None if held is None else held.resource

    def of_type(self, resource_type: str) -> Iterable[Held]:
        return self.by_type.get(resource_type, {}).values()

    def counts(self) -> dict[str, int]:
        return {t: len(found) for t, found in sorted(self.by_type.items())}

    def __len__(self) -> int:
        return sum(len(found) for found in self.by_type.values())

    def examples(self) -> Iterator[Example]:
        """Each Patient with the Encounters whose subject names it, in file order."""
        encounters: dict[str, list[tuple[str, str]]] = {}
        for held in self.of_type("Encounter"):
            resource = held.resource
            subject = resource.get("subject")
            reference = subject.get("reference") if isinstance(subject, dict) else None
            if isinstance(reference, str) and reference.startswith("Patient/"):
                period = resource.get("period")
                start = period.get("start") if isinstance(period, dict) else None
                day = start[:10] if isinstance(start, str) else "no date"
                encounters.setdefault(reference[8:], []).append((str(resource["id"]), day))
        for ident, held in self.by_type.get("Patient", {}).items():
            yield Example(ident, tuple(encounters.get(ident, ())), Path(held.source).name)


@dataclass(slots=True)
class _Entry:
    resource_type: str
    ident: str
    full_url: str | None
    resource: JsonObject
    canonical: bytes


@dataclass(slots=True)
class _File:
    source: str
    name: str
    entries: list[_Entry]


def _suffix(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]


def renamed_id(ident: str, file_name: str) -> str:
    """The id a differing copy of ``ident`` from the file named ``file_name`` is served under."""
    return f"{ident[:55]}-{_suffix(file_name)}"


def _read(path: Path, named: bool, store: Store) -> _File | None:
    source = str(path)
    try:
        document = load_path(path)
    except NotFhirError as exc:
        if named:
            raise DemoFhirError(str(exc)) from None
        store.notes.append(f"{source}: not FHIR data, skipped")
        return None
    except InputError as exc:
        if named:
            raise DemoFhirError(str(exc)) from None
        store.notes.append(f"{exc}; skipped")
        return None
    r4 = r5 = 0
    for sourced in document.resources:
        rtype = sourced.resource.get("resourceType")
        shown = shape_version(rtype, sourced.resource) if isinstance(rtype, str) else None
        if shown is not None:
            r4 += shown[0] is FhirVersion.R4
            r5 += shown[0] is FhirVersion.R5
    if decide(r4, r5) is FhirVersion.R5:
        store.notes.append(f"{source}: FHIR R5 content; this server speaks R4, left out")
        return None
    entries: list[_Entry] = []
    seen: set[str] = set()
    without_id = 0
    for sourced in document.resources:
        resource = dict(sourced.resource)
        rtype, ident = resource.get("resourceType"), resource.get("id")
        if not (isinstance(rtype, str) and RESOURCE_TYPE.match(rtype)):
            continue
        if not (isinstance(ident, str) and FHIR_ID.match(ident)):
            without_id += 1
            continue
        if f"{rtype}/{ident}" in seen:
            store.notes.append(f"{source}: a second {rtype} with the same id, left out")
            continue
        seen.add(f"{rtype}/{ident}")
        canonical = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
        entries.append(
            _Entry(rtype, ident, sourced.full_url, orjson.loads(orjson.dumps(resource)), canonical)
        )
    if without_id:
        store.notes.append(f"{source}: {without_id} resource(s) without a valid id, left out")
    return _File(source, path.name, entries)


def _references(node: Any, found: list[str]) -> None:
    """Every ``reference`` string under ``node``."""
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str):
            found.append(reference)
        for value in node.values():
            if isinstance(value, dict | list):
                _references(value, found)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, dict | list):
                _references(value, found)


def _rewrite(node: Any, index: ReferenceIndex, container: str, keys: dict[str, str]) -> None:
    """Point every reference to a resource of the same file at its served ``Type/id``."""
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str):
            found = index.normalise(reference, container)
            if found is not None and found in keys:
                node["reference"] = keys[found]
        for value in node.values():
            if isinstance(value, dict | list):
                _rewrite(value, index, container, keys)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, dict | list):
                _rewrite(value, index, container, keys)


def _differing(read: list[_File], indexes: list[ReferenceIndex]) -> set[str]:
    """The keys whose copies differ between files: by content, or because a copy refers to a
    resource of its file that is itself renamed (its served references then differ)."""
    contents: dict[str, set[bytes]] = {}
    holders: dict[str, int] = {}
    for file in read:
        for entry in file.entries:
            key = f"{entry.resource_type}/{entry.ident}"
            contents.setdefault(key, set()).add(entry.canonical)
            holders[key] = holders.get(key, 0) + 1
    differing = {key for key, copies in contents.items() if len(copies) > 1}
    if not differing:
        return differing
    refers: list[tuple[str, set[str]]] = []  # a shared key and what it refers to in its file
    for file, index in zip(read, indexes, strict=True):
        keys = {f"{e.resource_type}/{e.ident}" for e in file.entries}
        for entry in file.entries:
            key = f"{entry.resource_type}/{entry.ident}"
            if holders[key] < 2 or key in differing:
                continue
            found: list[str] = []
            _references(entry.resource, found)
            named = {n for r in found if (n := index.normalise(r, key)) is not None} & keys
            if named:
                refers.append((key, named))
    changed = True
    while changed:  # a chain of references is followed one link per pass
        changed = False
        for key, named in refers:
            if key not in differing and named & differing:
                differing.add(key)
                changed = True
    return differing


def load_store(files: Iterable[tuple[Path, bool]]) -> Store:
    """Read ``(path, named)`` files into a :class:`Store`. A file named on the command line
    that cannot be read raises :class:`DemoFhirError`; one found in a folder is noted."""
    store = Store()
    read = [found for path, named in files if (found := _read(path, named, store)) is not None]
    indexes = []
    for file in read:
        index = ReferenceIndex()
        for entry in file.entries:
            if entry.full_url:
                index.add_full_url(entry.full_url, f"{entry.resource_type}/{entry.ident}")
        indexes.append(index)
    differing = _differing(read, indexes)
    taken: set[str] = set()
    for file, index in zip(read, indexes, strict=True):
        keys: dict[str, str] = {}  # key in the file -> served key
        for entry in file.entries:
            key = f"{entry.resource_type}/{entry.ident}"
            served = entry.ident
            if key in differing:
                served = renamed_id(entry.ident, file.name)
                if f"{entry.resource_type}/{served}" in taken:  # same file name in two folders
                    served = renamed_id(entry.ident, file.source)
                store.renamed.append((key, served, file.source))
            keys[key] = f"{entry.resource_type}/{served}"
            taken.add(keys[key])
        for entry in file.entries:
            key = f"{entry.resource_type}/{entry.ident}"
            _rewrite(entry.resource, index, key, keys)
            served = keys[key].partition("/")[2]
            entry.resource["id"] = served
            group = store.by_type.setdefault(entry.resource_type, {})
            existing = group.get(served)
            if existing is not None:
                if existing.resource != entry.resource:
                    store.notes.append(
                        f"{file.source}: {entry.resource_type} differs from an earlier copy "
                        "once its references are rewritten, left out"
                    )
                continue
            group[served] = Held(entry.resource, file.source)
    return store
