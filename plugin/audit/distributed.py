"""The audit's tasks on a Dask distributed cluster (``therapy-cds audit ... --dask ADDRESS``).

The tasks are the ones the local processes run (:mod:`plugin.audit.tasks`): small values naming
byte ranges of the input files and shard folders under the work folder, never the data itself.
Each worker reads its inputs and writes its part files where the runner's own processes would,
so the scheduler only carries task descriptions and counters, and the runner concatenates part
files in task id order exactly as in a local run: the outputs are byte-identical.

That needs the inputs and the output folder (``--out``, where the work folder lives) on storage
every worker mounts at the same path (NFS, a cluster file system, an object store mounted with a
FUSE driver). Before the first task the runner checks it: a token file written in the work folder
must be readable by every worker, else the audit stops with a one-line error.

Every worker needs the same therapy-cds (``pip install "therapy-cds[dask]"``): tasks are sent as
references to this package's functions. The CMS tables the audit applies are scattered once to
every worker and handed to each task, so a worker's own tables or settings never matter.

``ADDRESS`` is a scheduler (``tcp://scheduler:8786``) or ``local[N]``: a LocalCluster of N worker
processes on this machine, started for the audit and stopped after it.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from distributed import CancelledError, Client, KilledWorker, LocalCluster, as_completed

from plugin.audit.runner import AuditUsageError
from plugin.audit.tasks import AuditTask, run_task
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
    if not value or value.startswith("local") or any(c.isspace() for c in value):
        raise DaskEngineError(
            f"--dask {value!r}: give a scheduler address (tcp://HOST:8786) or local[N]"
        )
    return DaskAddress(value)


def _version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "not installed"


def probe_worker(token_file: str, token: str, inputs: Sequence[str] = ()) -> str:
    """Run on each worker before the audit: ``version:X`` when it can take part, else why not."""
    try:
        seen = Path(token_file).read_text(encoding="ascii")
    except OSError:
        seen = ""
    if seen != token:
        return "cannot see the output folder"
    for path in inputs:
        if not os.path.exists(path):
            return f"cannot see the input {path}"
    return f"version:{_version()}"


def run_with_tables(task: AuditTask, tables: RuleTables) -> Any:
    """One task on a worker, with the audit's CMS tables applied (as each local process does)."""
    use_tables(tables)
    return run_task(task)


class DaskPool:
    """The :class:`~plugin.audit.runner.TaskPool` of a Dask cluster (see the module docstring)."""

    def __init__(
        self, address: str, tables: RuleTables, workdir: Path, inputs: Sequence[Path] = ()
    ) -> None:
        self.address = parse_address(address)
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None
        self._tables: Any = None  # the scattered tables (a future every task receives)
        self._run = secrets.token_hex(6)  # task keys of this audit, unique on a shared cluster
        try:
            self._connect()
            self.workers, self.threads = self._check_workers(workdir, inputs)
            assert self._client is not None
            # sent once to every worker, then handed to each task by reference
            self._tables = self._client.scatter(tables, broadcast=True, hash=False)
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
                    dashboard_address=None,
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

    def _check_workers(self, workdir: Path, inputs: Sequence[Path]) -> tuple[int, int]:
        """(workers, threads) after checking every worker sees the work folder and the inputs,
        and runs the same therapy-cds as this machine."""
        assert self._client is not None
        token = secrets.token_hex(16)
        token_file = workdir / "dask-token"
        token_file.write_text(token, encoding="ascii")
        try:
            answers: dict[str, str] = self._client.run(
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
        ours = f"version:{_version()}"
        blind = sorted(w for w, answer in answers.items() if not answer.startswith("version:"))
        if blind:
            what = answers[blind[0]]
            if what == "cannot see the output folder":
                what = f"cannot see the output folder {workdir.parent}"
            raise DaskEngineError(
                f"--dask {self.address.text}: {len(blind)} of {len(answers)} worker(s) (first "
                f"{blind[0]}) {what}; put the inputs and --out on storage every worker mounts "
                "at the same path"
            )
        other = sorted(w for w, answer in answers.items() if answer != ours)
        if other:
            raise DaskEngineError(
                f"--dask {self.address.text}: worker {other[0]} runs therapy-cds "
                f"{answers[other[0]].removeprefix('version:')}, this machine {_version()}; "
                "install the same version everywhere"
            )
        info = self._client.scheduler_info(n_workers=-1)["workers"]
        threads = sum(int(w.get("nthreads", 1)) for w in info.values())
        return len(answers), max(threads, 1)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "dask",
            "scheduler": self.address.text,
            "workers": self.workers,
            "jobs": self.threads,
        }

    def run(self, tasks: Sequence[AuditTask]) -> Iterator[Any]:
        """Each task's result as it finishes (the runner's merges do not depend on the order).

        A task that raises stops the audit: the others are cancelled and the error is raised
        here, as in a local run; a cluster that fails under the audit (a worker killed again and
        again, the scheduler gone, a worker that lost the shared storage) is a
        :class:`DaskEngineError`."""
        if not tasks:
            return
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
        except (KilledWorker, CancelledError, OSError, TimeoutError) as exc:
            raise DaskEngineError(
                f"--dask {self.address.text}: the cluster failed during the audit "
                f"({type(exc).__name__}: {_reason(exc)}); the outputs were not written"
            ) from None
        finally:
            self._client.cancel(futures)

    def close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
