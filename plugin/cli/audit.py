"""``therapy-cds audit``: the rule book over folders of bundles and FHIR Bulk Data exports.

Exit codes: 0 when the audit completed (rejected files or lines are listed in ``rejected.csv``,
they do not fail the run), 2 when the arguments are unusable (no inputs, an output folder that
cannot be written) -- one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from plugin.cli._app import app
from plugin.cli._audit_sources import (
    ClientId,
    ExportArgs,
    ExportDir,
    FhirExport,
    KeyId,
    PrivateKey,
    Since,
    resolve_sources,
)
from plugin.cli._inputs import (
    MaxFileSize,
    MueFiles,
    PtpFiles,
    cli_settings,
    max_file_bytes,
    rule_tables,
)
from plugin.cli._rules import PairRuleOption, PayerRuleOption
from plugin.rules.payer import PayerChoice


def _say(message: str) -> None:
    sys.stderr.write(f"therapy-cds audit: {message}\n")


def _engine(run: dict[str, object]) -> str:
    if run.get("engine") == "dask":
        return f"{run['workers']} Dask worker(s)"
    return f"{run['jobs']} process(es)"


class _Bar:
    """A rich progress bar: share of input done, visits done, visits per second, time left."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=32),
            TaskProgressColumn(),
            TextColumn("{task.fields[visits]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("left ·"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.visits = 0
        self.started = time.perf_counter()

    def phase(self, description: str, total: int) -> None:
        if self.task is None:
            self.progress.start()  # the live display starts with the first phase
        else:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total)
        self.visits = 0
        self.started = time.perf_counter()
        self.task = self.progress.add_task(description, total=max(total, 1), visits="", rate="")

    def advance(self, amount: int, visits: int) -> None:
        if self.task is None:
            return
        self.visits += visits
        seconds = max(time.perf_counter() - self.started, 1e-6)
        if self.visits:
            self.progress.update(
                self.task,
                advance=amount,
                visits=f"{self.visits:,} visits",
                rate=f"{self.visits / seconds:,.0f} visits/s",
            )
        else:
            self.progress.update(self.task, advance=amount)


@app.command()
def audit(
    paths: list[str] | None = typer.Argument(
        None,
        help="Folders or files: Bundle / resource / CDS Hooks request JSON, FHIR Bulk Data "
        "NDJSON exports; local paths or URLs (s3://, gs://, file://).",
        show_default=False,
    ),
    out: str = typer.Option(
        ..., "--out", "-o", help="Folder for the report (created if needed); a path or a URL."
    ),
    payer_rule: PayerRuleOption = None,
    pair_rule: PairRuleOption = None,
    jobs: int = typer.Option(0, "--jobs", "-j", help="Processes to use; 0 = every core."),
    pseudonymize: bool = typer.Option(
        False,
        "--pseudonymize",
        help="Replace patient references with keyed hashes (random key unless --pseudonym-key).",
    ),
    pseudonym_key_text: str | None = typer.Option(
        None,
        "--pseudonym-key",
        envvar="THERAPY_CDS_PSEUDONYM_KEY",
        help="Key for --pseudonymize, so that two audits give the same pseudonyms.",
    ),
    report_visits: int = typer.Option(
        500, "--report-visits", help="Visits with findings listed in report.html (most serious)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    dask: str | None = typer.Option(
        None,
        "--dask",
        metavar="ADDRESS",
        help="Run the tasks on a Dask cluster: a scheduler (tcp://HOST:8786; best with the inputs "
        "and --out on storage every worker mounts at the same path) or local[N] for N local "
        "worker processes. Needs therapy-cds with its dask extra here and on every worker.",
    ),
    max_file_size: MaxFileSize = None,
    ptp_file: PtpFiles = None,
    mue_file: MueFiles = None,
    fhir_export: FhirExport = None,
    client_id: ClientId = None,
    private_key: PrivateKey = None,
    key_id: KeyId = None,
    since: Since = None,
    export_dir: ExportDir = None,
) -> None:
    """Audit many visits: CSV files, summary.json and a readable report.html in --out."""
    # imported here so that the other commands do not pay for the audit's imports
    from plugin.audit import AuditOptions, AuditUsageError, pseudonym_key, run_audit
    from plugin.audit.tasks import cpu_count

    if jobs < 0 or report_visits < 0:
        _say("--jobs and --report-visits must be 0 or more")
        raise typer.Exit(2)
    if dask is not None and jobs:
        _say("--jobs is for local processes; with --dask the cluster's workers do the work")
        raise typer.Exit(2)
    defaults = cli_settings("audit")  # only the rule defaults are read here
    key = None
    if pseudonymize or pseudonym_key_text:
        key = pseudonym_key(pseudonym_key_text)
    options = AuditOptions(
        paths=(),  # set below, once the options are known to be usable
        out=Path(),
        payer_rule=payer_rule or defaults.payer_rule,
        pair_rule=pair_rule or defaults.pair_interval_rule,
        jobs=jobs or cpu_count(),
        pseudonym_key=key,
        report_limit=report_visits,
        max_procedures_per_visit=defaults.max_procedures_per_visit,
        max_file_bytes=max_file_bytes(max_file_size, defaults),
        tables=rule_tables(ptp_file, mue_file, defaults, "audit"),
        payer=PayerChoice(
            mapping=defaults.payer_mapping(),
            override="chosen with --payer-rule" if payer_rule else None,
        ),
        dask=dask,
    )
    export = ExportArgs(fhir_export, client_id, private_key, key_id, since, export_dir)
    sources = resolve_sources(paths, out, export, quiet)  # downloads / stages; exits on error
    options = replace(options, paths=sources.paths, out=sources.out)
    console = Console(stderr=True, highlight=False)
    bar = _Bar(console)
    try:
        try:
            outcome = run_audit(options, None if quiet else bar)
        finally:
            bar.progress.stop()
    except AuditUsageError as exc:
        _say(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        _say(f"interrupted; what is in {out} is incomplete")
        raise typer.Exit(130) from None
    sources.publish()
    totals = outcome.summary["totals"]
    recon = outcome.summary["reconciliation"]
    run = outcome.summary["run"]
    sys.stdout.write(
        f"{totals['visits']:,} visits audited ({totals['visits_with_findings']:,} with findings, "
        f"{totals['errors']:,} errors) in {run['seconds']:.1f} s "
        f"({run['visits_per_second'] or 0:,.0f} visits/s, {_engine(run)}); "
        f"{recon['rejected']:,} resource(s) and {recon['files_rejected']:,} file(s) rejected.\n"
        f"Report: {sources.report}\n"
    )
    raise typer.Exit(0)
