"""NCCI PTP data: the shipped fallback table, the CMS quarterly layout, I-OTHER-PTP."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from rules_builders import CODES, only, rules_of, run, svc, visit

from plugin.rules import (
    PtpFormatError,
    analyze_visit,
    default_ptp_table,
    load_cms_ptp_file,
    load_ptp_csv,
    load_ptp_file,
)
from plugin.rules.ptp import parse_cms_ptp_text, parse_ptp_csv

CMS_SAMPLE = (
    "CPT codes, descriptions and other data only are copyright American Medical Association.\n"
    "Column 1\tColumn 2\t*=in existence prior to 1996\tEffective Date\tDeletion Date"
    "\tModifier\tPTP Edit Rationale\n"
    "\t\t\tYYYYMMDD\t*=no data\t0=not allowed\t\n"
    "97140\t97530\t\t20040101\t*\t1\tMutually exclusive procedures\n"
    "97530\t97116\t\t20201001\t*\t1\tStandards of medical / surgical practice\n"
    "97530\t97150\t*\t19960101\t20200101\t9\tMisuse of column two code\n"
)


@pytest.mark.parametrize(
    ("a", "b", "column1", "indicator", "source"),
    [
        ("97140", "97530", "97140", 1, "R-D2: 97140 column 1, 97530 column 2, indicator 1"),
        ("97530", "97140", "97140", 1, "R-D2: lookup ignores the order of the codes"),
        ("97012", "97140", "97012", 1, "R-D6 (S14): 97140 column 2 to 97012"),
        ("98941", "97140", "98941", 1, "R-D6 (S30): 97140 column 2 to CMT"),
        ("97530", "97164", "97530", 1, "R-D6 (S10b/S10c): direction UNCONFIRMED"),
    ],
)
def test_shipped_table(a: str, b: str, column1: str, indicator: int, source: str) -> None:
    edit = default_ptp_table().lookup(a, b, date(2025, 3, 4))
    assert edit is not None, source
    assert (edit.column1, edit.modifier_indicator) == (column1, indicator), source


def test_shipped_table_marks_unconfirmed_directions_and_omits_unreliable_pairs() -> None:
    table = default_ptp_table()
    assert table.version != "unversioned"
    on = date(2025, 3, 4)
    assert table.lookup("97140", "97530", on).unconfirmed is False  # type: ignore[union-attr]
    assert table.lookup("97530", "97116", on).unconfirmed is True  # type: ignore[union-attr]
    assert table.lookup("97110", "97140", on) is None, "R-D6: do not rely on 97110/97140"
    assert table.lookup("97530", "97161", on) is None, "R-D5: Jan 2020 hard edits reversed"
    assert table.lookup("97530", "97116", date(2020, 9, 30)) is None, "reinstated 2020-10-01"
    for edit in table.edits:
        assert edit.source, "every row names its source"


def test_default_table_is_loaded_once() -> None:
    assert default_ptp_table() is default_ptp_table()


def test_cms_quarterly_layout() -> None:
    table = parse_cms_ptp_text(CMS_SAMPLE, "ptp-2025q1.txt")
    assert len(table) == 3
    assert table.version == "ptp-2025q1"
    edit = table.lookup("97530", "97140", date(2025, 3, 4))
    assert edit is not None
    assert (edit.column1, edit.effective, edit.deleted) == ("97140", date(2004, 1, 1), None)
    assert edit.rationale == "Mutually exclusive procedures"
    old = table.edits[2]
    assert (old.prior_1996, old.deleted, old.modifier_indicator) == (True, date(2020, 1, 1), 9)
    assert table.lookup("97530", "97150", date(2019, 6, 1)) is None, "indicator 9 never applies"


def test_cms_file_loader_and_dispatch(tmp_path: Path) -> None:
    path = tmp_path / "PTP_practitioner_2025q1.txt"
    path.write_bytes(CMS_SAMPLE.replace("\n", "\r\n").encode("latin-1"))
    assert len(load_cms_ptp_file(path)) == 3
    assert len(load_ptp_file(path)) == 3
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text(
        "# table_version: local-1\n"
        "column_1,column_2,modifier_indicator,effective_date,deletion_date,source,status_note\n"
        "97140,97530,1,2024-01-01,,local,\n",
        encoding="utf-8",
    )
    table = load_ptp_file(csv_path)
    assert (table.version, len(table)) == ("local-1", 1)
    assert load_ptp_csv(csv_path).lookup("97140", "97530", date(2023, 12, 31)) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Column 1\tColumn 2\nnothing here\n", "no PTP edit rows"),
        ("97140\t97530\t\t20040101\t*\t7\tx\n", "modifier indicator"),
    ],
)
def test_cms_layout_errors(text: str, message: str) -> None:
    with pytest.raises(PtpFormatError, match=message):
        parse_cms_ptp_text(text, "bad.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("column_1,column_2\n97140,97530\n", "missing columns"),
        (
            "column_1,column_2,modifier_indicator,effective_date,deletion_date\n"
            "97140,97530,1,2024-13-01,\n",
            "not a YYYY-MM-DD date",
        ),
        (
            "column_1,column_2,modifier_indicator,effective_date,deletion_date\n9714,97530,1,,\n",
            "5-character codes",
        ),
    ],
)
def test_csv_layout_errors(text: str, message: str) -> None:
    with pytest.raises(PtpFormatError, match=message):
        parse_ptp_csv(text, "bad.csv")


def test_other_ptp_pair_is_informational() -> None:
    analysis = run(visit(svc("97530", 0, 15, modifiers=["59"]), svc("97116", 15, 15)))
    other = only(analysis, "I-OTHER-PTP")
    assert other.severity.value == "info"
    assert other.codes == ("97116", "97530")
    assert (other.facts.column1, other.facts.column2) == ("97530", "97116")
    assert other.facts.detail == "unconfirmed"
    assert "UNCONFIRMED" in other.message


def test_other_ptp_includes_untimed_codes_but_not_the_focus_pair() -> None:
    v = visit(svc("97164", 0, 20), svc("97140", 20, 15), svc("97530", 35, 15, modifiers=["59"]))
    analysis = run(v)
    others = [f.codes for f in analysis.findings if f.rule.value == "I-OTHER-PTP"]
    assert others == [("97140", "97164"), ("97164", "97530")]


def test_other_ptp_with_a_dropped_in_cms_table() -> None:
    table = parse_cms_ptp_text(CMS_SAMPLE, "q.txt")
    v = visit(svc("97530", 0, 15), svc("97150", 15, 15))
    assert "I-OTHER-PTP" not in rules_of(analyze_visit(v, ptp=table, codes=CODES))
