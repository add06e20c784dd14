"""CMS quarterly NCCI data loaded by the user: Practitioner PTP edit files and the Practitioner
MUE table, several quarters at once, each applied by date of service (issue 15).

Layouts read (``docs/sources.md``, "CMS data files"):

- **PTP** (Practitioner PTP edits, published quarterly as tab-delimited text and as a
  spreadsheet; the spreadsheet saved as CSV is read too): some header lines (copyright, column
  headings), then one edit per line -- Column 1, Column 2, ``*`` = in existence prior to 1996,
  Effective Date ``YYYYMMDD``, Deletion Date ``YYYYMMDD`` or ``*``, Modifier 0/1/9, PTP Edit
  Rationale.
- **MUE** (Practitioner Services MUE table, CSV or tab-delimited): header lines, then one code
  per line -- HCPCS/CPT Code, Practitioner Services MUE Value, MUE Adjudication Indicator
  (``1 Line Edit``, ``2 Date of Service Edit: Policy``, ``3 Date of Service Edit: Clinical``),
  MUE Rationale.

Header lines are the lines before the first data line; from the first data line on, every
non-blank line must be a data line, so a malformed or truncated file is refused with its line
number and reason (:class:`CmsFileError`), never half-loaded. Files are streamed line by line;
only rows that touch a code of the therapy code list (``fhir_mappings/codes.py``) are kept, so a
quarterly file of ~2 million PTP rows costs a few thousand kept rows of memory.

Which quarter applies to a date of service: every file has a first date -- ``path@YYYY-MM-DD``
when given, else a date in the file name (``2026-01-01``, ``20260101``, ``01-01-2026``,
``2026q1``), else one in its header lines, else (PTP) the latest effective date of its rows.
A file applies from its first date up to the next file's; dates of service before the earliest
file use the earliest. PTP rows then also apply by their own effective and deletion dates.
Without a PTP file the built-in rule-book excerpt (``plugin/data/ncci_ptp.csv``) is used and
labelled as such; without an MUE file, E-MUE-EXCEEDED is not checked (no invented values).
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import itertools
import re
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from fhir_mappings.codes import CODE_LIST
from plugin.rules.ptp import PtpEdit, PtpTable, default_ptp_table

TableKind = Literal["ptp", "mue"]

BUILTIN_LABEL = "built-in rule-book excerpt, not a CMS table"
"""How the shipped fallback PTP table is named wherever a table is named."""

_CODE = re.compile(r"^[0-9A-Z]{5}$")
_YYYYMMDD = re.compile(r"^\d{8}$")
_SPEC_DATE = re.compile(r"^(?P<path>.+)@(?P<date>\d{4}-\d{2}-\d{2})$")
_NAME_DATES = (
    (re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"), "ymd"),
    (re.compile(r"(?<!\d)(\d{2})[-_](\d{2})[-_](\d{4})(?!\d)"), "mdy"),
    (re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})(?!\d)"), "ymd"),
    (re.compile(r"(?<!\d)(20\d{2})[-_ ]?q([1-4])(?![0-9])", re.IGNORECASE), "yq"),
)
_HEADER_DATE = re.compile(r"(?<!\d)(\d{1,2})/(\d{1,2})/(\d{4})(?!\d)")
_HEADER_LINES_SEARCHED = 20
_MUE_INDICATORS = {"1": 1, "2": 2, "3": 3}

#: The codes a kept row must touch: the therapy code list.
THERAPY_CODES: frozenset[str] = frozenset(CODE_LIST.codes)


class CmsFileError(ValueError):
    """A CMS data file cannot be used: one line naming the file, the line and the reason."""


@dataclass(frozen=True, slots=True)
class MueEdit:
    """One MUE row: at most ``value`` units of ``code`` per line (indicator 1) or per date of
    service (indicators 2 and 3)."""

    code: str
    value: int
    indicator: int  # MUE Adjudication Indicator: 1 line, 2 DOS policy, 3 DOS clinical
    rationale: str = ""

    @property
    def per_line(self) -> bool:
        """Indicator 1: each claim line is compared with the value."""
        return self.indicator == 1


@dataclass(frozen=True, slots=True)
class TableFile:
    """One loaded file (or the built-in table) as ``therapy-cds data`` shows it."""

    kind: TableKind
    name: str  # the file name (no folder), or the built-in table's version
    path: str  # as given ("" for the built-in table)
    starts: date | None  # first date of service it applies to (None: the built-in table)
    dated_by: str  # where ``starts`` came from: "given", "file name", "header", "rows", ""
    rows: int  # data rows read
    therapy_rows: int  # rows kept: they touch a code of the therapy code list
    row_dates: tuple[date, date] | None  # earliest and latest effective date in the rows (PTP)
    seconds: float = 0.0
    builtin: bool = False

    @property
    def label(self) -> str:
        """How cards, ``check`` and reports name the table."""
        if self.builtin:
            return f"NCCI PTP {self.name} ({BUILTIN_LABEL})"
        kind = "NCCI PTP" if self.kind == "ptp" else "MUE"
        return f"CMS {kind} {self.name} (from {self.starts.isoformat() if self.starts else '?'})"

    def to_json(self) -> dict[str, object]:
        """The member of ``check``'s ``tables`` list for this table."""
        return {
            "kind": self.kind,
            "name": self.name,
            "from": self.starts.isoformat() if self.starts else None,
            "cms": not self.builtin,
            "label": self.label,
        }


@dataclass(frozen=True, slots=True)
class MueTable:
    """The kept MUE rows of one file, by code."""

    file: TableFile
    edits: Mapping[str, MueEdit]

    def __reduce__(self) -> tuple[type[MueTable], tuple[TableFile, dict[str, MueEdit]]]:
        """Pickled with a plain dict (audit workers receive the table)."""
        return (MueTable, (self.file, dict(self.edits)))

    def get(self, code: str) -> MueEdit | None:
        """The MUE of ``code``, if the table has one."""
        return self.edits.get(code)


@dataclass(frozen=True, slots=True)
class LoadedPtp:
    """The kept PTP rows of one file."""

    file: TableFile
    table: PtpTable


@dataclass(frozen=True, slots=True)
class RuleTables:
    """Every loaded table, each applied by date of service (see the module docstring)."""

    ptp: tuple[LoadedPtp, ...]  # sorted by first date; never empty (built-in fallback)
    mue: tuple[MueTable, ...] = ()  # sorted by first date; empty: no MUE check
    _ptp_starts: tuple[date, ...] = field(init=False, repr=False, compare=False)
    _mue_starts: tuple[date, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ptp_starts", tuple(p.file.starts or date.min for p in self.ptp))
        object.__setattr__(self, "_mue_starts", tuple(m.file.starts or date.min for m in self.mue))

    @property
    def files(self) -> tuple[TableFile, ...]:
        """Every table, PTP first, each kind in date order."""
        return (*(p.file for p in self.ptp), *(m.file for m in self.mue))

    def ptp_for(self, on: date) -> LoadedPtp:
        """The PTP table applied to a date of service ``on``."""
        return self.ptp[max(bisect.bisect_right(self._ptp_starts, on) - 1, 0)]

    def mue_for(self, on: date) -> MueTable | None:
        """The MUE table applied to ``on``; None when no MUE file is loaded."""
        if not self.mue:
            return None
        return self.mue[max(bisect.bisect_right(self._mue_starts, on) - 1, 0)]

    def applies_until(self, table: TableFile) -> date | None:
        """The first date of the next file of the same kind (exclusive end), None if last."""
        files = [p.file for p in self.ptp] if table.kind == "ptp" else [m.file for m in self.mue]
        index = files.index(table)
        return files[index + 1].starts if index + 1 < len(files) else None


# ------------------------------------------------------------------------------- reading


def _split_spec(spec: str) -> tuple[Path, date | None]:
    """``path`` or ``path@YYYY-MM-DD``."""
    spec = spec.strip()
    found = _SPEC_DATE.match(spec)
    if found is None:
        return Path(spec), None
    try:
        return Path(found["path"]), date.fromisoformat(found["date"])
    except ValueError:
        raise CmsFileError(
            f"{spec}: {found['date']!r} is not a date (use path@YYYY-MM-DD)"
        ) from None


def _date_in_name(name: str) -> date | None:
    for pattern, order in _NAME_DATES:
        m = pattern.search(name)
        if m is None:
            continue
        try:
            if order == "ymd":
                return date(int(m[1]), int(m[2]), int(m[3]))
            if order == "mdy":
                return date(int(m[3]), int(m[1]), int(m[2]))
            return date(int(m[1]), 3 * (int(m[2]) - 1) + 1, 1)
        except ValueError:
            continue
    return None


def _date_in_header(lines: Sequence[str]) -> date | None:
    for line in lines[:_HEADER_LINES_SEARCHED]:
        if "effective" not in line.lower():
            continue
        m = _HEADER_DATE.search(line)
        if m is not None:
            try:
                return date(int(m[3]), int(m[1]), int(m[2]))
            except ValueError:
                continue
    return None


def _lines(path: Path) -> Generator[str, None, None]:
    """The file's lines without line ends, read as Latin-1 (every byte is a character, so no
    line fails to decode; the codes, dates and indicators are ASCII either way -- kept
    rationales are re-read as UTF-8 by :func:`_text`)."""
    try:
        handle = path.open(encoding="latin-1")
    except OSError as exc:
        raise CmsFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with handle:
        for n, line in enumerate(handle):
            line = line.rstrip("\r\n")
            yield line.removeprefix("\xef\xbb\xbf") if n == 0 else line


def _text(latin1: str) -> str:
    """A field read as Latin-1, as the UTF-8 it most likely was."""
    try:
        return latin1.encode("latin-1").decode("utf-8").strip()
    except UnicodeDecodeError:
        return latin1.strip()


def _rows(
    path: Path, is_data: re.Pattern[str]
) -> Generator[tuple[int, list[str] | str], None, None]:
    """``(line number, fields)`` of the data lines, ``(n, header line)`` before the first.

    The delimiter (tab, else comma) is taken from the first data line and then required of
    every line; comma-separated lines are read as CSV (quoted fields may hold commas)."""
    delimiter: str | None = None
    with contextlib.closing(_lines(path)) as lines:  # the file closed when this is closed
        for n, line in enumerate(lines, start=1):
            if delimiter is None:
                if not is_data.match(line):
                    yield n, line
                    continue
                delimiter = "\t" if "\t" in line else ","
            if line.strip():
                yield n, [f.strip() for f in _split(path, n, line, delimiter)]
    if delimiter is None:
        yield 0, []


#: A data line starts with a 5-character code holding a digit (every CPT and HCPCS code does;
#: a heading word does not), quoted or not, then a tab or a comma.
_DATA_START = re.compile(r'^"?(?=[0-9A-Za-z]{0,4}\d)[0-9A-Za-z]{5}"?[\t,]')

#: A well-formed tab-delimited PTP line, up to its modifier indicator (one match, no groups):
#: code, code, prior-1996 flag, effective date (a real month and day), deletion date or "*",
#: indicator 0/1/9.
_PTP_TAB = re.compile(
    r"[0-9A-Z]{5}\t[0-9A-Z]{5}\t\*?\t\d{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r"\t(?:\d{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])|\*?)\t[019](?:\t|$)"
)


def _fail(path: Path, n: int, reason: str) -> CmsFileError:
    return CmsFileError(f"{path} line {n}: {reason}; the file was not loaded")


def _ptp_fields(path: Path, n: int, fields: list[str]) -> tuple[str, str, str, str, str, str]:
    """A PTP line's first six fields, checked one by one; the first problem is raised."""
    if len(fields) < 6:
        raise _fail(path, n, f"{len(fields)} field(s), a PTP edit has at least 6 (truncated?)")
    col1, col2, prior, effective, deletion, indicator = (f.strip().upper() for f in fields[:6])
    if not (_CODE.match(col1) and _CODE.match(col2)):
        raise _fail(path, n, f"{col1!r}/{col2!r} are not two 5-character HCPCS/CPT codes")
    if prior not in ("", "*"):
        raise _fail(path, n, f"prior-1996 flag {prior!r} is neither '*' nor empty")
    if not _YYYYMMDD.match(effective):
        raise _fail(path, n, f"effective date {effective!r} is not YYYYMMDD")
    if not (deletion in ("*", "") or _YYYYMMDD.match(deletion)):
        raise _fail(path, n, f"deletion date {deletion!r} is not YYYYMMDD or '*'")
    if indicator not in ("0", "1", "9"):
        raise _fail(path, n, f"modifier indicator {indicator!r} is not 0, 1 or 9")
    try:
        _yyyymmdd(effective)
        if deletion not in ("*", ""):
            _yyyymmdd(deletion)
    except ValueError:
        raise _fail(path, n, "a date that does not exist") from None
    return col1, col2, prior, effective, deletion, indicator


def _split(path: Path, n: int, line: str, delimiter: str) -> list[str]:
    if delimiter == "\t":
        return line.split("\t")
    try:
        return next(csv.reader([line], strict=True))
    except csv.Error:
        raise _fail(path, n, "a quoted field is not closed (truncated?)") from None


def read_ptp_file(spec: str, codes: frozenset[str] = THERAPY_CODES) -> LoadedPtp:
    """Stream a CMS Practitioner PTP file (tab-delimited or the spreadsheet's CSV), keeping the
    rows that touch ``codes``. Raises :class:`CmsFileError` on the first bad line.

    A well-formed tab-delimited line is recognised by one regular expression and only the
    lines that touch ``codes`` are split (a quarterly file has ~2 million lines); any other
    line is checked field by field, which names what is wrong."""
    started = time.perf_counter()
    path, given = _split_spec(spec)
    header: list[str] = []
    kept: list[PtpEdit] = []
    rows = 0
    low = high = ""
    with contextlib.closing(_lines(path)) as source:  # closed however reading ends
        lines: Iterator[tuple[int, str]] = enumerate(source, start=1)
        delimiter = ""
        for n, line in lines:
            if _DATA_START.match(line):
                delimiter = "\t" if "\t" in line else ","
                lines = itertools.chain([(n, line)], lines)
                break
            header.append(line)
        if not delimiter:
            raise CmsFileError(
                f"{path}: no PTP edit line found (expected lines of Column 1, Column 2, *,"
                " Effective Date, Deletion Date, Modifier, Rationale); the file was not loaded"
            )
        quick = _PTP_TAB.match if delimiter == "\t" else None
        for n, line in lines:
            if quick is not None and quick(line):
                # the effective date follows the flag field, empty or "*"
                effective = line[13:21] if line[12] == "\t" else line[14:22]
                col1, col2 = line[:5], line[6:11]
            elif not line.strip():
                continue
            else:
                fields = _split(path, n, line, delimiter)
                col1, col2, _, effective, _, _ = _ptp_fields(path, n, fields)
            rows += 1
            if not low or effective < low:
                low = effective
            if effective > high:
                high = effective
            if col1 in codes or col2 in codes:
                fields = _split(path, n, line, delimiter)
                col1, col2, prior, effective, deletion, indicator = _ptp_fields(path, n, fields)
                why = fields[6] if len(fields) > 6 else ""
                kept.append(
                    _ptp_edit(path, n, col1, col2, prior, effective, deletion, indicator, why)
                )
        try:
            first = _yyyymmdd(low) if low else None
            last = _yyyymmdd(high) if high else None
        except ValueError:
            raise CmsFileError(
                f"{path}: an effective date that does not exist ({low} or {high}); the file was"
                " not loaded"
            ) from None
        starts_on, dated_by = _first_date(path, given, header)
        if starts_on is None and last is not None:
            starts_on, dated_by = last, "rows"
        file = TableFile(
            kind="ptp",
            name=path.name,
            path=str(path),
            starts=starts_on,
            dated_by=dated_by,
            rows=rows,
            therapy_rows=len(kept),
            row_dates=(first, last) if first is not None and last is not None else None,
            seconds=time.perf_counter() - started,
        )
        return LoadedPtp(file, PtpTable(tuple(kept), version=path.name, origin=str(path)))


def read_mue_file(spec: str, codes: frozenset[str] = THERAPY_CODES) -> MueTable:
    """Stream a CMS Practitioner Services MUE table (CSV or tab-delimited), keeping the rows of
    ``codes``. Raises :class:`CmsFileError` on the first bad line, or when no first date of
    service can be found for the file (then name it ``path@YYYY-MM-DD``)."""
    started = time.perf_counter()
    path, given = _split_spec(spec)
    header: list[str] = []
    kept: dict[str, MueEdit] = {}
    rows = 0
    with contextlib.closing(_rows(path, _DATA_START)) as read:
        for n, fields in read:
            if isinstance(fields, str):
                header.append(fields)
                continue
            if n == 0:
                raise CmsFileError(
                    f"{path}: no MUE line found (expected lines of HCPCS/CPT Code, MUE Value, MUE"
                    " Adjudication Indicator, MUE Rationale); the file was not loaded"
                )
            if len(fields) < 3:
                raise _fail(
                    path, n, f"{len(fields)} field(s), an MUE row has at least 3 (truncated?)"
                )
            code, value, indicator = fields[0].upper(), fields[1], fields[2]
            if not _CODE.match(code):
                raise _fail(path, n, f"{code!r} is not a 5-character HCPCS/CPT code")
            if not value.isdigit():
                raise _fail(path, n, f"MUE value {value!r} is not a whole number")
            mai = _MUE_INDICATORS.get(indicator[:1])
            if mai is None or (len(indicator) > 1 and indicator[1] not in " -"):
                raise _fail(path, n, f"MUE adjudication indicator {indicator!r} is not 1, 2 or 3")
            rows += 1
            if code in codes:
                if code in kept:
                    raise _fail(path, n, f"{code} is listed twice")
                kept[code] = MueEdit(
                    code, int(value), mai, _text(fields[3]) if len(fields) > 3 else ""
                )
    starts_on, dated_by = _first_date(path, given, header)
    if starts_on is None:
        raise CmsFileError(
            f"{path}: no effective date in the file name or header; name the file as"
            f" {path}@YYYY-MM-DD (the quarter's first date of service); the file was not loaded"
        )
    file = TableFile(
        kind="mue",
        name=path.name,
        path=str(path),
        starts=starts_on,
        dated_by=dated_by,
        rows=rows,
        therapy_rows=len(kept),
        row_dates=None,
        seconds=time.perf_counter() - started,
    )
    return MueTable(file, MappingProxyType(dict(sorted(kept.items()))))


def _ptp_edit(
    path: Path,
    n: int,
    col1: str,
    col2: str,
    prior: str,
    effective: str,
    deletion: str,
    indicator: str,
    rationale: str | None,
) -> PtpEdit:
    """A kept PTP row (its fields already checked), dates parsed."""
    try:
        starts = _yyyymmdd(effective)
        ends = None if deletion in ("*", "") else _yyyymmdd(deletion)
    except ValueError:
        raise _fail(path, n, "a date that does not exist") from None
    return PtpEdit(
        column1=col1,
        column2=col2,
        modifier_indicator=int(indicator),
        effective=starts,
        deleted=ends,
        source="CMS NCCI practitioner PTP edits",
        prior_1996=prior == "*",
        rationale=_text(rationale or ""),
    )


def _yyyymmdd(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _first_date(path: Path, given: date | None, header: Sequence[str]) -> tuple[date | None, str]:
    if given is not None:
        return given, "given"
    named = _date_in_name(path.name)
    if named is not None:
        return named, "file name"
    in_header = _date_in_header(header)
    if in_header is not None:
        return in_header, "header"
    return None, ""


def _builtin() -> LoadedPtp:
    table = default_ptp_table()
    return LoadedPtp(
        TableFile(
            kind="ptp",
            name=table.version,
            path="",
            starts=None,
            dated_by="",
            rows=len(table),
            therapy_rows=len(table),
            row_dates=None,
            builtin=True,
        ),
        table,
    )


def _ordered(files: list[TableFile], kind: str) -> None:
    seen: dict[date | None, str] = {}
    for f in files:
        if f.starts in seen:
            raise CmsFileError(
                f"{f.path}: applies from {f.starts}, as does {seen[f.starts]}; load one {kind}"
                " file per quarter (or date one with path@YYYY-MM-DD)"
            )
        seen[f.starts] = f.path


def load_tables(ptp_files: Iterable[str] = (), mue_files: Iterable[str] = ()) -> RuleTables:
    """Read every file (see the module docstring); without PTP files, the built-in table.
    Raises :class:`CmsFileError` naming the first unusable file and line."""
    ptp = [read_ptp_file(spec) for spec in ptp_files]
    mue = [read_mue_file(spec) for spec in mue_files]
    ptp.sort(key=lambda p: p.file.starts or date.min)
    mue.sort(key=lambda m: m.file.starts or date.min)
    _ordered([p.file for p in ptp], "PTP")
    _ordered([m.file for m in mue], "MUE")
    return RuleTables(ptp=tuple(ptp) or (_builtin(),), mue=tuple(mue))


@lru_cache(maxsize=4)
def _cached(ptp_files: tuple[str, ...], mue_files: tuple[str, ...], stamp: object) -> RuleTables:
    return load_tables(ptp_files, mue_files)


def _stamp(specs: Iterable[str]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for spec in specs:
        path, _ = _split_spec(spec)
        try:
            st = path.stat()
        except OSError:
            out.append((spec, -1, -1))
        else:
            out.append((spec, st.st_mtime_ns, st.st_size))
    return tuple(out)


def tables_from(ptp_files: Sequence[str], mue_files: Sequence[str]) -> RuleTables:
    """:func:`load_tables`, read once per process for the same unchanged files (the service's
    start-up check and its app factory, audit workers)."""
    if not ptp_files and not mue_files:
        return builtin_tables()  # one object for "no CMS file", whoever asks
    return _cached(tuple(ptp_files), tuple(mue_files), _stamp([*ptp_files, *mue_files]))


# ------------------------------------------------------------------------- active tables

_ACTIVE: list[RuleTables] = []


def builtin_tables() -> RuleTables:
    """The tables without any file: the built-in PTP excerpt, no MUE table."""
    return _builtin_tables()


@lru_cache(maxsize=1)
def _builtin_tables() -> RuleTables:
    return RuleTables(ptp=(_builtin(),))


def use_tables(tables: RuleTables | None) -> None:
    """Make ``tables`` the process's tables (None: back to the built-in ones). Called once at
    start-up by the service, ``check``, ``audit`` and each audit worker, so every entry point
    of a process applies the same data."""
    _ACTIVE[:] = [tables] if tables is not None else []


def active_tables() -> RuleTables:
    """The process's tables (:func:`use_tables`), by default :func:`builtin_tables`."""
    return _ACTIVE[0] if _ACTIVE else builtin_tables()
