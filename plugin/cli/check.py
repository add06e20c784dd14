"""``therapy-cds check``: analyse FHIR input offline.

Exit codes (product contract): 0 when every input was analysed (findings or not), 2 when an input
is unreadable or invalid -- one line on stderr naming the file and the problem, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from fhir_mappings import InputError, IssueCode, load_path, map_document
from fhir_mappings.codes import code_info
from plugin.cli._app import app
from plugin.cli._inputs import MaxFileSize, max_file_bytes
from plugin.pipeline import CheckResult, TooManyProceduresError, check_record
from plugin.rules import PairRule, PayerRule, VisitAnalysis, analysis_to_json


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class PayerRuleOption(StrEnum):
    cms = "cms"
    ama = "ama"


class PairRuleOption(StrEnum):
    cms = "cms"
    strict = "strict"


_INPUT_SUFFIXES = (".json", ".ndjson", ".jsonl")


def expand_paths(paths: list[Path]) -> Iterator[Path]:
    """Files as given; folders contribute their ``*.json`` / ``*.ndjson`` files, sorted (a FIFO
    or socket of that name too: it is refused by name rather than skipped in silence)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if not p.is_dir() and p.suffix.lower() in _INPUT_SUFFIXES
            )
        else:
            yield path


#: Input problems printed per file: a file of a million broken lines says so in a bounded
#: number of lines (the analysis of what could be read is unchanged).
ISSUES_SHOWN = 50
#: What an input problem did, where it is not "skipped" (a line, entry or resource dropped).
_OUTCOME = {
    IssueCode.VALUE_NOT_USED: "value not used",
    IssueCode.CONTAINER_NOTE: "noted",
    IssueCode.DIFFERENT_COPY: "first copy used",
}


def _say(message: str) -> None:
    sys.stderr.write(f"therapy-cds check: {message}\n")


@app.command()
def check(
    paths: list[Path] = typer.Argument(
        ..., help="Bundle, resource, CDS Hooks request or NDJSON files (or folders of them)."
    ),
    payer_rule: PayerRuleOption | None = typer.Option(
        None, "--payer-rule", help="cms (8-minute rule) or ama; default THERAPY_CDS_PAYER_RULE."
    ),
    pair_rule: PairRuleOption | None = typer.Option(
        None, "--pair-rule", help="cms or strict; default THERAPY_CDS_PAIR_INTERVAL_RULE."
    ),
    output: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text or json."),
    strict: bool = typer.Option(
        False, "--strict", help="Also validate every resource with the full FHIR models."
    ),
    max_file_size: MaxFileSize = None,
) -> None:
    """Analyse FHIR input offline: units, the 97140/97530 pair, plan of care, findings."""
    from plugin.settings import Settings

    defaults = Settings(dev_mode=True)  # only the rule defaults are read here
    payer: PayerRule = payer_rule.value if payer_rule else defaults.payer_rule
    pair: PairRule = pair_rule.value if pair_rule else defaults.pair_interval_rule
    max_bytes = max_file_bytes(max_file_size, defaults)
    results: list[tuple[Path, CheckResult]] = []
    failed = False
    files = list(expand_paths(paths))
    if not files:
        _say("no input files found in the given folders (looked for *.json and *.ndjson)")
        raise typer.Exit(2)
    for path in files:
        try:
            document = load_path(path, max_bytes=max_bytes)
            record = map_document(document, strict=strict)
        except InputError as exc:
            _say(str(exc))
            failed = True
            continue
        for issue in record.issues[:ISSUES_SHOWN]:
            where = f"{issue.location}" + (f" ({issue.resource})" if issue.resource else "")
            field = f" {issue.field}:" if issue.field else ""
            _say(f"{path}: {where}:{field} {issue.message} ({_OUTCOME.get(issue.code, 'skipped')})")
        if len(record.issues) > ISSUES_SHOWN:
            _say(
                f"{path}: {len(record.issues) - ISSUES_SHOWN} more input problem(s) not shown"
                f" (the first {ISSUES_SHOWN} are above)"
            )
        if record.other_patient_resources:  # a CDS Hooks request file: counted, never named
            _say(
                f"{path}: {record.other_patient_resources} resource(s) about another patient"
                " than context.patientId were left out"
            )
        try:
            result = check_record(
                record,
                payer_rule=payer,
                pair_rule=pair,
                max_procedures_per_visit=defaults.max_procedures_per_visit,
            )
        except TooManyProceduresError as exc:
            _say(f"{path}: {exc}; check the input, or raise the limit for visits this large")
            failed = True
            continue
        results.append((path, result))
    if output is OutputFormat.json:
        merged: dict[str, list[Any]] = {"visits": [], "findings": []}
        for _, result in results:
            body = analysis_to_json(result.analysis)
            merged["visits"].extend(body["visits"])
            merged["findings"].extend(body["findings"])
        sys.stdout.write(orjson.dumps(merged, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        console = Console(highlight=False, soft_wrap=False, width=110)
        for path, result in results:
            _print_text(console, path, result)
    raise typer.Exit(2 if failed else 0)


_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _code_label(code: str) -> str:
    info = code_info(code)
    if info is None:
        return code
    short = info.descriptor.split(",")[0].split("(")[0].strip()
    return f"{code} {short[:28]}"


def _print_visit(console: Console, visit: VisitAnalysis) -> None:
    title = (
        f"{visit.patient} · {visit.date.isoformat()} · {visit.discipline.value} · "
        f"{visit.payer_rule.upper()} rule · {visit.total_timed_minutes} timed min · "
        f"{visit.units_allowed_total} unit(s) allowed"
    )
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("code")
    table.add_column("documented min", justify="right")
    table.add_column("counted min", justify="right")
    table.add_column("units", justify="right")
    for code in sorted(set(visit.raw_minutes) | set(visit.units)):
        table.add_row(
            _code_label(code),
            str(visit.raw_minutes.get(code, 0)),
            str(visit.minutes.get(code, 0)),
            str(visit.units.get(code, 0)),
        )
    console.print(table)
    if len(visit.allocations) > 1:
        options = " or ".join(
            ", ".join(f"{c}×{n}" for c, n in allocation.items()) for allocation in visit.allocations
        )
        console.print(f"  acceptable allocations: {options}")
    console.print(f"  97140/97530 pair: [bold]{visit.pair.status.value}[/bold]")
    if not visit.findings:
        console.print("  no findings")
    for finding in visit.findings:
        style = _SEVERITY_STYLE[finding.severity.value]
        codes = f" [{', '.join(finding.codes)}]" if finding.codes else ""
        console.print(f"  [{style}]{finding.rule.value}[/{style}]{codes} {finding.message}")
    console.print()


def _print_text(console: Console, path: Path, result: CheckResult) -> None:
    console.rule(f"[bold]{path}[/bold]", align="left")
    analysis = result.analysis
    if not analysis.visits and not analysis.findings:
        console.print("  no therapy services (CPT/HCPCS Procedures) found\n")
    for visit in analysis.visits:
        _print_visit(console, visit)
    if analysis.findings:
        console.print("[bold]Not part of any visit[/bold]")
        for finding in analysis.findings:
            style = _SEVERITY_STYLE[finding.severity.value]
            console.print(f"  [{style}]{finding.rule.value}[/{style}] {finding.message}")
        console.print()
