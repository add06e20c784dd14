"""``therapy-cds data``: what NCCI PTP and MUE data the rules apply, and to which dates.

Reads the files of ``--ptp-file`` / ``--mue-file`` (else ``THERAPY_CDS_PTP_FILES`` /
``THERAPY_CDS_MUE_FILES``) exactly as ``check``, ``audit`` and the service do, and prints per
file: the quarter (its first date of service and where that date came from), the dates of
service it applies to, the rows read, the effective dates of its rows and the rows that touch
the therapy code list. Exit 0, or 2 with one line on stderr when a file is unusable.
"""

from __future__ import annotations

import sys

import typer

from plugin.cli._app import app
from plugin.cli._inputs import MueFiles, PtpFiles, rule_tables


@app.command()
def data(ptp_file: PtpFiles = None, mue_file: MueFiles = None) -> None:
    """Show the NCCI PTP and MUE tables loaded: file, quarter, rows, dates, therapy rows."""
    from plugin.rules.cms_data import THERAPY_CODES, TableFile
    from plugin.settings import Settings

    tables = rule_tables(ptp_file, mue_file, Settings(dev_mode=True), "data")
    out: list[str] = []
    firsts = {tables.ptp[0].file, *(m.file for m in tables.mue[:1])}

    def show(t: TableFile) -> None:
        out.append(t.label)
        if t.builtin:
            out.append(
                f"  {t.rows} rows from the rule book (plugin/data/ncci_ptp.csv), every date of"
                " service; load the CMS quarterly file for production (--ptp-file,"
                " THERAPY_CDS_PTP_FILES)"
            )
            return
        until = tables.applies_until(t)
        out.append(f"  file: {t.path}")
        out.append(
            f"  quarter: from {t.starts} ({t.dated_by}); applies to dates of service"
            + (f" before {until}" if until else " from then on")
            + (" and any earlier date" if t in firsts else "")
        )
        dates = f"; effective dates {t.row_dates[0]} to {t.row_dates[1]}" if t.row_dates else ""
        out.append(f"  rows: {t.rows:,}{dates}")
        out.append(
            f"  rows touching the {len(THERAPY_CODES)} therapy codes: {t.therapy_rows:,}"
            f" (kept; read in {t.seconds:.2f} s)"
        )

    for loaded in tables.ptp:
        show(loaded.file)
    for mue in tables.mue:
        show(mue.file)
    if not tables.mue:
        out.append("MUE: no table loaded; E-MUE-EXCEEDED is not checked (--mue-file)")
    sys.stdout.write("\n".join(out) + "\n")
    raise typer.Exit(0)
