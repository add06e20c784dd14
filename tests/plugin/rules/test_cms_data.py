"""CMS quarterly data loaded by the user (issue 15): PTP and MUE layouts, quarters by date of
service, refusals with line numbers, E-MUE-EXCEEDED per line and per date of service.

Every file here is built by the test in the CMS layouts; the codes are real, the values are
test values, not rows of a CMS table.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import IO, Any

import pytest
from rules_builders import CODES, charge, only, rules_of, svc, visit

from fhir_mappings.model import Discipline
from plugin.rules import analyze_visit
from plugin.rules.cms_data import (
    BUILTIN_LABEL,
    CmsFileError,
    RuleTables,
    active_tables,
    builtin_tables,
    load_tables,
    read_mue_file,
    read_ptp_file,
)

COPYRIGHT = (
    "CPT codes, descriptions and other data only are copyright American Medical Association."
)
PTP_HEAD = (
    "Column 1\tColumn 2\t*=in existence prior to 1996\tEffective Date\tDeletion Date"
    "\tModifier\tPTP Edit Rationale"
)
PTP_ROWS = [
    ["97140", "97530", "", "20040101", "*", "1", "Mutually exclusive procedures"],
    ["97530", "97116", "", "20201001", "*", "1", "Standards of medical, surgical practice"],
    ["97530", "97150", "*", "19960101", "20200101", "9", "Misuse of column two code"],
    ["29881", "29880", "*", "19960101", "*", "1", "Not a therapy pair"],
]
MUE_HEAD = (
    "HCPCS/CPT Code,Practitioner Services MUE Values,MUE Adjudication Indicator,MUE Rationale"
)


def ptp_text(rows: list[list[str]] = PTP_ROWS) -> str:
    return "\n".join([COPYRIGHT, PTP_HEAD, *("\t".join(r) for r in rows)]) + "\n"


def ptp_csv(rows: list[list[str]] = PTP_ROWS) -> str:
    """The spreadsheet saved as CSV: quoted headings over two lines, quoted rationale."""
    head = '"Column 1","Column 2","*=in existence prior to 1996","Effective Date",'
    head += '"Deletion Date\n*=no data","Modifier\n0=not allowed\n1=allowed\n9=not applicable",'
    head += '"PTP Edit Rationale"'
    body = [",".join([*r[:6], f'"{r[6]}"']) for r in rows]
    return "\n".join([f'"{COPYRIGHT}"', head, *body]) + "\r\n"


def mue_csv(*rows: str) -> str:
    return "\n".join([f'"{COPYRIGHT}"', MUE_HEAD, *rows]) + "\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("layout", ["tab", "csv"])
def test_ptp_layouts_read_the_same_edits(tmp_path: Path, layout: str) -> None:
    text = ptp_text() if layout == "tab" else ptp_csv()
    loaded = read_ptp_file(write(tmp_path, f"ptp-2026-01-01.{layout}", text))
    assert loaded.file.rows == 4
    assert loaded.file.therapy_rows == 3, "29881/29880 touches no therapy code: not kept"
    assert loaded.file.row_dates == (date(1996, 1, 1), date(2020, 10, 1))
    assert (loaded.file.starts, loaded.file.dated_by) == (date(2026, 1, 1), "file name")
    edit = loaded.table.lookup("97530", "97140", date(2026, 2, 1))
    assert edit is not None
    assert (edit.column1, edit.modifier_indicator, edit.rationale) == (
        "97140",
        1,
        "Mutually exclusive procedures",
    )
    assert loaded.table.lookup("97530", "97150", date(2019, 1, 1)) is None, "indicator 9"


def test_mue_layouts_and_indicators(tmp_path: Path) -> None:
    csv_rows = (
        '97110,4,"1 Line Edit",Clinical: Data',
        '97530,3,"2 Date of Service Edit: Policy","CMS Policy"',
        '97140,2,"3 Date of Service Edit: Clinical",Clinical: Data',
        '27447,1,"2 Date of Service Edit: Policy",Anatomic Consideration',
    )
    table = read_mue_file(write(tmp_path, "mue.csv", mue_csv(*csv_rows)) + "@2026-01-01")
    assert (table.file.rows, table.file.therapy_rows, table.file.dated_by) == (4, 3, "given")
    assert [(e.code, e.value, e.indicator, e.per_line) for e in table.edits.values()] == [
        ("97110", 4, 1, True),
        ("97140", 2, 3, False),
        ("97530", 3, 2, False),
    ]
    tab = "\n".join(r.replace('"', "").replace(",", "\t", 3) for r in csv_rows)
    same = read_mue_file(write(tmp_path, "MUE_practitioner_2026q1.txt", MUE_HEAD + "\n" + tab))
    assert same.edits == table.edits
    assert (same.file.starts, same.file.dated_by) == (date(2026, 1, 1), "file name")


def test_mue_date_from_header(tmp_path: Path) -> None:
    text = "Practitioner Services MUE Table - Effective 04/01/2026\n" + mue_csv(
        '97110,4,"1 Line Edit",x'
    )
    table = read_mue_file(write(tmp_path, "mue.csv", text))
    assert (table.file.starts, table.file.dated_by) == (date(2026, 4, 1), "header")


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (ptp_text() + "97140\t975", 7, "2 field(s)"),  # truncated mid-row
        (ptp_text([*PTP_ROWS[:2], ["97140", "97110", "", "2004011", "*", "1", ""]]), 5, "YYYYMMDD"),
        (ptp_text([["97140", "97530", "", "20040101", "*", "2", ""]]), 3, "0, 1 or 9"),
        (ptp_text([["97140", "97530", "", "20041301", "*", "1", ""]]), 3, "does not exist"),
        (ptp_text() + "end of file\n", 7, "1 field(s)"),
        (ptp_text() + "9714\t97530\t\t20040101\t*\t1\tx\n", 7, "not two 5-character"),
    ],
)
def test_bad_ptp_file_is_refused_with_its_line(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = write(tmp_path, "ptp.txt", text)
    with pytest.raises(CmsFileError) as caught:
        load_tables([path])
    message = str(caught.value)
    assert f"{path} line {line}: " in message
    assert reason in message, message
    assert "not loaded" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (COPYRIGHT + "\n" + PTP_HEAD + "\n", "no PTP edit line found"),
        ("", "no PTP edit line found"),
    ],
)
def test_ptp_file_without_rows_is_refused(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(CmsFileError, match=needle):
        read_ptp_file(write(tmp_path, "ptp.txt", text))


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        (('97110,four,"1 Line Edit",x',), 3, "not a whole number"),
        (('97110,4,"4 Something",x',), 3, "not 1, 2 or 3"),
        (('97110,4,"1 Line Edit",x', "97110,4"), 4, "2 field(s)"),
        (('97110,4,"1 Line Edit",x', '97110,3,"1 Line Edit",x'), 4, "listed twice"),
    ],
)
def test_bad_mue_file_is_refused_with_its_line(
    tmp_path: Path, rows: tuple[str, ...], line: int, reason: str
) -> None:
    path = write(tmp_path, "mue-2026-01-01.csv", mue_csv(*rows))
    with pytest.raises(CmsFileError) as caught:
        load_tables(mue_files=[path])
    assert f"line {line}: " in str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("name", "text", "read"),
    [
        ("ptp.txt", ptp_text() + "end of file\n", read_ptp_file),
        ("mue-2026-01-01.csv", mue_csv('97110,four,"1 Line Edit",x'), read_mue_file),
    ],
)
def test_a_refused_file_is_closed_when_the_error_is_raised(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    text: str,
    read: Callable[[str], object],
) -> None:
    """Not left open until the garbage collector finds the reader (a ResourceWarning then)."""
    handles: list[IO[str]] = []
    real_open = Path.open

    def recording_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        handles.append(handle)
        return handle

    monkeypatch.setattr(Path, "open", recording_open)
    with pytest.raises(CmsFileError) as caught:
        read(write(tmp_path, name, text))
    assert handles
    assert all(handle.closed for handle in handles)
    del caught


def test_mue_file_without_a_date_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "mue.csv", mue_csv('97110,4,"1 Line Edit",x'))
    with pytest.raises(CmsFileError, match=r"@YYYY-MM-DD"):
        read_mue_file(path)


def test_missing_file_and_two_files_of_one_quarter(tmp_path: Path) -> None:
    with pytest.raises(CmsFileError, match="cannot be read"):
        load_tables([str(tmp_path / "nowhere.txt")])
    a = write(tmp_path, "a.csv", mue_csv('97110,4,"1 Line Edit",x'))
    b = write(tmp_path, "b.csv", mue_csv('97110,4,"1 Line Edit",x'))
    with pytest.raises(CmsFileError, match="one MUE file per quarter"):
        load_tables(mue_files=[f"{a}@2026-01-01", f"{b}@2026-01-01"])


# ----------------------------------------------------------------- quarters by date of service


def test_quarters_apply_by_date_of_service(tmp_path: Path) -> None:
    q1 = write(tmp_path, "mue_2026-01-01.csv", mue_csv('97110,4,"1 Line Edit",x'))
    q2 = write(tmp_path, "mue_2026-04-01.csv", mue_csv('97110,2,"1 Line Edit",x'))
    tables = load_tables(mue_files=[q2, q1])  # any order
    v_q1 = visit(svc("97110", 0, 45), charges=[charge("97110", 3)], on=date(2026, 3, 31))
    v_q2 = visit(svc("97110", 0, 45), charges=[charge("97110", 3)], on=date(2026, 4, 1))
    first = analyze_visit(v_q1, codes=CODES, tables=tables)
    second = analyze_visit(v_q2, codes=CODES, tables=tables)
    assert "E-MUE-EXCEEDED" not in rules_of(first), "3 units, Q1 MUE 4"
    assert only(second, "E-MUE-EXCEEDED").facts.units_allowed == 2
    assert [t.name for t in first.tables] == [builtin_tables().ptp[0].file.name, q1.split("/")[-1]]
    assert second.tables[-1].name == "mue_2026-04-01.csv"
    early = analyze_visit(
        visit(svc("97110", 0, 45), charges=[charge("97110", 3)], on=date(2025, 6, 1)),
        codes=CODES,
        tables=tables,
    )
    assert early.tables[-1].name == "mue_2026-01-01.csv", "before the first: the earliest"
    assert tables.applies_until(tables.mue[0].file) == date(2026, 4, 1)


def test_ptp_quarters_and_row_dates(tmp_path: Path) -> None:
    q1 = write(tmp_path, "ptp.txt", ptp_text([PTP_ROWS[0]]))
    q2 = write(
        tmp_path,
        "ptp2.txt",
        ptp_text([["97140", "97530", "", "20040101", "20260401", "1", "x"]]),
    )
    tables = load_tables([f"{q1}@2026-01-01", f"{q2}@2026-04-01"])
    assert tables.ptp_for(date(2026, 3, 1)).file.name == "ptp.txt"
    assert tables.ptp_for(date(2026, 5, 1)).table.lookup("97140", "97530", date(2026, 5, 1)) is None
    v = visit(
        svc("97140", 0, 15),
        svc("97530", 15, 23),
        charges=[charge("97140", 1), charge("97530", 2)],
        on=date(2026, 5, 1),
    )
    assert "E-PAIR-NO-MODIFIER" not in rules_of(analyze_visit(v, codes=CODES, tables=tables))


def test_ptp_date_from_rows_and_builtin_label(tmp_path: Path) -> None:
    loaded = read_ptp_file(write(tmp_path, "ccipra-v321r0-f1.txt", ptp_text()))
    assert (loaded.file.starts, loaded.file.dated_by) == (date(2020, 10, 1), "rows")
    builtin = builtin_tables().ptp[0].file
    assert builtin.builtin
    assert BUILTIN_LABEL in builtin.label
    assert active_tables() is builtin_tables()


def test_tables_survive_pickling_for_audit_workers(tmp_path: Path) -> None:
    mue = write(tmp_path, "mue_2026-01-01.csv", mue_csv('97110,4,"1 Line Edit",x'))
    tables = load_tables([write(tmp_path, "p.txt", ptp_text())], [mue])
    copy = pickle.loads(pickle.dumps(tables))
    assert copy.mue[0].edits == tables.mue[0].edits
    assert copy.ptp[0].table.lookup("97140", "97530", date(2026, 1, 2)) is not None


# ------------------------------------------------------------------------- E-MUE-EXCEEDED


def _mue(tmp_path: Path, row: str) -> RuleTables:
    return load_tables(mue_files=[write(tmp_path, "mue_2025-01-01.csv", mue_csv(row))])


def test_no_mue_table_no_finding() -> None:
    v = visit(svc("97110", 0, 90), charges=[charge("97110", 6)])
    assert "E-MUE-EXCEEDED" not in rules_of(analyze_visit(v, codes=CODES))


def test_line_edit_compares_each_line_and_suggests_the_value(tmp_path: Path) -> None:
    tables = _mue(tmp_path, '97110,2,"1 Line Edit",x')
    lines = [charge("97110", 2, ref="ServiceRequest/a"), charge("97110", 3, ref="ServiceRequest/b")]
    v = visit(svc("97110", 0, 75), charges=lines)
    finding = only(analyze_visit(v, codes=CODES, tables=tables), "E-MUE-EXCEEDED")
    assert finding.resources == ("ServiceRequest/b",), "only the line over the value"
    assert (finding.facts.units_billed, finding.facts.units_allowed) == (3, 2)
    assert [(f.charge_refs, f.set_units) for f in finding.fixes] == [(("ServiceRequest/b",), 2)]
    assert "per line" in finding.message
    assert "mue_2025-01-01.csv" in finding.message


def test_date_of_service_edit_sums_the_days_lines_without_a_fix(tmp_path: Path) -> None:
    tables = _mue(tmp_path, '97110,4,"3 Date of Service Edit: Clinical",x')
    lines = [charge("97110", 2, ref="ServiceRequest/a"), charge("97110", 3, ref="ServiceRequest/b")]
    v = visit(svc("97110", 0, 75), charges=lines)
    finding = only(analyze_visit(v, codes=CODES, tables=tables), "E-MUE-EXCEEDED")
    assert (finding.facts.units_billed, finding.facts.units_allowed) == (5, 4)
    assert finding.fixes == ()
    assert finding.resources == ("ServiceRequest/a", "ServiceRequest/b")
    # each line alone is within 4: as a line edit, no finding
    per_line = _mue(tmp_path, '97110,4,"1 Line Edit",x')
    assert "E-MUE-EXCEEDED" not in rules_of(analyze_visit(v, codes=CODES, tables=per_line))


def test_date_of_service_edit_counts_the_other_disciplines_lines(tmp_path: Path) -> None:
    tables = _mue(tmp_path, '97110,4,"2 Date of Service Edit: Policy",x')
    pt = visit(svc("97110", 0, 45), charges=[charge("97110", 3, ref="ServiceRequest/pt")])
    ot = visit(
        svc("97110", 60, 30, ref="Procedure/ot"),
        charges=[charge("97110", 2, ref="ServiceRequest/ot")],
        discipline=Discipline.OT,
    )
    alone = analyze_visit(pt, codes=CODES, tables=tables)
    assert "E-MUE-EXCEEDED" not in rules_of(alone)
    both = analyze_visit(pt, codes=CODES, tables=tables, same_day=[ot])
    finding = only(both, "E-MUE-EXCEEDED")
    assert finding.facts.units_billed == 5
    assert "(3 on this visit)" in finding.message
    assert "CMS pays no higher value" in finding.message


def test_cancelled_lines_do_not_count(tmp_path: Path) -> None:
    tables = _mue(tmp_path, '97110,2,"1 Line Edit",x')
    v = visit(svc("97110", 0, 75), charges=[charge("97110", 5, status="revoked")])
    assert "E-MUE-EXCEEDED" not in rules_of(analyze_visit(v, codes=CODES, tables=tables))
