"""``therapy-cds feedback``: what clinicians did with the cards, per finding and ISO week.

Reads the service's database (``--database-url``, else ``THERAPY_CDS_DATABASE_URL``): cards
shown, accepted, overridden, the override rate and the override reasons, the most overridden
findings first (see :mod:`plugin.feedback_report`; ``/rules/feedback`` shows the same).

Exit codes: 0 the report was printed, 1 nothing recorded yet (since ``--since``), 2 the
database cannot be read or an argument is wrong -- one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING

import orjson
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from plugin.cli._app import app

if TYPE_CHECKING:
    from plugin.feedback_report import FeedbackReport


class ReportFormat(StrEnum):
    text = "text"
    json = "json"
    csv = "csv"


def _say(message: str) -> None:
    sys.stderr.write(f"therapy-cds feedback: {message}\n")


def _parse_since(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date; write it as YYYY-MM-DD") from None


def _printable(value: str) -> str:
    """Reason codes come from the EHR: no control characters reach the terminal."""
    return "".join(ch if ch.isprintable() else "?" for ch in value)


def _text_table(report: FeedbackReport) -> Table:
    from plugin.feedback_report import rate_text, reason_label, week_rows

    since = f" since {report.since_week}" if report.since_week else ""
    table = Table(
        title=f"Cards shown and what clinicians did with them{since}",
        caption="Rate: overridden / (accepted + overridden). Most overridden findings first.",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("Finding / week", no_wrap=True)
    for name in ("Shown", "Accepted", "Overridden", "Rate"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Override reasons", overflow="fold")
    rows = list(week_rows(report))
    for index, (item, week, counts) in enumerate(rows):
        style = "bold" if week is None else ""
        last = index + 1 == len(rows) or rows[index + 1][1] is None
        reasons = "\n".join(
            f"{number} {_printable(reason_label(reason))}"
            for reason, number in counts.sorted_reasons()
        )
        table.add_row(
            Text(_printable(item.finding) if week is None else f"  {week}", style=style),
            Text(str(counts.shown), style=style),
            Text(str(counts.accepted), style=style),
            Text(str(counts.overridden), style=style),
            Text(rate_text(counts.override_rate), style=style),
            Text(reasons, style=style),
            end_section=last,
        )
    return table


@app.command()
def feedback(
    since: str | None = typer.Option(
        None,
        "--since",
        metavar="YYYY-MM-DD",
        help="Only the ISO weeks from the one holding this date on.",
    ),
    output_format: ReportFormat = typer.Option(
        ReportFormat.text, "--format", help="text (a table), json, or csv (one row per week)."
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        metavar="URL",
        help="The service's database; default THERAPY_CDS_DATABASE_URL.",
    ),
) -> None:
    """Per finding and ISO week: cards shown, accepted, overridden, override rate and reasons."""
    from pydantic import ValidationError

    from plugin.feedback_report import (
        FeedbackReportError,
        load_report,
        open_database,
        report_csv,
        report_json,
    )
    from plugin.settings import Settings

    since_day = _parse_since(since)
    if database_url is None:
        try:
            database_url = Settings(dev_mode=True).database_url
        except ValidationError as exc:
            where = ", ".join(
                "THERAPY_CDS_" + str(error["loc"][0]).upper() for error in exc.errors()
            )
            _say(f"the settings are not valid ({where}); fix them or give --database-url")
            raise typer.Exit(2) from None
    try:
        engine = open_database(database_url)
        try:
            report = load_report(engine, since_day)
        finally:
            engine.dispose()
    except FeedbackReportError as exc:
        _say(str(exc))
        raise typer.Exit(2) from None
    if report.empty:
        when = f" since {report.since_week} ({since_day})" if since_day else ""
        _say(
            f"no cards shown or feedback recorded{when} yet: the service counts cards as it "
            "answers and writes them every THERAPY_CDS_FEEDBACK_FLUSH_SECONDS"
        )
        raise typer.Exit(1)
    if output_format is ReportFormat.json:
        sys.stdout.write(orjson.dumps(report_json(report), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    elif output_format is ReportFormat.csv:
        sys.stdout.write(report_csv(report))
    else:
        Console(highlight=False).print(_text_table(report))
    raise typer.Exit(0)
