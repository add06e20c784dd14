"""NCCI procedure-to-procedure (PTP) edits as versioned data (R-D1, R-D2, R-D6).

Two input layouts are read:

- the project's fallback table ``plugin/data/ncci_ptp.csv`` (comma-separated: column_1,
  column_2, modifier_indicator, effective_date, deletion_date, source, status_note; ``#`` lines
  are comments, ``# key: value`` lines are metadata such as ``table_version``);
- the CMS quarterly "Practitioner PTP edits" text file (tab-separated, after some header lines:
  Column 1, Column 2, ``*`` = in existence prior to 1996, Effective Date YYYYMMDD, Deletion Date
  YYYYMMDD or ``*``, Modifier 0/1/9, PTP Edit Rationale), so a user can drop in the current
  quarter.

An edit is in effect on a date of service from its effective date (unknown = always) up to,
not including, its deletion date, unless its modifier indicator is 9 (R-D1). The column order
of a pair is taken from the table, never from code.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

_CODE = re.compile(r"^[0-9A-Z]{5}$")
_YYYYMMDD = re.compile(r"^\d{8}$")


class PtpFormatError(ValueError):
    """A PTP file could not be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class PtpEdit:
    """One PTP edit row: column 1 is payable, column 2 is denied unless a modifier bypasses."""

    column1: str
    column2: str
    modifier_indicator: int  # 0, 1 or 9 (R-D1)
    effective: date | None  # None: not known, treated as in effect
    deleted: date | None = None
    source: str = ""
    note: str = ""
    prior_1996: bool = False
    rationale: str = ""

    def in_effect(self, on: date) -> bool:
        """True when the edit applies to a date of service ``on`` (indicator 9 never does)."""
        if self.modifier_indicator == 9:
            return False
        if self.effective is not None and on < self.effective:
            return False
        return self.deleted is None or on < self.deleted

    @property
    def modifier_allowed(self) -> bool:
        """Indicator 1: an NCCI-associated modifier may bypass the edit (R-D1)."""
        return self.modifier_indicator == 1

    @property
    def unconfirmed(self) -> bool:
        """The rule book marks this pair, or its column order, UNCONFIRMED."""
        return "direction UNCONFIRMED" in self.note or "pair UNCONFIRMED" in self.note


@dataclass(frozen=True, slots=True)
class PtpTable:
    """A set of PTP edits with its version and origin; lookups ignore the order of codes."""

    edits: tuple[PtpEdit, ...]
    version: str
    origin: str
    _index: Mapping[frozenset[str], tuple[PtpEdit, ...]] = field(
        init=False, repr=False, compare=False
    )
    _partners: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[frozenset[str], list[PtpEdit]] = {}
        for e in self.edits:
            index.setdefault(frozenset({e.column1, e.column2}), []).append(e)
        frozen = {
            k: tuple(sorted(v, key=lambda e: e.effective or date.min, reverse=True))
            for k, v in index.items()
        }
        object.__setattr__(self, "_index", MappingProxyType(frozen))
        # every code an edit pairs with each code, so edits_among visits only real pairs
        partners: dict[str, set[str]] = {}
        for key in frozen:
            for code in key:
                partners.setdefault(code, set()).update(key - {code})
        object.__setattr__(
            self, "_partners", MappingProxyType({c: frozenset(p) for c, p in partners.items()})
        )

    def __reduce__(self) -> tuple[type[PtpTable], tuple[tuple[PtpEdit, ...], str, str]]:
        """Pickled as its edits (the indexes are rebuilt): audit workers receive the table."""
        return (PtpTable, (self.edits, self.version, self.origin))

    def lookup(self, code_a: str, code_b: str, on: date) -> PtpEdit | None:
        """The edit between two codes in effect on ``on`` (latest effective first), if any."""
        for e in self._index.get(frozenset({code_a, code_b}), ()):
            if e.in_effect(on):
                return e
        return None

    def edits_among(self, codes: Iterable[str], on: date) -> tuple[PtpEdit, ...]:
        """Every edit in effect on ``on`` between two of ``codes``, ordered by columns."""
        unique = set(codes)
        found = []
        for a in unique:
            for b in self._partners.get(a, ()):
                # each unordered pair once (a < b); pairs the table has no edit for are skipped
                if a < b and b in unique:
                    e = self.lookup(a, b, on)
                    if e is not None:
                        found.append(e)
        return tuple(sorted(found, key=lambda e: (e.column1, e.column2)))

    def __len__(self) -> int:
        return len(self.edits)


def _iso_date(text: str, where: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise PtpFormatError(f"{where}: {text!r} is not a YYYY-MM-DD date") from exc


def parse_ptp_csv(text: str, origin: str) -> PtpTable:
    """Parse the project's CSV layout (see the module docstring)."""
    meta: dict[str, str] = {}
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep and key.strip() and " " not in key.strip():
                meta[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
    reader = csv.DictReader(io.StringIO("\n".join(body)))
    required = {"column_1", "column_2", "modifier_indicator", "effective_date", "deletion_date"}
    missing = required - set(reader.fieldnames or ())
    if missing:
        raise PtpFormatError(f"{origin}: missing columns {', '.join(sorted(missing))}")
    edits = []
    for n, row in enumerate(reader, start=2):
        where = f"{origin} row {n}"
        col1, col2 = row["column_1"].strip().upper(), row["column_2"].strip().upper()
        indicator = row["modifier_indicator"].strip()
        if not (_CODE.match(col1) and _CODE.match(col2)) or indicator not in {"0", "1", "9"}:
            raise PtpFormatError(f"{where}: expected two 5-character codes and indicator 0/1/9")
        edits.append(
            PtpEdit(
                column1=col1,
                column2=col2,
                modifier_indicator=int(indicator),
                effective=_iso_date(row["effective_date"], where),
                deleted=_iso_date(row["deletion_date"], where),
                source=(row.get("source") or "").strip(),
                note=(row.get("status_note") or "").strip(),
            )
        )
    return PtpTable(tuple(edits), version=meta.get("table_version", "unversioned"), origin=origin)


def _yyyymmdd(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


def parse_cms_ptp_text(text: str, origin: str, version: str | None = None) -> PtpTable:
    """Parse a CMS quarterly "Practitioner PTP edits" tab-separated text file.

    Header lines (title, copyright, column headings) are skipped: a data line is one whose
    first two fields are 5-character codes and whose effective date is YYYYMMDD. A file with
    no data line is rejected.
    """
    edits = []
    for n, line in enumerate(text.splitlines(), start=1):
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 6:
            continue
        col1, col2, prior, effective, deletion, indicator = (f.upper() for f in fields[:6])
        if not (_CODE.match(col1) and _CODE.match(col2) and _YYYYMMDD.match(effective)):
            continue
        if indicator not in {"0", "1", "9"} or not (
            deletion in {"*", ""} or _YYYYMMDD.match(deletion)
        ):
            raise PtpFormatError(f"{origin} line {n}: bad deletion date or modifier indicator")
        edits.append(
            PtpEdit(
                column1=col1,
                column2=col2,
                modifier_indicator=int(indicator),
                effective=_yyyymmdd(effective),
                deleted=None if deletion in {"*", ""} else _yyyymmdd(deletion),
                source="CMS NCCI practitioner PTP edits",
                prior_1996=prior == "*",
                rationale=fields[6] if len(fields) > 6 else "",
            )
        )
    if not edits:
        raise PtpFormatError(f"{origin}: no PTP edit rows found (expected tab-separated rows)")
    return PtpTable(tuple(edits), version=version or Path(origin).stem, origin=origin)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def load_ptp_csv(path: Path) -> PtpTable:
    """Load a table in the project's CSV layout."""
    return parse_ptp_csv(_read_text(path), path.name)


def load_cms_ptp_file(path: Path, version: str | None = None) -> PtpTable:
    """Load a CMS quarterly practitioner PTP text file (version defaults to the file name)."""
    return parse_cms_ptp_text(_read_text(path), path.name, version)


def load_ptp_file(path: Path) -> PtpTable:
    """Load either layout: ``.csv`` is the project's layout, anything else the CMS layout."""
    if path.suffix.lower() == ".csv":
        return load_ptp_csv(path)
    return load_cms_ptp_file(path)


@cache
def default_ptp_table() -> PtpTable:
    """The fallback table shipped in ``plugin/data/ncci_ptp.csv``, loaded once."""
    text = resources.files("plugin").joinpath("data", "ncci_ptp.csv").read_text("utf-8")
    return parse_ptp_csv(text, "ncci_ptp.csv")
