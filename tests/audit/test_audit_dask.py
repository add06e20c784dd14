"""``therapy-cds audit --dask``: the same tasks on a Dask cluster give byte-identical outputs, and
an engine that cannot be used is a one-line error.

One LocalCluster of 2 worker processes serves the whole module (starting one takes seconds)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_support import SAMPLES, audit, bench_script, comparable_report, generate, summary
from distributed import LocalCluster

import plugin.audit.distributed as distributed_engine
import plugin.audit.runner as runner
import plugin.audit.tasks as tasks
from plugin.audit import OUTPUT_FILES
from plugin.audit.tasks import AuditSettings, ChunkTask, ShardTask, run_task, shard_dir
from plugin.rules.cms_data import active_tables, use_tables
from plugin.rules.vocabulary import PairRule, PayerRule

MUE_HEAD = (
    "HCPCS/CPT Code,Practitioner Services MUE Values,MUE Adjudication Indicator,MUE Rationale"
)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",  # 8787 may be taken
        host="127.0.0.1",
    )
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("dask")
    export = generate(150, base, seed=19)[0]
    # an MUE table (1 unit of 97530) given to the command: E-MUE-EXCEEDED in the outputs shows
    # that the workers applied the tables the command read
    mue = base / "mue_test.csv"
    mue.write_text(f'{MUE_HEAD}\n97530,1,"3 Date of Service Edit: Clinical",Clinical: Data\n')
    return export, mue


@pytest.fixture(autouse=True)
def _restore_tables() -> Iterator[None]:
    before = active_tables()
    yield
    use_tables(before)


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    # several chunks and shards, so both workers get tasks of every kind
    monkeypatch.setattr(runner, "SHARD_BYTES", 64 * 1024)
    monkeypatch.setattr(runner, "CHUNK_BYTES", 48 * 1024)


@pytest.mark.usefixtures("small_shards")
def test_dask_outputs_are_byte_identical_to_the_local_run(
    scheduler: str, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    export, mue = inputs
    common = (
        str(export),
        str(SAMPLES),  # document files too: every kind of task
        "--mue-file",
        f"{mue}@2000-01-01",
        "--pseudonym-key",
        "k19",
        "-q",
    )
    local, dask = tmp_path / "local", tmp_path / "dask"
    assert audit(*common, "--out", str(local), "--jobs", "1").exit_code == 0
    result = audit(*common, "--out", str(dask), "--dask", scheduler)
    assert result.exit_code == 0, result.output
    assert "2 Dask worker(s)" in result.stdout

    assert sorted(p.name for p in dask.iterdir()) == sorted(OUTPUT_FILES)  # no work folder left
    for name in ("visits.csv", "findings.csv", "rejected.csv"):
        assert (local / name).read_bytes() == (dask / name).read_bytes(), name
    first, second = summary(local), summary(dask)
    local_run, dask_run = first.pop("run"), second.pop("run")
    assert first == second
    assert first["findings_by_rule"].get("E-MUE-EXCEEDED", 0) > 0  # the tables reached workers
    assert first["totals"]["visits"] > 150
    assert dask_run["shards"] == local_run["shards"] > 4
    assert local_run["engine"] == "local"
    assert dask_run["engine"] == "dask"
    assert dask_run["scheduler"] == scheduler
    assert dask_run["workers"] == dask_run["jobs"] == 2
    assert dask_run["storage"] == "shared"
    html = [(o / "report.html").read_text() for o in (local, dask)]
    assert comparable_report(html[0]) == comparable_report(html[1])
    assert "with 1 local process(es)" in html[0]
    assert f"on Dask at {scheduler} (2 worker(s), 2 thread(s))" in html[1]


@pytest.mark.usefixtures("small_shards")
def test_without_shared_storage_shards_are_shipped_and_outputs_stay_identical(
    scheduler: str, inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the token the workers look for never reaches the work folder, as when --out is a folder
    # of this machine only: the workers answer that they cannot see it
    monkeypatch.setattr(distributed_engine, "write_token", lambda path, token: None)
    export, _ = inputs
    local, dask = tmp_path / "local", tmp_path / "dask"
    assert audit(str(export), "--out", str(local), "--jobs", "1", "-q").exit_code == 0
    result = audit(str(export), "--out", str(dask), "--dask", scheduler, "-q")
    assert result.exit_code == 0, result.output
    for name in ("visits.csv", "findings.csv", "rejected.csv"):
        assert (local / name).read_bytes() == (dask / name).read_bytes(), name
    first, second = summary(local), summary(dask)
    dask_run = second.pop("run")
    first.pop("run")
    assert first == second
    assert dask_run["storage"] == "shipped"
    assert dask_run["shards"] > 4
    html = [(o / "report.html").read_text() for o in (local, dask)]
    assert comparable_report(html[0]) == comparable_report(html[1])
    assert "2 thread(s), shard data sent to them)" in html[1]


def test_a_task_run_again_writes_the_same_files(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dask runs the tasks of a worker that died again elsewhere: pass 1 must not append the
    same lines twice, nor pass 2 its rows."""
    export, _ = inputs
    work = runner.prepare_out(tmp_path / "out")
    files = tuple(sorted(export.glob("*.ndjson")))
    chunks, refused = runner.plan_chunks(files, 64 * 1024)
    assert len(chunks) > 2
    assert not refused
    for shard in range(3):
        shard_dir(str(work), shard).mkdir(parents=True)
    chunk_tasks = [
        ChunkTask(n, n, source, start, end, line, 3, str(work))
        for n, (source, start, end, line) in enumerate(chunks)
    ]
    # flushes to the shards several times per task, so a rerun truncates only once
    monkeypatch.setattr(tasks, "_FLUSH_BYTES", 16 * 1024)

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(work)): p.read_bytes() for p in work.rglob("*") if p.is_file()}

    for task in chunk_tasks:
        run_task(task)
    settings = AuditSettings(PayerRule.CMS, PairRule.CMS, str(work))
    sources = tuple(c[0] for c in chunks)
    shard_tasks = [ShardTask(100 + s, s, 0, sources, settings) for s in range(3)]
    for task in shard_tasks:
        run_task(task)
    once = snapshot()
    assert any(name.endswith(".visits.csv") for name in once)
    for task in [*chunk_tasks, *shard_tasks]:
        run_task(task)
    assert snapshot() == once


def _one_line_error(result: object, out: Path) -> str:
    assert getattr(result, "exit_code", None) == 2
    output = getattr(result, "output", "")
    assert "Traceback" not in output
    lines = getattr(result, "stderr", "").strip().splitlines()
    assert len(lines) == 1, lines
    assert not out.exists() or not any(out.iterdir())  # no work folder left behind
    return str(lines[0])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_scheduler_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distributed_engine, "CONNECT_SECONDS", 1.0)
    address = f"tcp://127.0.0.1:{_free_port()}"
    out = tmp_path / "out"
    result = audit(str(SAMPLES / "pair-no-modifier.json"), "--out", str(out), "--dask", address)
    line = _one_line_error(result, out)
    assert line.startswith(f"therapy-cds audit: --dask {address}: cannot reach the scheduler")
    assert "dask scheduler" in line


def test_without_the_dask_extra_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as on a machine without dask: importing distributed fails
    monkeypatch.delitem(sys.modules, "plugin.audit.distributed")
    monkeypatch.setitem(sys.modules, "distributed", None)
    out = tmp_path / "out"
    result = audit(str(SAMPLES / "pair-no-modifier.json"), "--out", str(out), "--dask", "local[1]")
    line = _one_line_error(result, out)
    assert line == (
        'therapy-cds audit: --dask needs the dask extra: pip install "therapy-cds[dask]" '
        "(on this machine and on every worker)"
    )


def test_addresses() -> None:
    parse = distributed_engine.parse_address
    assert parse(" local[3] ") == distributed_engine.DaskAddress("local[3]", 3)
    for address in ("tcp://scheduler:8786", "localhost:8786", "tls://10.0.0.5:8786"):
        assert parse(address) == distributed_engine.DaskAddress(address)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("local[0]", "--dask local[0]: give between 1 and 256 local workers"),
        ("local[two]", "--dask 'local[two]': give a scheduler address (tcp://HOST:8786)"),
        ("", "--dask '': give a scheduler address (tcp://HOST:8786) or local[N]"),
    ],
)
def test_a_bad_address_is_a_one_line_error(tmp_path: Path, value: str, expected: str) -> None:
    out = tmp_path / "out"
    result = audit(str(SAMPLES / "pair-no-modifier.json"), "--out", str(out), "--dask", value)
    assert _one_line_error(result, out).startswith(f"therapy-cds audit: {expected}")


def test_jobs_and_dask_together_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = audit(str(SAMPLES), "--out", str(out), "--dask", "local[1]", "--jobs", "2")
    assert _one_line_error(result, out) == (
        "therapy-cds audit: --jobs is for local processes; with --dask the cluster's workers do "
        "the work"
    )


def test_a_worker_that_cannot_see_the_work_folder_or_inputs_says_so(tmp_path: Path) -> None:
    # what each worker answers before the first task (run here: every worker of the module's
    # cluster shares this machine's file system)
    token = tmp_path / "dask-token"
    token.write_text("abc", encoding="ascii")
    probe = distributed_engine.probe_worker
    version = probe(str(token), "abc")[0]
    assert version
    assert probe(str(token), "abc", [str(SAMPLES)]) == (version, "")
    assert probe(str(token), "other") == (version, "cannot see the output folder")
    assert probe(str(tmp_path / "elsewhere" / "dask-token"), "abc") == (
        version,
        "cannot see the output folder",
    )
    missing = str(tmp_path / "export-only-here")
    assert probe(str(token), "abc", [str(SAMPLES), missing]) == (
        version,
        f"cannot see the input {missing}",
    )


def test_the_bench_extrapolates_from_the_rate_per_worker() -> None:
    bench = bench_script("bench_audit.py")
    rows = [
        {"workers": 1, "visits": 100, "visits_per_s": 90, "audit_phase_visits_per_s": 95},
        {"workers": 1, "visits": 1000, "visits_per_s": 500, "audit_phase_visits_per_s": 800},
        {"workers": 2, "visits": 1000, "visits_per_s": 900, "audit_phase_visits_per_s": 1600},
    ]
    lines = bench.extrapolate(rows, 10_000_000, 10, 0).strip().splitlines()
    assert lines == [
        "2 workers vs 1: 1.80x visits/s (1,000 visits)",
        "per worker: 450 visits/s whole command, 800 visits/s audit phase (from 2 worker(s))",
        "extrapolated, 10,000,000 visits on 10 nodes x 2 worker(s), whole command rate: "
        "1,111 s (18.5 min)",
        "extrapolated, 10,000,000 visits on 10 nodes x 2 worker(s), audit phase rate: "
        "625 s (10.4 min)",
    ]
