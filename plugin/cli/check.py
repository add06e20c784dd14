"""``therapy-cds check``: analyse FHIR input offline.

Exit codes (product contract): 0 when every input was analysed (findings or not), 2 when an input
is unreadable or invalid -- one line on stderr naming the file and the problem, never a traceback.
With ``--fail-on error|warning``, 1 when every input was analysed and a finding of that severity
or worse was found (2 still wins). A file found in a folder that is JSON but not FHIR data (a
manifest such as ``scenarios.json``) is skipped with a note; named on the command line, it is
refused (exit 2).
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
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from fhir_mappings import (
    InputDocument,
    InputError,
    InputKind,
    IssueCode,
    NotFhirError,
    load_path,
    map_document,
)
from fhir_mappings.codes import code_info
from plugin.cards import cotreatment_text, other_patient_summary
from plugin.cli._app import app
from plugin.cli._inputs import (
    MaxFileSize,
    MueFiles,
    PtpFiles,
    cli_settings,
    max_file_bytes,
    rule_tables,
)
from plugin.cli._rules import PairRuleOption, PayerRuleOption
from plugin.pipeline import CheckResult, TooManyProceduresError, check_record
from plugin.rules import VisitAnalysis, analysis_to_json, billed_vs_allowed
from plugin.rules.engine import tables_used
from plugin.rules.payer import PayerChoice
from plugin.rules.progress import HISTORY_NOT_CHECKED


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class FailOn(StrEnum):
    error = "error"
    warning = "warning"


#: Severities that make ``--fail-on X`` exit 1: X and every severity worse than it.
FAIL_SEVERITIES = {FailOn.error: {"error"}, FailOn.warning: {"error", "warning"}}


_INPUT_SUFFIXES = (".json", ".ndjson", ".jsonl")


def expand_paths(paths: list[Path]) -> Iterator[tuple[Path, bool]]:
    """``(file, named)``: files as given (named), and the ``*.json`` / ``*.ndjson`` files of
    folders, sorted (a FIFO or socket of that name too: it is refused by name rather than
    skipped in silence)."""
    for path in paths:
        if path.is_dir():
            for found in sorted(
                p for p in path.rglob("*") if not p.is_dir() and p.suffix.lower() in _INPUT_SUFFIXES
            ):
                yield found, False
        else:
            yield path, True


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
    payer_rule: PayerRuleOption = None,
    pair_rule: PairRuleOption = None,
    output: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text or json."),
    strict: bool = typer.Option(
        False, "--strict", help="Also validate every resource with the full FHIR models."
    ),
    max_file_size: MaxFileSize = None,
    fail_on: FailOn | None = typer.Option(
        None,
        "--fail-on",
        help="Exit 1 when a finding of this severity or worse is found (for CI): error, or "
        "warning (warnings and errors). Exit codes: 0 analysed, 1 findings at or over "
        "--fail-on, 2 an input unreadable.",
    ),
    ptp_file: PtpFiles = None,
    mue_file: MueFiles = None,
) -> None:
    """Analyse FHIR input offline: units, the 97140/97530 pair, plan of care, findings.

    Exit codes: 0 every input analysed; 1 with --fail-on, a finding of that severity or worse;
    2 an input unreadable (one line on stderr). JSON files in folders that are not FHIR (a
    manifest) are skipped with a note."""

    defaults = cli_settings("check")  # only the rule defaults are read here
    payer = payer_rule or defaults.payer_rule
    pair = pair_rule or defaults.pair_interval_rule
    max_bytes = max_file_bytes(max_file_size, defaults)
    tables = rule_tables(ptp_file, mue_file, defaults, "check")
    results: list[tuple[Path, CheckResult]] = []
    failed = False
    files = list(expand_paths(paths))
    if not files:
        _say("no input files found in the given folders (looked for *.json and *.ndjson)")
        raise typer.Exit(2)
    for path, named in files:
        try:
            document = load_path(path, max_bytes=max_bytes)
            record = map_document(document, strict=strict)
        except NotFhirError as exc:
            if named:
                _say(str(exc))
                failed = True
            else:
                _say(f"{path}: skipped (JSON, but not FHIR data or a CDS Hooks request)")
            continue
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
            _say(f"{path}: {other_patient_summary(record.other_patient_resources)}")
        try:
            result = check_record(
                record,
                payer_rule=payer,
                pair_rule=pair,
                max_procedures_per_visit=defaults.max_procedures_per_visit,
                visit_history=has_visit_history(document),
                tables=tables,
                payer=PayerChoice(
                    mapping=defaults.payer_mapping(),
                    override="chosen with --payer-rule" if payer_rule else None,
                ),
            )
        except TooManyProceduresError as exc:
            _say(f"{path}: {exc}; check the input, or raise the limit for visits this large")
            failed = True
            continue
        results.append((path, result))
    if output is OutputFormat.json:
        merged: dict[str, list[Any]] = {"visits": [], "findings": []}
        for path, result in results:
            body = analysis_to_json(result.analysis)
            for visit in body["visits"]:
                visit["source"] = str(path)  # the file as given; the last member (issue 18)
            merged["visits"].extend(body["visits"])
            merged["findings"].extend(body["findings"])
            if result.analysis.visits and not result.analysis.visit_history:
                # the contract's document stays as it is: the note goes with the others
                _say(f"{path}: {HISTORY_NOT_CHECKED}")
        # issue 15 (added member): the NCCI PTP / MUE tables the visits used, each once
        used = tables_used([v for _, r in results for v in r.analysis.visits])
        merged["tables"] = [t.to_json() for t in used]
        sys.stdout.write(orjson.dumps(merged, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        # The terminal's width (80 when not a terminal, or $COLUMNS).
        console = Console(highlight=False)
        for path, result in results:
            _print_text(console, path, result)
    if failed:
        raise typer.Exit(2)
    if fail_on is not None and _has_severity(results, FAIL_SEVERITIES[fail_on]):
        raise typer.Exit(1)
    raise typer.Exit(0)


def has_visit_history(document: InputDocument) -> bool:
    """A bundle, resource or export is read as the patient's record of care; a CDS Hooks
    request file holds the visit history only when its prefetch carries the history key's
    resources (``plugin.services.HISTORY_KEYS``), as the service would be sent them (R-E6)."""
    if document.kind is not InputKind.CDS_HOOKS_REQUEST:
        return True
    from plugin.services import HISTORY_KEYS

    encounters = f"prefetch.{HISTORY_KEYS[0]}"  # the key of the patient's encounters
    return any(r.location.startswith(encounters) for r in document.resources)


def _has_severity(results: list[tuple[Path, CheckResult]], severities: set[str]) -> bool:
    for _, result in results:
        analysis = result.analysis
        findings = [f for visit in analysis.visits for f in visit.findings]
        findings.extend(analysis.findings)
        if any(f.severity.value in severities for f in findings):
            return True
    return False


_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _indented(console: Console, text: Text | Table) -> None:
    """Printed two columns in: lines wrapped at the terminal's width stay indented."""
    console.print(Padding(text, (0, 0, 0, 2), expand=False))


def _print_finding(console: Console, rule: str, severity: str, rest: str) -> None:
    """``rule message``, the message's wrapped lines starting under its first word."""
    line = Table.grid(padding=(0, 1))
    line.add_column(no_wrap=True)
    line.add_column(overflow="fold")
    line.add_row(Text(rule, style=_SEVERITY_STYLE[severity]), Text(rest))
    _indented(console, line)


def _code_label(code: str) -> str:
    info = code_info(code)
    if info is None:
        return code
    short = info.descriptor.split(",")[0].split("(")[0].strip()
    return f"{code} {short[:28]}"


def _signed(difference: int) -> str:
    """``+2`` over-billed, ``-1`` under-billed, ``0`` as billed."""
    return f"{difference:+d}" if difference else "0"


def _print_visit(console: Console, visit: VisitAnalysis) -> None:
    title = (
        f"{visit.patient} · {visit.date.isoformat()} · {visit.discipline.value} · "
        f"{visit.payer_rule.upper()} rule · {visit.total_timed_minutes} timed min · "
        f"{visit.units_allowed_total} unit(s) allowed"
    )
    if visit.payer_rule_reason:  # which rule and why (issue 15)
        title += f"\npayer rule: {visit.payer_rule_reason}"
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("code")
    table.add_column("documented min", justify="right")
    table.add_column("counted min", justify="right")
    table.add_column("units allowed", justify="right")
    billing = billed_vs_allowed(visit)
    by_code = {b.code: b for b in billing or ()}
    if billing is not None:
        table.add_column("billed", justify="right")
        table.add_column("over (+) / under (−)", justify="right")
    for code in sorted(set(visit.raw_minutes) | set(visit.units) | set(by_code)):
        row = [
            _code_label(code),
            str(visit.raw_minutes.get(code, 0)),
            str(visit.minutes.get(code, 0)),
            str(visit.units.get(code, 0)),
        ]
        if billing is not None:
            found = by_code.get(code)
            row += ["?", ""] if found is None else [str(found.billed), _signed(found.difference)]
        table.add_row(*row)
    console.print(table)
    if billing is None:
        _indented(console, Text("billed units: no charge line read for this visit"))
    if len(visit.allocations) > 1:
        options = " or ".join(
            ", ".join(f"{c}×{n}" for c, n in allocation.items()) for allocation in visit.allocations
        )
        _indented(console, Text(f"acceptable allocations: {options}"))
    pair = Text("97140/97530 pair: ")
    pair.append(visit.pair.status.value, style="bold")
    pair.append(cotreatment_text(visit.pair))
    _indented(console, pair)
    if visit.tables:
        _indented(console, Text("tables: " + "; ".join(t.label for t in visit.tables)))
    if not visit.findings:
        _indented(console, Text("no findings"))
    for finding in visit.findings:
        codes = f"[{', '.join(finding.codes)}] " if finding.codes else ""
        _print_finding(
            console, finding.rule.value, finding.severity.value, f"{codes}{finding.message}"
        )
    console.print()


def _print_text(console: Console, path: Path, result: CheckResult) -> None:
    console.rule(f"[bold]{path}[/bold]", align="left")
    analysis = result.analysis
    if not analysis.visits and not analysis.findings:
        _indented(console, Text("no therapy services (CPT/HCPCS Procedures) found"))
        console.print()
    for visit in analysis.visits:
        _print_visit(console, visit)
    if analysis.visits and not analysis.visit_history:
        _indented(console, Text(HISTORY_NOT_CHECKED))
        console.print()
    if analysis.findings:
        console.print("[bold]Not part of any visit[/bold]")
        for finding in analysis.findings:
            _print_finding(console, finding.rule.value, finding.severity.value, finding.message)
        console.print()
