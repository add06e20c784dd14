"""Run an audit: find the inputs, split exports by patient, audit in N processes (or on a Dask
cluster, :mod:`plugin.audit.distributed`), write DIR.

Memory does not grow with the number of visits: pass 1 streams each NDJSON byte range into
per-patient shard files of about :data:`SHARD_BYTES` each (their number grows with the input
instead), pass 2 holds one shard per process, and every task writes its rows to part files.
The runner itself keeps counters, at most ``report_limit`` report visits, and (for document
inputs only) an 8-byte digest per patient to count distinct patients across files.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import shutil
import stat
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fhir_mappings import DEFAULT_MAX_FILE_BYTES, InputError, open_regular, read_line
from plugin.audit.report import write_report
from plugin.audit.rows import FINDING_COLUMNS, REJECTED_COLUMNS, VISIT_COLUMNS
from plugin.audit.tally import Tally
from plugin.audit.tasks import (
    AuditSettings,
    AuditTask,
    ChunkTask,
    DocumentTask,
    DrawResult,
    DrawTask,
    ReportVisit,
    ShardTask,
    part_path,
    reject_files,
    run_task,
    shard_dir,
)
from plugin.rules import PairRule, PayerRule
from plugin.rules.cms_data import RuleTables, active_tables, use_tables
from plugin.rules.payer import PayerChoice, shipped_payer_mapping
from plugin.settings import MAX_PROCEDURES_PER_VISIT

DOCUMENT_SUFFIXES = (".json",)
EXPORT_SUFFIXES = (".ndjson", ".jsonl")
SHARD_BYTES = 4 * 1024 * 1024  # export bytes per shard: what one process holds in pass 2
CHUNK_BYTES = 16 * 1024 * 1024  # export bytes per pass-1 task
MAX_SHARDS = 2048
MAX_CHUNKS = 64
DOCUMENT_BATCH_FILES = 32
DOCUMENT_BATCH_BYTES = 4 * 1024 * 1024
WORK_PREFIX = ".audit-work-"
OUTPUT_FILES = ("visits.csv", "findings.csv", "rejected.csv", "summary.json", "report.html")


class AuditUsageError(Exception):
    """Arguments the audit cannot start with; ``str(error)`` is the one line to show."""


class AuditProgress(Protocol):
    """What the runner reports while it works (the CLI draws a progress bar from it)."""

    def phase(self, description: str, total: int) -> None: ...

    def advance(self, amount: int, visits: int) -> None: ...


class _Silent:
    def phase(self, description: str, total: int) -> None:
        pass

    def advance(self, amount: int, visits: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class AuditOptions:
    paths: tuple[Path, ...]
    out: Path
    payer_rule: PayerRule = PayerRule.CMS
    pair_rule: PairRule = PairRule.CMS
    jobs: int = 1
    pseudonym_key: bytes | None = None
    report_limit: int = 500
    max_procedures_per_visit: int = MAX_PROCEDURES_PER_VISIT
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # per document file, per export line
    # issue 15: the CMS tables (None: the process's, plugin.rules.cms_data.active_tables)
    tables: RuleTables | None = None
    # issue 15: the payer mapping and whether --payer-rule overrides the records' Coverage
    payer: PayerChoice = field(default_factory=PayerChoice)
    # issue 19: a Dask scheduler address or "local[N]" to run the tasks on (None: ``jobs``
    # local processes)
    dask: str | None = None


@dataclass(frozen=True, slots=True)
class AuditOutcome:
    out: Path
    summary: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InputFiles:
    documents: tuple[Path, ...]
    exports: tuple[Path, ...]


# ------------------------------------------------------------------------------- inputs


def discover(paths: Iterable[Path], out: Path) -> InputFiles:
    """The files to read: folders contribute ``*.json`` (documents) and ``*.ndjson`` /
    ``*.jsonl`` (export) files, sorted; an earlier audit's outputs are never read. A FIFO,
    device or socket of such a name is kept, to be refused with a row of ``rejected.csv``."""
    documents: list[Path] = []
    exports: list[Path] = []
    seen: set[Path] = set()
    own = {(out / name).resolve() for name in OUTPUT_FILES}

    def add(path: Path) -> None:
        resolved = path.resolve()
        if (
            resolved in seen
            or resolved in own
            or any(p.name.startswith(WORK_PREFIX) for p in resolved.parents)
        ):
            return
        seen.add(resolved)
        (exports if path.name.lower().endswith(EXPORT_SUFFIXES) else documents).append(path)

    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                if not found.is_dir() and found.name.lower().endswith(
                    DOCUMENT_SUFFIXES + EXPORT_SUFFIXES
                ):
                    add(found)
        elif path.exists():
            add(path)
        else:
            raise AuditUsageError(f"{path}: no such file or folder")
    if not documents and not exports:
        raise AuditUsageError(
            "no input files found (looked for *.json, *.ndjson and *.jsonl in the given paths)"
        )
    return InputFiles(tuple(documents), tuple(exports))


def prepare_out(out: Path) -> Path:
    """Create ``out`` if needed and a work folder inside it; raise if it cannot be written."""
    if out.exists() and not out.is_dir():
        raise AuditUsageError(f"{out}: exists and is not a folder; give a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=out))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AuditUsageError(f"{out}: cannot write the report there ({reason})") from None
    (work / "parts").mkdir()
    (work / "shards").mkdir()
    return work


def _document_batches(files: tuple[Path, ...]) -> Iterator[tuple[tuple[str, ...], int]]:
    batch: list[str] = []
    size = 0
    for path in files:
        try:
            length = path.stat().st_size
        except OSError:
            length = 0
        if batch and (len(batch) >= DOCUMENT_BATCH_FILES or size + length > DOCUMENT_BATCH_BYTES):
            yield tuple(batch), size
            batch, size = [], 0
        batch.append(str(path))
        size += length
    if batch:
        yield tuple(batch), size


def plan_chunks(
    files: tuple[Path, ...], chunk_bytes: int
) -> tuple[list[tuple[str, int, int, int]], list[InputError]]:
    """(file, start, end, first line number) ranges that end on line breaks, and the files that
    cannot be read (not a regular file, gone, no permission)."""
    chunks: list[tuple[str, int, int, int]] = []
    refused: list[InputError] = []
    for path in files:
        try:
            handle = open_regular(path)
        except InputError as exc:
            refused.append(exc)
            continue
        with handle:
            size = os.fstat(handle.fileno()).st_size
            start, line = 0, 1
            while start < size:
                end = min(size, start + chunk_bytes)
                handle.seek(end)
                if end < size:
                    read_line(handle, 0)  # to the end of the line (held nowhere, however long)
                    end = handle.tell()
                chunks.append((str(path), start, end, line))
                handle.seek(start)
                left = end - start
                while left > 0:
                    block = handle.read(min(left, 1 << 20))
                    if not block:
                        break
                    line += block.count(b"\n")
                    left -= len(block)
                start = end
    return chunks, refused


def _size(path: Path) -> int:
    """A regular file's size for planning (0 for anything :func:`plan_chunks` will refuse)."""
    try:
        found = path.stat()
    except OSError:
        return 0
    return found.st_size if stat.S_ISREG(found.st_mode) else 0


# ------------------------------------------------------------------------------ running


class TaskPool(Protocol):
    """Where an audit's tasks run: :class:`LocalPool` (processes on this machine) or
    :class:`~plugin.audit.distributed.DaskPool` (a Dask cluster).

    Tasks are small values (:data:`~plugin.audit.tasks.AuditTask`) that read their inputs and
    write their part files themselves; ``run`` yields each one's result as it finishes. The
    runner's merges do not depend on that order and part files are joined in task id order, so
    every engine writes the same outputs."""

    def run(self, tasks: Sequence[AuditTask]) -> Iterator[Any]: ...

    def describe(self) -> dict[str, Any]:
        """What summary.json's ``run`` says of the engine (``engine``, ``jobs`` ...)."""
        ...

    def close(self) -> None: ...


def _warm(tables: RuleTables) -> None:
    """Each worker applies the audit's tables (read once by the parent, sent once per worker)."""
    use_tables(tables)


class LocalPool:
    """``jobs`` processes, or the calling process when ``jobs`` is 1 (same tasks either way)."""

    def __init__(self, jobs: int, tables: RuleTables) -> None:
        self._jobs = jobs
        self._pool: Any = None
        if jobs > 1:
            # forkserver where there is one: a clean server process imports the rules once and
            # forks each worker from it (no threads or locks inherited from the caller, and no
            # import per worker); spawn elsewhere.
            context: multiprocessing.context.BaseContext
            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["plugin.audit.tasks"])
            else:
                context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(jobs, initializer=_warm, initargs=(tables,))

    def run(self, tasks: Sequence[AuditTask]) -> Iterator[Any]:
        if self._pool is None:
            yield from map(run_task, tasks)
        else:
            yield from self._pool.imap_unordered(run_task, tasks, chunksize=1)

    def describe(self) -> dict[str, Any]:
        return {"engine": "local", "jobs": self._jobs}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


def open_pool(options: AuditOptions, tables: RuleTables, work: Path) -> TaskPool:
    """The engine ``options`` ask for: local processes, or the Dask cluster at ``options.dask``
    (an :class:`AuditUsageError` when it cannot be used)."""
    if options.dask is None:
        return LocalPool(max(1, options.jobs), tables)
    try:
        from plugin.audit.distributed import DaskPool
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("dask", "distributed"):
            raise
        raise AuditUsageError(
            '--dask needs the dask extra: pip install "therapy-cds[dask]" (on this machine '
            "and on every worker)"
        ) from None
    return DaskPool(options.dask, tables, work, options.paths)  # raises AuditUsageError


class _Report:
    """The global top ``limit`` visits with findings (a total order, so any merge order)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.visits: list[ReportVisit] = []

    def add(self, visits: list[ReportVisit]) -> None:
        self.visits.extend(visits)
        if len(self.visits) > 2 * self.limit:
            self.trim()

    def trim(self) -> None:
        self.visits.sort(key=lambda v: v.sort_key)
        del self.visits[self.limit :]


def run_audit(options: AuditOptions, progress: AuditProgress | None = None) -> AuditOutcome:
    """Audit ``options.paths`` into ``options.out`` (see the module docstring)."""
    report_progress = progress or _Silent()
    inputs = discover(options.paths, options.out)
    work = prepare_out(options.out)
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now

    tables = options.tables if options.tables is not None else active_tables()
    restore = active_tables()
    use_tables(tables)  # the tasks run here too when jobs is 1 (restored at the end)
    pool: TaskPool | None = None
    try:
        pool = open_pool(options, tables, work)
        engine = pool.describe()
        settings = AuditSettings(
            payer_rule=options.payer_rule,
            pair_rule=options.pair_rule,
            workdir=str(work),
            pseudonym_key=options.pseudonym_key,
            report_limit=options.report_limit,
            max_procedures_per_visit=options.max_procedures_per_visit,
            max_file_bytes=options.max_file_bytes,
            payer=options.payer,
        )
        tally = Tally()
        report = _Report(options.report_limit)
        patient_digests: set[bytes] = set()
        task_id = 0

        doc_tasks: list[DocumentTask] = []
        for files, size in _document_batches(inputs.documents):
            doc_tasks.append(DocumentTask(task_id, files, size, settings))
            task_id += 1

        chunk_tasks: list[ChunkTask] = []
        shard_tasks: list[ShardTask] = []
        export_bytes = sum(_size(p) for p in inputs.exports)
        shard_count = max(1, min(MAX_SHARDS, math.ceil(export_bytes / SHARD_BYTES)))
        if inputs.exports:
            # at most ~MAX_CHUNKS ranges: pass 1 writes one part file per (range, shard)
            chunk_bytes = max(CHUNK_BYTES, math.ceil(export_bytes / MAX_CHUNKS))
            chunks, refused = plan_chunks(inputs.exports, chunk_bytes)
            tally.files_read += len(inputs.exports) - len(refused)
            tally.merge(reject_files(str(work), task_id, refused).tally)
            task_id += 1
            for chunk_id, (source, start, end, first_line) in enumerate(chunks):
                chunk_tasks.append(
                    ChunkTask(
                        task_id,
                        chunk_id,
                        source,
                        start,
                        end,
                        first_line,
                        shard_count,
                        str(work),
                        options.max_file_bytes,
                    )
                )
                task_id += 1
            for shard in range(shard_count):
                shard_dir(str(work), shard).mkdir(parents=True)
            lap("start")
            report_progress.phase("Reading the export", export_bytes)
            for result in pool.run(_largest_first(chunk_tasks)):
                tally.merge(result.tally)
                report_progress.advance(result.amount, 0)
            sources = tuple(c[0] for c in chunks)
            for shard in range(shard_count):
                size = sum(p.stat().st_size for p in shard_dir(str(work), shard).iterdir())
                shard_tasks.append(ShardTask(task_id, shard, size, sources, settings))
                task_id += 1

        lap("split")
        audit_tasks: list[DocumentTask | ShardTask] = [*doc_tasks, *shard_tasks]
        report_progress.phase("Auditing visits", sum(t.size for t in audit_tasks))
        for result in pool.run(_largest_first(audit_tasks)):
            tally.merge(result.tally)
            report.add(result.report)
            if result.patients is not None:
                patient_digests.update(result.patients)
            report_progress.advance(result.amount, result.tally.visits)
        tally.patients += len(patient_digests)
        report.trim()
        lap("audit")
        report.visits = _draw(
            pool, report.visits, task_id, str(work), report_progress, options.max_file_bytes
        )
        lap("draw")
        pool.close()

        seconds = time.perf_counter() - started
        summary = _summary(options, inputs, tally, report, shard_count, started_at, seconds, engine)
        summary["run"]["phases"] = phases
        _write_outputs(options.out, work, summary, report.visits, task_id)
        return AuditOutcome(out=options.out, summary=summary)
    finally:
        if pool is not None:
            pool.close()
        use_tables(restore)
        shutil.rmtree(work, ignore_errors=True)


def _draw(
    pool: TaskPool,
    visits: list[ReportVisit],
    first_task_id: int,
    workdir: str,
    progress: AuditProgress,
    max_file_bytes: int,
) -> list[ReportVisit]:
    """Draw the timelines of the report's visits: one task per shard, or per batch of files."""
    batches: dict[tuple[str, int], list[ReportVisit]] = {}
    for visit in visits:
        kind, shard, key = visit.locator
        batch = (kind, shard) if kind == "shard" else (kind, zlib.crc32(key) % 64)
        batches.setdefault(batch, []).append(visit)
    tasks = [
        DrawTask(
            first_task_id + n,
            tuple(
                (
                    v.locator,
                    (v.patient_ref, v.date, v.discipline, v.unit_counts, v.minute_counts, v.pair),
                )
                for v in group
            ),
            workdir,
            len(group),
            max_file_bytes,
        )
        for n, (_, group) in enumerate(sorted(batches.items()))
    ]
    if not tasks:
        return visits
    progress.phase("Drawing timelines", len(visits))
    svgs: dict[tuple[Any, str, str, str], tuple[str, str]] = {}
    result: DrawResult
    sizes = {task.task_id: task.size for task in tasks}
    for result in pool.run(tasks):
        svgs.update(result.svgs)
        progress.advance(sizes[result.task_id], 0)
    drawn = [(v, svgs.get((v.locator, v.patient_ref, v.date, v.discipline))) for v in visits]
    return [v if found is None else replace(v, svg=found[0], zone=found[1]) for v, found in drawn]


def _largest_first(tasks: list[Any]) -> list[Any]:
    # big tasks first keeps both processes busy to the end; output order is by task id anyway
    return sorted(
        tasks, key=lambda t: -getattr(t, "size", getattr(t, "end", 0) - getattr(t, "start", 0))
    )


# ------------------------------------------------------------------------------ outputs


def _summary(
    options: AuditOptions,
    inputs: InputFiles,
    tally: Tally,
    report: _Report,
    shard_count: int,
    started_at: datetime,
    seconds: float,
    engine: dict[str, Any],
) -> dict[str, Any]:
    body = tally.summary()
    tables = options.tables if options.tables is not None else active_tables()
    return {
        "schema": "therapy-cds/audit-summary/1",
        "rules": {
            "payer_rule": options.payer_rule,
            # issue 15: each visit's rule comes from its Coverage unless --payer-rule was given
            "payer_rule_source": "chosen with --payer-rule"
            if options.payer.override
            else f"Coverage, {(options.payer.mapping or shipped_payer_mapping()).source}",
            "pair_rule": options.pair_rule,
            "ptp_version": tables.ptp[-1].table.version,
            # issue 15: every table loaded for the audit (each applied by date of service)
            "tables": [t.to_json() for t in tables.files],
        },
        "inputs": {
            "paths": [str(p) for p in options.paths],
            "document_files": len(inputs.documents),
            "export_files": len(inputs.exports),
        },
        "patients_pseudonymized": options.pseudonym_key is not None,
        **body,
        "report": {
            "visits_shown": len(report.visits),
            "visits_with_findings": tally.visits_with_findings,
            "limit": options.report_limit,
        },
        # Everything that may differ between two runs over the same input lives here.
        "run": {
            "started": started_at.isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "visits_per_second": round(tally.visits / seconds, 1) if seconds > 0 else None,
            **engine,  # engine, jobs (processes or worker threads), scheduler and workers
            "shards": shard_count if inputs.exports else 0,
        },
    }


def _concat(target: Path, header: tuple[str, ...], parts: list[Path]) -> None:
    with target.open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(header) + "\n")
        for part in parts:
            with part.open("r", encoding="utf-8", newline="") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)


def _write_outputs(
    out: Path,
    work: Path,
    summary: dict[str, Any],
    report_visits: list[ReportVisit],
    task_count: int,
) -> None:
    import orjson

    for name, header in (
        ("visits", VISIT_COLUMNS),
        ("findings", FINDING_COLUMNS),
        ("rejected", REJECTED_COLUMNS),
    ):
        # each task's part file by name, in task id order: a folder listing can be stale on a
        # network file system when other machines (Dask workers) wrote the files
        named = (part_path(str(work), task, name) for task in range(task_count))
        _concat(out / f"{name}.csv", header, [part for part in named if part.exists()])
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    rejected_sample = _first_rows(out / "rejected.csv", 20)
    write_report(out / "report.html", summary, report_visits, rejected_sample)


def _first_rows(path: Path, limit: int) -> list[list[str]]:
    import csv

    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        rows = []
        for row in reader:
            rows.append(row)
            if len(rows) >= limit:
                break
    return rows


def pseudonym_key(text: str | None) -> bytes:
    """The key for ``--pseudonymize``: the given text, else a random key for this run only."""
    if text:
        return hashlib.sha256(text.encode()).digest()
    return os.urandom(32)
