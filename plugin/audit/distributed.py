"""The audit's tasks on a Dask distributed cluster (``therapy-cds audit ... --dask ADDRESS``).

The tasks are the ones the local processes run (:mod:`plugin.audit.tasks`): small values naming
byte ranges of the input files and shard folders under the work folder, never the data itself.
The runner concatenates part files in task id order whoever wrote them, so the outputs are
byte-identical to a local run. Before the first task every worker is asked whether it sees the
work folder (a token file the runner writes there) and the inputs, and which therapy-cds it runs:

* **Shared storage** (every worker sees both): each worker reads its inputs and writes its part
  files where the runner's own processes would; the scheduler carries only task descriptions
  and counters. This is the setup to use: inputs and ``--out`` on storage every worker mounts at
  the same path (NFS, a cluster file system, an object store mounted with a FUSE driver).
* **Shipped** (some worker does not): pass 1, the documents and the timelines run in local
  processes here; each shard of pass 2 (a few MB) is scattered straight to a worker, audited in
  a private folder there, and its part files come back straight from it. A few shards per worker
  thread are in flight at a time, so the runner's memory stays bounded.

Every worker needs the same therapy-cds (``pip install "therapy-cds[dask]"``): tasks are sent as
references to this package's functions; another version is refused. The CMS tables the audit
applies are scattered once to every worker and handed to each task, so a worker's own tables or
settings never matter.

``ADDRESS`` is a scheduler (``tcp://scheduler:8786``) or ``local[N]``: a LocalCluster of N worker
processes on this machine, started for the audit and stopped after it.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from distributed import CancelledError, Client, KilledWorker, LocalCluster, as_completed

from plugin.audit.runner import AuditUsageError, LocalPool
from plugin.audit.tasks import (
    AuditTask,
    ShardTask,
    TaskResult,
    audit_shard,
    cpu_count,
    run_task,
    shard_dir,
)
from plugin.rules.cms_data import RuleTables, use_tables

CONNECT_SECONDS = 10.0  # to reach the scheduler, and for a first worker to join it
_LOCAL = re.compile(r"local\[(\d+)\]")
MAX_LOCAL_WORKERS = 256
PACKAGE = "therapy-cds"


class DaskEngineError(AuditUsageError):
    """The cluster cannot run the audit; ``str(error)`` is the one line to show."""


@dataclass(frozen=True, slots=True)
class DaskAddress:
    """A parsed ``--dask`` value: a scheduler address, or a local cluster's worker count."""

    text: str
    local_workers: int = 0  # > 0 for local[N]


def parse_address(text: str) -> DaskAddress:
    """``local[N]`` or a scheduler address (``tcp://host:8786``, ``tls://...``, ``host:8786``)."""
    value = text.strip()
    found = _LOCAL.fullmatch(value)
    if found:
        workers = int(found.group(1))
        if not 1 <= workers <= MAX_LOCAL_WORKERS:
            raise DaskEngineError(
                f"--dask {value}: give between 1 and {MAX_LOCAL_WORKERS} local workers"
            )
        return DaskAddress(value, workers)
    if not value or value.startswith("local[") or any(c.isspace() for c in value):
        raise DaskEngineError(
            f"--dask {value!r}: give a scheduler address (tcp://HOST:8786) or local[N]"
        )
    return DaskAddress(value)


def _version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "not installed"


def probe_worker(token_file: str, token: str, inputs: Sequence[str] = ()) -> tuple[str, str]:
    """Run on each worker before the audit: (its therapy-cds version, "" when it sees the work
    folder and the inputs, else what it cannot see)."""
    try:
        seen = Path(token_file).read_text(encoding="ascii")
    except OSError:
        seen = ""
    if seen != token:
        return _version(), "cannot see the output folder"
    for path in inputs:
        if not os.path.exists(path):
            return _version(), f"cannot see the input {path}"
    return _version(), ""


def run_with_tables(task: AuditTask, tables: RuleTables) -> Any:
    """One task on a worker, with the audit's CMS tables applied (as each local process does)."""
    use_tables(tables)
    return run_task(task)


def run_shipped_shard(
    task: ShardTask, files: dict[str, bytes], tables: RuleTables
) -> tuple[TaskResult, dict[str, bytes]]:
    """Pass 2 on a worker that does not share the work folder: the shard's files arrive with the
    task, are audited in a private folder, and its part files go back (name -> bytes)."""
    use_tables(tables)
    with tempfile.TemporaryDirectory(prefix="therapy-cds-shard-") as private:
        folder = shard_dir(private, task.shard)
        folder.mkdir(parents=True)
        (Path(private) / "parts").mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        result = audit_shard(replace(task, settings=replace(task.settings, workdir=private)))
        parts = {p.name: p.read_bytes() for p in sorted((Path(private) / "parts").iterdir())}
    return result, parts


class DaskPool:
    """The :class:`~plugin.audit.runner.TaskPool` of a Dask cluster (see the module docstring)."""

    def __init__(
        self, address: str, tables: RuleTables, workdir: Path, inputs: Sequence[Path] = ()
    ) -> None:
        self.address = parse_address(address)
        self.workdir = workdir
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None
        self._local: LocalPool | None = None  # without shared storage: the tasks reading inputs
        self._tables: Any = None  # the scattered tables (a future every task receives)
        self._run = secrets.token_hex(6)  # task keys of this audit, unique on a shared cluster
        try:
            self._connect()
            self.workers, self.threads, self.shared = self._check_workers(workdir, inputs)
            assert self._client is not None
            # sent once to every worker, then handed to each task by reference
            self._tables = self._client.scatter(tables, broadcast=True, hash=False)
            if not self.shared:
                self._local = LocalPool(cpu_count(), tables)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        where = self.address.text
        try:
            if self.address.local_workers:
                self._cluster = LocalCluster(
                    n_workers=self.address.local_workers,
                    threads_per_worker=1,  # the rules are Python: one task per process at a time
                    processes=True,
                    # the scheduler's HTTP endpoints on a free port: 8787 may be another cluster's
                    dashboard_address="127.0.0.1:0",
                    host="127.0.0.1",
                )
                self._client = Client(self._cluster, timeout=CONNECT_SECONDS)
            else:
                self._client = Client(where, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise DaskEngineError(
                f"--dask {where}: cannot reach the scheduler ({_reason(exc)}); start one with "
                "`dask scheduler` and give its address, or use local[N]"
            ) from None
        try:
            self._client.wait_for_workers(1, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError):
            raise DaskEngineError(
                f"--dask {where}: no worker joined the scheduler within {CONNECT_SECONDS:g} s; "
                f"start workers with `dask worker {where}`"
            ) from None

    def _check_workers(self, workdir: Path, inputs: Sequence[Path]) -> tuple[int, int, bool]:
        """(workers, threads, whether every worker sees the work folder and the inputs), after
        checking that every worker runs the same therapy-cds as this machine."""
        assert self._client is not None
        token = secrets.token_hex(16)
        token_file = workdir / "dask-token"
        write_token(token_file, token)
        try:
            answers: dict[str, tuple[str, str]] = self._client.run(
                probe_worker, str(token_file), token, [str(p.absolute()) for p in inputs]
            )
        except Exception as exc:
            raise DaskEngineError(
                f"--dask {self.address.text}: a worker could not run the audit's code "
                f"({type(exc).__name__}); install the same therapy-cds on every worker "
                '(pip install "therapy-cds[dask]")'
            ) from None
        finally:
            token_file.unlink(missing_ok=True)
        other = sorted(w for w, (version, _) in answers.items() if version != _version())
        if other:
            raise DaskEngineError(
                f"--dask {self.address.text}: worker {other[0]} runs therapy-cds "
                f"{answers[other[0]][0]}, this machine {_version()}; install the same version "
                "everywhere"
            )
        shared = not any(problem for _, problem in answers.values())
        info = self._client.scheduler_info(n_workers=-1)["workers"]
        threads = sum(int(w.get("nthreads", 1)) for w in info.values())
        return len(answers), max(threads, 1), shared

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "dask",
            "scheduler": self.address.text,
            "workers": self.workers,
            "jobs": self.threads,
            # shared: workers read the inputs and the work folder; shipped: shard data is sent
            "storage": "shared" if self.shared else "shipped",
        }

    def run(self, tasks: Sequence[AuditTask]) -> Iterator[Any]:
        """Each task's result as it finishes (the runner's merges do not depend on the order).

        Without shared storage, the shard audits (pass 2) go to the cluster with their data and
        every other task runs in local processes. A task that raises stops the audit: the others
        are cancelled and the error is raised here, as in a local run; a cluster that fails under
        the audit (a worker killed again and again, the scheduler gone, a worker that lost the
        shared storage) is a :class:`DaskEngineError`."""
        if not tasks:
            return
        try:
            if self.shared:
                yield from self._remote(tasks)
            else:
                yield from self._shipped(tasks)
        except (KilledWorker, CancelledError, OSError, TimeoutError) as exc:
            raise DaskEngineError(
                f"--dask {self.address.text}: the cluster failed during the audit "
                f"({type(exc).__name__}: {_reason(exc)}); the outputs were not written"
            ) from None

    def _remote(self, tasks: Sequence[AuditTask]) -> Iterator[Any]:
        assert self._client is not None
        futures = self._client.map(
            run_with_tables,
            list(tasks),
            tables=self._tables,
            pure=False,
            key=[f"therapy-cds-audit-{self._run}-{t.task_id}" for t in tasks],
        )
        try:
            for _, result in as_completed(futures, with_results=True):
                yield result
        finally:
            self._client.cancel(futures)

    def _shipped(self, tasks: Sequence[AuditTask]) -> Iterator[Any]:
        """Shard tasks with their files, a few per worker thread at a time (the runner's memory
        stays bounded); their part files are written into the work folder as they come back."""
        assert self._client is not None
        assert self._local is not None
        client = self._client
        shards = [t for t in tasks if isinstance(t, ShardTask)]
        others = [t for t in tasks if not isinstance(t, ShardTask)]
        waiting = iter(shards)
        running = as_completed()
        held: dict[str, Any] = {}  # task key -> its scattered files, released when done

        def submit_next() -> None:
            task = next(waiting, None)
            if task is None:
                return
            folder = shard_dir(str(self.workdir), task.shard)
            files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
            # straight to a worker, not through the scheduler; the task then runs where they are
            [data] = client.scatter([files], direct=True, hash=False)
            key = f"therapy-cds-audit-{self._run}-{task.task_id}"
            held[key] = data
            running.add(
                client.submit(run_shipped_shard, task, data, self._tables, key=key, pure=False)
            )

        try:
            for _ in range(2 * self.threads):
                submit_next()
            yield from self._local.run(others)  # while the cluster works on the first shards
            for future in running:
                result, parts = client.gather(future, direct=True)
                for name, data in parts.items():
                    _write_part(self.workdir, name, data)
                held.pop(future.key, None)
                future.release()
                submit_next()
                yield result
        finally:
            client.cancel([*running.futures, *held.values()])

    def close(self) -> None:
        client, cluster, local = self._client, self._cluster, self._local
        self._client = self._cluster = self._local = None
        if local is not None:
            local.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def write_token(path: Path, token: str) -> None:
    path.write_text(token, encoding="ascii")


_PART_NAME = re.compile(r"\d{6}\.[a-z]+\.csv")


def _write_part(workdir: Path, name: str, data: bytes) -> None:
    if not _PART_NAME.fullmatch(name):  # names come from audit_shard; anything else is a bug
        raise ValueError(f"unexpected part file name from a worker: {name!r}")
    (workdir / "parts" / name).write_bytes(data)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
