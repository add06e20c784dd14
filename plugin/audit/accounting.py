"""What became of every resource an audit read: used, out of scope, duplicate, or rejected.

The mappers report problems as :class:`~fhir_mappings.model.MappingIssue` values; here they are
sorted by their :class:`~fhir_mappings.model.IssueCode` (never by the wording of a message) into
*rejections* (a whole entry, line or resource the rules never saw, each listed in
``rejected.csv``) and *value* notes (a resource was used, but one of its values was not). The
split of a record's resources is computed from their keys, so that the audit's reconciliation
(``resources read = used + out of scope + duplicates + rejected``) is a count of things, not a
difference of totals:

* used -- the key of a service, a charge, a plan or an encounter the rules received, and of
  every Practitioner, PractitionerRole, Location and Organization (read for their names: the
  report's by-practitioner and by-site tables);
* rejected -- a resource the mapper skipped as unusable, the second, different copy of a resource
  (the first is used), or a container entry that held no resource;
* duplicates -- identical copies of a resource already read (nothing is lost);
* out of scope -- everything else: Patients, Conditions ..., and Procedures,
  ServiceRequests and Claims coded outside CPT/HCPCS.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fhir_mappings.model import IssueCode, MappingIssue, TherapyRecord
from fhir_mappings.references import resource_key
from fhir_mappings.sources import SourcedResource


@dataclass(frozen=True, slots=True)
class Rejection:
    """One row of ``rejected.csv``: what could not be used, where, and why.

    ``kind``: ``file`` (nothing in it was read), ``line`` / ``entry`` / ``resource`` (one item
    not used), ``export-error`` (an OperationOutcome the exporting server wrote instead of data),
    ``value`` (the resource was used but this value was not; the rules see it as missing).
    ``code`` is a short, stable tag for counting: a plain string (the reports are written with
    orjson, which takes no enum keys), the value of an :class:`~fhir_mappings.model.IssueCode`
    or an audit-level tag such as ``not-utf8``. ``reason`` is the sentence to act on. Neither
    ever quotes the input.
    """

    kind: str
    code: str
    source: str
    location: str
    resource: str
    reason: str


RESOURCE_KINDS = frozenset({"line", "entry", "resource", "export-error"})


@dataclass(slots=True)
class RecordAccount:
    """The reconciliation of one mapped record (one file, one Bundle line, one patient)."""

    read: int = 0
    used: int = 0
    out_of_scope: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    out_of_scope_by_type: Counter[str] = field(default_factory=Counter)
    mapper_agrees: bool = True  # the mapper counted the same distinct resources


def used_keys(record: TherapyRecord) -> set[str]:
    """Keys of the resources the rules received (services, charges, plans, encounters) and of
    the care providers and places read for the report's tables (see the module docstring)."""
    keys = {s.ref for s in record.services}
    keys.update(c.ref.split("#", 1)[0] for c in record.charges)
    keys.update(k for k in record.plans if "#" not in k)  # contained plans live in a Procedure
    keys.update(record.encounters)
    keys.update(record.parties)
    return keys


def account_record(
    record: TherapyRecord,
    resources: Sequence[SourcedResource],
    collector_issues: Sequence[MappingIssue],
    *,
    source: str,
    where: dict[str, tuple[str, str]] | None = None,
) -> RecordAccount:
    """Reconcile ``record`` with the ``resources`` handed to the mapper (see module docstring).

    ``collector_issues`` are the container problems met while finding those resources (the
    first issues of ``record.issues``). ``where`` turns an internal location token back into
    (source file, location) for rows whose resources came from several files.
    """
    account = RecordAccount()

    def place(location: str) -> tuple[str, str]:
        if where is not None:
            token, dot, rest = location.partition(".")
            found = where.get(token)
            if found is not None:
                return found[0], found[1] + dot + rest
        return source, location

    for issue in collector_issues:
        src, loc = place(issue.location)
        if issue.code.drops_entry:
            account.read += 1
            if issue.code is IssueCode.EXPORT_ERROR:
                kind = "export-error"
            else:
                kind = "line" if loc.startswith("line ") else "entry"
            account.rejections.append(
                Rejection(kind, issue.code.value, src, loc, issue.resource or "", issue.message)
            )
        else:
            account.rejections.append(
                Rejection("value", IssueCode.CONTAINER_NOTE.value, src, loc, "", issue.message)
            )

    unique: dict[str, str] = {}
    for item in resources:
        rtype = item.resource["resourceType"]
        key = resource_key(rtype, item.resource.get("id"), item.full_url, item.location)
        unique.setdefault(key, rtype)
    account.read += len(resources)
    account.mapper_agrees = len(unique) == record.resources_read

    used = used_keys(record)
    mapper_issues = record.issues[len(collector_issues) :]
    skipped: set[str] = set()
    different = 0
    for issue in mapper_issues:
        src, loc = place(issue.location)
        resource = issue.resource or ""
        if issue.code is IssueCode.DIFFERENT_COPY:
            different += 1
            account.rejections.append(
                Rejection("resource", issue.code.value, src, loc, resource, issue.message)
            )
        elif resource and resource not in used and issue.code is IssueCode.UNUSABLE_RESOURCE:
            if resource not in skipped:  # one row per resource, with its first reason
                skipped.add(resource)
                account.rejections.append(
                    Rejection("resource", issue.code.value, src, loc, resource, issue.message)
                )
        else:
            field_name = f" ({issue.field})" if issue.field else ""
            reason = issue.message + field_name
            account.rejections.append(
                Rejection("value", IssueCode.VALUE_NOT_USED.value, src, loc, resource, reason)
            )

    account.duplicates = len(resources) - len(unique) - different
    for key, rtype in unique.items():
        if key in used:
            account.used += 1
        elif key not in skipped:
            account.out_of_scope += 1
            account.out_of_scope_by_type[rtype] += 1
    return account


def rejection_counts(rejections: Iterable[Rejection]) -> tuple[int, int, int]:
    """(files, resource-level items, values) among ``rejections``."""
    files = items = values = 0
    for rejection in rejections:
        if rejection.kind == "file":
            files += 1
        elif rejection.kind in RESOURCE_KINDS:
            items += 1
        else:
            values += 1
    return files, items, values
