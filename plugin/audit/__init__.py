"""Bulk audit: the rule book over a whole history of visits (``therapy-cds audit``).

Inputs are folders of documents (Bundles, resources, CDS Hooks requests: each file read as
``check`` reads it) and FHIR Bulk Data exports (NDJSON per resource type, not grouped by
patient). Exports are split by patient into shard files on disk, then each shard is audited in
one of N processes (or by a worker of a Dask cluster, :mod:`plugin.audit.distributed`), so
memory stays flat however many visits there are. Every visit goes
through :func:`plugin.pipeline.check_record`, the path ``check`` and the CDS services use, so
an audit's counts are ``check``'s counts.

Outputs in the chosen folder: ``visits.csv``, ``findings.csv``, ``rejected.csv``,
``summary.json`` and ``report.html`` (see :mod:`plugin.audit.report`).
"""

from plugin.audit.runner import (
    OUTPUT_FILES,
    AuditOptions,
    AuditOutcome,
    AuditProgress,
    AuditUsageError,
    pseudonym_key,
    run_audit,
)

__all__ = [
    "OUTPUT_FILES",
    "AuditOptions",
    "AuditOutcome",
    "AuditProgress",
    "AuditUsageError",
    "pseudonym_key",
    "run_audit",
]
