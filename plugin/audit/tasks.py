"""The work an audit hands to its processes: read documents, split exports, audit shards.

Every task is a small picklable value; every task writes its rows to its own part files under
the work folder (``parts/<task id>.<name>.csv``) and returns only a :class:`TaskResult` of
counters and at most ``report_limit`` report visits. The runner concatenates part files in task
id order, so the output does not depend on which process finished first.

Documents (Bundles, resources, CDS Hooks requests) go through exactly what ``check`` does:
:func:`~fhir_mappings.load_path`, :func:`~fhir_mappings.map_document`,
:func:`~plugin.pipeline.check_record`.

Bulk Data NDJSON is not grouped by patient, so it takes two passes with bounded memory:

1. :func:`split_chunk` reads one byte range of one NDJSON file line by line and appends each
   resource line to the shard of its patient (``crc32(patient reference) % shards``) on disk.
   Unreadable lines are rejected here; types the rules never read (Patient, Condition ...) are
   counted out of scope and not copied.
2. :func:`audit_shard` reads one shard (a few MB), groups its lines by patient and maps each
   patient's resources as one record (:func:`~fhir_mappings.mapper.map_collected`, as
   ``map_resources`` does) before :func:`~plugin.pipeline.check_record`. Resources that name no
   patient cannot belong to anyone's visit: they are mapped in fixed-size groups of their own, so
   they are reported (I-IGNORED-STATUS ``no-patient`` ...) without gathering them all at once.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_mappings import (
    DEFAULT_MAX_FILE_BYTES,
    InputError,
    InputProblem,
    TherapyRecord,
    TherapyVisit,
    group_visits,
    load_path,
    map_document,
    open_regular,
    read_input,
    read_line,
)
from fhir_mappings.loader import format_size
from fhir_mappings.mapper import (
    MAPPED_TYPES,
    PARTY_TYPES,
    map_collected,
    party_name,
    patient_reference,
)
from fhir_mappings.model import MappingIssue
from fhir_mappings.references import ReferenceIndex
from fhir_mappings.sources import Collected, SourcedResource, collect_resources
from plugin.audit.accounting import Rejection, account_record
from plugin.audit.rows import Pseudonyms, finding_rows, per_code, rejected_row, visit_row
from plugin.audit.tally import Tally
from plugin.pipeline import TooManyProceduresError, check_record
from plugin.rules import (
    PairRule,
    PayerRule,
    Severity,
    VisitAnalysis,
    billed_vs_allowed,
    over_under_billed,
)
from plugin.rules.payer import PayerChoice
from plugin.settings import MAX_PROCEDURES_PER_VISIT
from plugin.web.timeline import build_timeline, render_svg
from plugin.web.visits import describe_zone, recorded_offset, visit_resources

NO_PATIENT_GROUP = 500  # resources naming no patient are mapped this many at a time
_FLUSH_BYTES = 4 * 1024 * 1024  # pass 1 buffers at most this much before appending to shards
_SEVERITY_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True, slots=True)
class AuditSettings:
    payer_rule: PayerRule
    pair_rule: PairRule
    workdir: str
    pseudonym_key: bytes | None = None
    report_limit: int = 500
    max_procedures_per_visit: int = MAX_PROCEDURES_PER_VISIT
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # per document file, per export line
    # issue 15: how each visit's payer rule is chosen (the record's Coverage, the mapping)
    payer: PayerChoice = field(default_factory=PayerChoice)


@dataclass(frozen=True, slots=True)
class DocumentTask:
    task_id: int
    files: tuple[str, ...]
    size: int
    settings: AuditSettings


@dataclass(frozen=True, slots=True)
class ChunkTask:
    task_id: int
    chunk_id: int
    source: str
    start: int
    end: int
    first_line: int
    shard_count: int
    workdir: str
    max_line_bytes: int = DEFAULT_MAX_FILE_BYTES


@dataclass(frozen=True, slots=True)
class ShardTask:
    task_id: int
    shard: int
    size: int
    sources: tuple[str, ...]  # chunk id -> the NDJSON file it came from
    settings: AuditSettings


SortKey = tuple[int, int, int, int, str, str, str, str]
Locator = tuple[str, int, bytes]  # ("file", 0, path) or ("shard", shard number, patient key)


@dataclass(frozen=True, slots=True)
class ReportVisit:
    """A visit with findings as the report shows it.

    Tasks return their most serious visits without a picture; the runner keeps the global top
    ``report_limit`` and only those get their timeline drawn (:class:`DrawTask`), found again
    through ``locator`` + (``patient_ref``, ``date``, ``discipline``).
    """

    sort_key: SortKey
    patient: str  # as shown (pseudonym with --pseudonymize)
    date: str
    discipline: str
    total_timed_minutes: int
    units: str
    minutes: str
    pair: str
    findings: tuple[tuple[str, str, str, str, str], ...]  # rule, severity, codes, refs, message
    source: str
    locator: Locator
    patient_ref: str  # as in the input; never written out
    unit_counts: tuple[tuple[str, int], ...]
    minute_counts: tuple[tuple[str, int], ...]
    billed: str = ""  # billed units per code ("97140=2;97530=2"), "" when no charge was read
    over_billed: int | None = None  # None when no charge was read
    under_billed: int | None = None
    svg: str = ""
    zone: str = ""  # the clock the timeline is drawn in ("UTC-05:00"), as the sandbox shows it


# (patient reference, date, discipline, units, minutes, pair status) of a visit to draw
VisitToDraw = tuple[str, str, str, tuple[tuple[str, int], ...], tuple[tuple[str, int], ...], str]


@dataclass(frozen=True, slots=True)
class DrawTask:
    """Visits to draw from one file, or from one shard (several patients, one read)."""

    task_id: int
    visits: tuple[tuple[Locator, VisitToDraw], ...]
    workdir: str
    size: int = 0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


@dataclass(slots=True)
class DrawResult:
    task_id: int
    svgs: dict[tuple[Locator, str, str, str], tuple[str, str]]  # -> (svg, time zone shown)


@dataclass(slots=True)
class TaskResult:
    task_id: int
    amount: int  # bytes of input done, for the progress bar
    tally: Tally = field(default_factory=Tally)
    report: list[ReportVisit] = field(default_factory=list)
    patients: set[bytes] | None = None  # patient digests, when the task cannot count them alone


# ------------------------------------------------------------------------------- part files


def part_path(workdir: str, task_id: int, name: str) -> Path:
    return Path(workdir) / "parts" / f"{task_id:06d}.{name}.csv"


class _Parts:
    """The part files of one task, opened on first use."""

    def __init__(self, workdir: str, task_id: int) -> None:
        self._workdir = workdir
        self._task_id = task_id
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, Any] = {}

    def writer(self, name: str) -> Any:
        found = self._writers.get(name)
        if found is None:
            path = part_path(self._workdir, self._task_id, name)
            handle = path.open("w", encoding="utf-8", newline="")
            self._files[name] = handle
            found = self._writers[name] = csv.writer(handle, lineterminator="\n")
        return found

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()


# ------------------------------------------------------------------------ auditing records


def _visit_sort_key(visit: VisitAnalysis, patient: str, source: str) -> SortKey:
    errors = sum(1 for f in visit.findings if f.severity is Severity.ERROR)
    warnings = sum(1 for f in visit.findings if f.severity is Severity.WARNING)
    worst = min(_SEVERITY_RANK[f.severity] for f in visit.findings)
    return (
        worst,
        -errors,
        -warnings,
        -len(visit.findings),
        visit.date.isoformat(),
        patient,
        visit.discipline.value,
        source,
    )


class RecordAuditor:
    """Runs the pipeline on records and writes what comes out (rows, counts, report visits)."""

    def __init__(self, settings: AuditSettings, task_id: int, *, count_patients: bool) -> None:
        self.settings = settings
        self.parts = _Parts(settings.workdir, task_id)
        self.tally = Tally()
        self.pseudonym = Pseudonyms(settings.pseudonym_key)
        self.count_patients = count_patients
        self.patients: set[bytes] = set()
        self._candidates: list[ReportVisit] = []
        self._cutoff: SortKey | None = None

    def audit(
        self,
        make_record: Callable[[], TherapyRecord],
        resources: Sequence[SourcedResource],
        collector_issues: Sequence[MappingIssue],
        *,
        source: str,
        locator: Locator,
        where: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """Map, check and record one input record; a failure rejects its resources, never the
        audit."""
        try:
            record = make_record()
            result = check_record(
                record,
                payer_rule=self.settings.payer_rule,
                pair_rule=self.settings.pair_rule,
                max_procedures_per_visit=self.settings.max_procedures_per_visit,
                payer=self.settings.payer,
            )
            account = account_record(
                record, resources, collector_issues, source=source, where=where
            )
        except TooManyProceduresError as exc:  # the cap, not a bug: say so
            reason = f"{exc}; raise the limit to audit a visit this large"
            self._failed(resources, source, where, reason, code="too-many-procedures")
            return
        except Exception as exc:  # a bug must cost one record, not a night's audit
            reason = (
                f"the analysis of this record failed ({type(exc).__name__}); nothing in it was"
                " checked. Please report it with the resource ids"
            )
            self._failed(resources, source, where, reason)
            return
        self.tally.add_account(account)
        self.reject_all(account.rejections, counted_as_read=True)
        visits = self.parts.writer("visits")
        findings = self.parts.writer("findings")
        patients_here: set[str] = set()
        grouped = {(v.patient, v.service_date, v.discipline): v for v in result.grouping.visits}
        for visit in result.analysis.visits:
            practitioners, site = visit_parties(
                grouped.get((visit.patient, visit.date, visit.discipline))
            )
            self.tally.add_visit(visit, practitioners, site, record.parties)
            patients_here.add(visit.patient)
            patient = self.pseudonym(visit.patient)
            visits.writerow(visit_row(visit, patient, source))
            day = visit.date.isoformat()
            findings.writerows(
                finding_rows(visit.findings, patient, day, visit.discipline.value, source)
            )
            if visit.findings and self.settings.report_limit > 0:
                key = _visit_sort_key(visit, patient, source)
                if self._cutoff is None or key < self._cutoff:
                    self._candidates.append(_report_visit(key, visit, patient, source, locator))
                    if len(self._candidates) >= 2 * self.settings.report_limit + 64:
                        self._trim()
        for finding in result.analysis.findings:
            self.tally.add_input_finding(finding)
        findings.writerows(finding_rows(result.analysis.findings, "", "", "", source))
        if self.count_patients:
            self.tally.patients += len(patients_here)
        else:
            self.patients.update(
                hashlib.blake2b(p.encode(), digest_size=8).digest() for p in patients_here
            )

    def _failed(
        self,
        resources: Sequence[SourcedResource],
        source: str,
        where: dict[str, tuple[str, str]] | None,
        reason: str,
        code: str = "analysis-failed",
    ) -> None:
        rejections = []
        for item in resources:
            src, loc = (where or {}).get(item.location, (source, item.location))
            rtype = item.resource.get("resourceType", "?")
            ref = f"{rtype}/{item.resource.get('id', '?')}"
            rejections.append(Rejection("resource", code, src, loc, ref, reason))
        self.tally.records += 1
        self.reject_all(rejections, counted_as_read=False)

    def reject_all(self, rejections: Sequence[Rejection], *, counted_as_read: bool) -> None:
        if not rejections:
            return
        writer = self.parts.writer("rejected")
        for rejection in rejections:
            writer.writerow(rejected_row(rejection))
            if not counted_as_read:
                self.tally.add_rejection(rejection, counted_as_read=False)

    def _trim(self) -> None:
        self._candidates.sort(key=lambda c: c.sort_key)
        del self._candidates[self.settings.report_limit :]
        if self._candidates and len(self._candidates) == self.settings.report_limit:
            self._cutoff = self._candidates[-1].sort_key  # worse visits cannot make the list

    def finish(self, task_id: int, amount: int) -> TaskResult:
        self._trim()
        report = list(self._candidates)
        self.parts.close()
        return TaskResult(
            task_id=task_id,
            amount=amount,
            tally=self.tally,
            report=report,
            patients=None if self.count_patients else self.patients,
        )


_PRACTITIONER_TYPES = ("Practitioner/", "PractitionerRole/")


def visit_parties(visit: TherapyVisit | None) -> tuple[tuple[str, ...], str]:
    """(practitioners, site) of a visit for the audit's tables: the distinct Practitioner and
    PractitionerRole performers of its services, in service order; the site is the first
    Procedure.location, else the first Encounter.location, else the Encounter's
    serviceProvider ("" when none is recorded)."""
    if visit is None:
        return (), ""
    practitioners: list[str] = []
    site = ""
    for service in visit.services:
        for actor in service.performers:
            if actor.startswith(_PRACTITIONER_TYPES) and actor not in practitioners:
                practitioners.append(actor)
        if not site and service.location:
            site = service.location
    if not site:
        for encounter in visit.encounters:
            if encounter.locations:
                site = encounter.locations[0]
                break
    if not site:
        site = next((e.service_provider for e in visit.encounters if e.service_provider), "")
    return tuple(practitioners), site


def _report_visit(
    key: SortKey, visit: VisitAnalysis, patient: str, source: str, locator: Locator
) -> ReportVisit:
    billing = billed_vs_allowed(visit)
    over, under = (None, None) if billing is None else over_under_billed(billing)
    return ReportVisit(
        sort_key=key,
        patient=patient,
        date=visit.date.isoformat(),
        discipline=visit.discipline.value,
        total_timed_minutes=visit.total_timed_minutes,
        units=per_code(visit.units),
        minutes=per_code(visit.minutes),
        pair=visit.pair.status.value,
        findings=tuple(
            (f.rule.value, f.severity.value, ", ".join(f.codes), ", ".join(f.resources), f.message)
            for f in visit.findings
        ),
        source=source,
        locator=locator,
        patient_ref=visit.patient,
        unit_counts=tuple(visit.units.items()),
        minute_counts=tuple(visit.minutes.items()),
        billed="" if billing is None else per_code({b.code: b.billed for b in billing}),
        over_billed=over,
        under_billed=under,
    )


def draw_timelines(task: DrawTask) -> DrawResult:
    """Map the records holding ``task.visits`` again and draw each one's timeline (the sandbox
    page's picture, :mod:`plugin.web.timeline`). No rules run here: units and minutes travel
    with the visit."""
    wanted: dict[Locator, dict[tuple[str, str, str], VisitToDraw]] = {}
    for locator, to_draw in task.visits:
        wanted.setdefault(locator, {})[to_draw[:3]] = to_draw
    records: list[tuple[Locator, TherapyRecord, Sequence[SourcedResource]]] = []
    shard_keys: dict[int, set[bytes]] = {}
    for locator in wanted:
        kind, shard, key = locator
        if kind == "file":
            with contextlib.suppress(InputError):  # read before; if it went away, no picture
                document = load_path(key.decode(), max_bytes=task.max_file_bytes)
                records.append((locator, map_document(document), document.resources))
        else:
            shard_keys.setdefault(shard, set()).add(key)
    for shard, keys in sorted(shard_keys.items()):
        groups = _read_shard(shard_dir(task.workdir, shard), wanted=keys)
        for key, lines in groups.items():
            found = Collected()
            collect_resources(_parsed(lines), found)
            records.append((("shard", shard, key), map_collected(found), found.resources))
    svgs: dict[tuple[Locator, str, str, str], tuple[str, str]] = {}
    for locator, record, resources in records:
        here = wanted[locator]
        by_key: dict[str, dict[str, Any]] | None = None
        for visit in group_visits(record).visits:
            ident = (visit.patient, visit.service_date.isoformat(), visit.discipline.value)
            found_visit = here.get(ident)
            if found_visit is None:
                continue
            if by_key is None:
                by_key = _timed_resources(resources)
            units, minutes, pair = found_visit[3:]
            timeline = build_timeline(visit, units=dict(units), minutes=dict(minutes), pair=pair)
            tz = recorded_offset(_visit_resources(visit, by_key))
            svgs[(locator, *ident)] = (render_svg(timeline, tz=tz), describe_zone(tz))
    return DrawResult(task.task_id, svgs)


def _timed_resources(resources: Sequence[SourcedResource]) -> dict[str, dict[str, Any]]:
    """The record's Procedures and Encounters by reference ("Procedure/p1"), as read."""
    found: dict[str, dict[str, Any]] = {}
    for item in resources:
        resource = item.resource
        rtype = resource.get("resourceType")
        if rtype in ("Procedure", "Encounter") and isinstance(resource.get("id"), str):
            found.setdefault(f"{rtype}/{resource['id']}", dict(resource))
    return found


def _visit_resources(
    visit: TherapyVisit, by_key: dict[str, dict[str, Any]]
) -> list[Mapping[str, Any]]:
    """The visit's own Procedures and Encounters (:func:`~plugin.web.visits.visit_resources`):
    the clock rule every entry point applies per visit, so a year of visits across a
    daylight-saving change reads each in its own clock."""
    return visit_resources(visit, by_key)


# ------------------------------------------------------------------------------ documents


def _is_bulk_manifest(path: str, max_bytes: int) -> bool:
    try:
        document = orjson.loads(read_input(path, max_bytes))
    except (InputError, orjson.JSONDecodeError):
        return False
    return isinstance(document, dict) and "transactionTime" in document and "output" in document


def file_rejection(error: InputError) -> Rejection:
    """The ``rejected.csv`` row of a whole file that could not be read (its code says why)."""
    return Rejection("file", error.code.value, error.source, "", "", error.problem)


def reject_files(workdir: str, task_id: int, errors: Sequence[InputError]) -> TaskResult:
    """Rows and counts for files refused before any task read them (an export that is a FIFO)."""
    parts = _Parts(workdir, task_id)
    tally = Tally()
    for error in errors:
        rejection = file_rejection(error)
        parts.writer("rejected").writerow(rejected_row(rejection))
        tally.add_rejection(rejection, counted_as_read=False)
    parts.close()
    return TaskResult(task_id=task_id, amount=0, tally=tally)


def audit_documents(task: DocumentTask) -> TaskResult:
    """Bundles, resources and CDS Hooks requests, one file at a time (as ``check`` reads them)."""
    auditor = RecordAuditor(task.settings, task.task_id, count_patients=False)
    for path in task.files:
        max_bytes = task.settings.max_file_bytes
        try:
            document = load_path(path, max_bytes=max_bytes)
        except InputError as exc:
            if exc.code is InputProblem.UNREADABLE and _is_bulk_manifest(path, max_bytes):
                auditor.tally.bulk_manifests += 1  # the export's table of contents, not data
                continue
            auditor.reject_all([file_rejection(exc)], counted_as_read=False)
            continue
        auditor.tally.files_read += 1
        auditor.audit(
            partial(map_document, document),
            document.resources,
            document.issues,
            source=path,
            locator=("file", 0, path.encode()),
        )
    return auditor.finish(task.task_id, task.size)


# ------------------------------------------------------------------ pass 1: split the export


def _outcome_codes(outcome: dict[str, Any]) -> str:
    # Only severities and codes: diagnostics may carry patient data.
    codes = []
    issues = outcome.get("issue")
    if isinstance(issues, list):
        for item in issues[:5]:
            if isinstance(item, dict):
                codes.append(f"{item.get('severity', '?')}/{item.get('code', '?')}")
    return ", ".join(codes) or "no issue codes"


def shard_dir(workdir: str, shard: int) -> Path:
    return Path(workdir) / "shards" / f"{shard:04d}"


def line_problem(line: bytes, exc: orjson.JSONDecodeError) -> tuple[str, str]:
    """(reason code, reason) for an NDJSON line that does not parse."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return "not-utf8", f"not UTF-8 text (bad byte at column {bad.start + 1}); line skipped"
    return "invalid-json", f"not valid JSON (column {exc.colno}); line skipped"


def split_chunk(task: ChunkTask) -> TaskResult:
    """Pass 1 over ``task.source[start:end]``: route each line to its patient's shard."""
    tally = Tally()
    parts = _Parts(task.workdir, task.task_id)
    index = ReferenceIndex()
    buffers: dict[int, list[bytes]] = {}
    buffered = 0
    prefix = f"{task.chunk_id}\t".encode()
    started: set[int] = set()  # shards this run has written to

    def flush() -> None:
        nonlocal buffered
        for shard, lines in buffers.items():
            # the first write of this run truncates: a task run again (Dask retries the tasks of
            # a worker that died) routes the same lines to the same files, never twice
            mode = "ab" if shard in started else "wb"
            started.add(shard)
            with (shard_dir(task.workdir, shard) / f"{task.chunk_id:06d}.ndj").open(mode) as out:
                out.writelines(lines)
        buffers.clear()
        buffered = 0

    def reject(line_no: int, code: str, reason: str, kind: str = "line") -> None:
        rejection = Rejection(kind, code, task.source, f"line {line_no}", "", reason)
        parts.writer("rejected").writerow(rejected_row(rejection))
        tally.add_rejection(rejection, counted_as_read=False)

    try:
        handle = open_regular(task.source)
    except InputError as exc:  # the file changed since the runner planned it (now a FIFO ...)
        if task.start == 0:  # one row for the file, not one per range
            rejection = file_rejection(exc)
            parts.writer("rejected").writerow(rejected_row(rejection))
            tally.add_rejection(rejection, counted_as_read=False)
        parts.close()
        return TaskResult(task_id=task.task_id, amount=task.end - task.start, tally=tally)
    lines = _lines(handle, task.start, task.end, task.first_line, task.max_line_bytes)
    for line_no, raw in lines:
        if raw is None:
            reject(
                line_no,
                "line-too-long",
                f"longer than {format_size(task.max_line_bytes)}, the limit for one line; line "
                "skipped (raise the limit with --max-file-size or THERAPY_CDS_MAX_FILE_SIZE)",
            )
            continue
        line = raw.strip()
        if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # a byte-order mark some Windows tools write
        if not line:
            tally.blank_lines += 1
            continue
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            code, reason = line_problem(line, exc)
            reject(line_no, code, reason)
            continue
        rtype = resource.get("resourceType") if type(resource) is dict else None
        if not isinstance(rtype, str) or not rtype:
            reject(line_no, "not-a-resource", "not a FHIR resource (no resourceType); line skipped")
            continue
        if rtype == "OperationOutcome":
            reject(
                line_no,
                "export-error",
                f"the exporting server wrote an OperationOutcome ({_outcome_codes(resource)}) "
                "instead of data; check the export's error files",
                kind="export-error",
            )
            continue
        if rtype == "Bundle":
            key = f"bundle:{task.chunk_id}:{line_no}"  # a record of its own (pass 2)
        elif rtype in MAPPED_TYPES:  # every other type is out of scope: counted, not copied
            key = patient_reference(resource, index) or ""
        elif rtype in PARTY_TYPES and isinstance(resource.get("id"), str):
            # read for its name only (the by-practitioner and by-site tables): used, not copied
            tally.resources_read += 1
            tally.used += 1
            tally.add_name(f"{rtype}/{resource['id']}", party_name(resource))
            continue
        else:
            tally.resources_read += 1
            tally.out_of_scope += 1
            tally.out_of_scope_by_type[rtype] += 1
            continue
        shard = zlib.crc32((key or f"{task.chunk_id}:{line_no}").encode()) % task.shard_count
        entry = b"".join(
            (prefix, str(line_no).encode(), b"\t", orjson.dumps(key), b"\t", line, b"\n")
        )
        buffers.setdefault(shard, []).append(entry)
        buffered += len(entry)
        if buffered >= _FLUSH_BYTES:
            flush()
    flush()
    parts.close()
    return TaskResult(task_id=task.task_id, amount=task.end - task.start, tally=tally)


def _lines(
    handle: IO[bytes], start: int, end: int, first_line: int, limit: int
) -> Iterator[tuple[int, bytes | None]]:
    """The numbered lines of ``handle[start:end]``, closing it at the end; None for a line over
    ``limit`` bytes (read past, never held)."""
    with handle:
        handle.seek(start)
        position = start
        number = first_line
        while position < end:
            line, length = read_line(handle, limit)
            if not length:
                break
            position += length
            yield number, line
            number += 1


# ------------------------------------------------------------------ pass 2: audit a shard


def audit_shard(task: ShardTask) -> TaskResult:
    """Pass 2: group one shard's lines by patient and audit each patient as one record."""
    auditor = RecordAuditor(task.settings, task.task_id, count_patients=True)
    groups = _read_shard(shard_dir(task.settings.workdir, task.shard))
    for key in sorted(groups):
        lines = groups.pop(key)
        locator: Locator = ("shard", task.shard, key)
        if key == b'""':
            for begin in range(0, len(lines), NO_PATIENT_GROUP):
                chunk = lines[begin : begin + NO_PATIENT_GROUP]
                _audit_lines(auditor, task.sources, chunk, locator)
        else:
            _audit_lines(auditor, task.sources, lines, locator)
    return auditor.finish(task.task_id, task.size)


def _parsed(lines: list[tuple[int, bytes, bytes]]) -> Iterator[tuple[str, object]]:
    for chunk, line_no, line in lines:
        with contextlib.suppress(orjson.JSONDecodeError):  # rejected when audited
            yield f"{chunk}:{line_no.decode()}", orjson.loads(line)


def _read_shard(
    folder: Path, wanted: set[bytes] | None = None
) -> dict[bytes, list[tuple[int, bytes, bytes]]]:
    """A shard's lines grouped by patient key, in export order (only ``wanted`` if given)."""
    groups: dict[bytes, list[tuple[int, bytes, bytes]]] = {}
    for part in sorted(folder.iterdir()) if folder.is_dir() else ():
        with part.open("rb") as handle:
            for entry in handle:
                chunk, line_no, key, line = entry.rstrip(b"\n").split(b"\t", 3)
                if wanted is None or key in wanted:
                    groups.setdefault(key, []).append((int(chunk), line_no, line))
    return groups


def _audit_lines(
    auditor: RecordAuditor,
    sources: Sequence[str],
    lines: list[tuple[int, bytes, bytes]],
    locator: Locator,
) -> None:
    where: dict[str, tuple[str, str]] = {}
    items: list[tuple[str, object]] = []
    for chunk, line_no, line in lines:
        token = f"{chunk}:{line_no.decode()}"
        where[token] = (sources[chunk], f"line {line_no.decode()}")
        try:
            items.append((token, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:  # pass 1 parsed it; a shard file went bad
            code, reason = line_problem(line, exc)
            rejection = Rejection("line", code, *where[token], "", reason)
            auditor.reject_all([rejection], counted_as_read=False)
    if not items:
        return
    found = Collected()
    collect_resources(items, found)
    collector_issues = list(found.issues)
    # the file the record came from, else the folder of the export's files
    files = sorted({sources[chunk] for chunk, _, _ in lines})
    source = files[0] if len(files) == 1 else os.path.commonpath(files)
    auditor.audit(
        partial(map_collected, found),
        found.resources,
        collector_issues,
        source=source,
        locator=locator,
        where=where,
    )


AuditTask = DocumentTask | ChunkTask | ShardTask | DrawTask


def run_task(task: AuditTask) -> Any:
    """Run one task of any kind (what every engine's worker calls)."""
    if isinstance(task, DocumentTask):
        return audit_documents(task)
    if isinstance(task, ChunkTask):
        return split_chunk(task)
    if isinstance(task, DrawTask):
        return draw_timelines(task)
    return audit_shard(task)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
