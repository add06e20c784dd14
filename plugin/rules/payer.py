"""Which unit rule a visit is billed under, and why: the payer rule from Coverage (issue 15).

Per visit (one patient and date of service), in this order:

1. an **override** applies to every visit: the request extension ``payerRule``, ``check
   --payer-rule``, a rule chosen in the SMART app or the sandbox;
2. else the patient's **Coverage for the date of service**: ``status`` active, the visit's
   patient as beneficiary (or none named), ``period`` covering the date (an open end covers
   everything on its side). Of several, the lowest ``order`` (1 = primary; a Coverage without
   ``order`` comes after those with one); on a tie the first in the input (the FHIR search's
   order) is used and the reason says so. That Coverage is matched against the payer mapping
   (:class:`PayerMapping`, ``THERAPY_CDS_PAYER_RULES_FILE`` or the shipped
   ``plugin/data/payer_rules.toml``): the first entry that matches gives the rule;
3. else the **configured default** (``THERAPY_CDS_PAYER_RULE``), with the reason: no Coverage
   read, the Coverage search failed, no active Coverage on the date, or a Coverage the mapping
   does not know.

The reason is plain text (it may hold a payer name from FHIR: whoever renders it as Markdown
or HTML escapes it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from fhir_mappings.model import CoverageInfo
from plugin.rules.vocabulary import PayerRule, VocabularyError, parse

#: Most entries, and matchers per entry, a payer mapping file may hold.
MAX_ENTRIES = 500
MAX_MATCHERS = 500
_SHIPPED = Path(__file__).resolve().parents[1] / "data" / "payer_rules.toml"
_MATCHERS = ("types", "identifiers", "references", "names")


class PayerMappingError(ValueError):
    """A payer mapping file that cannot be used; the message names the file, entry and fix."""


@dataclass(frozen=True, slots=True)
class PayerEntry:
    label: str
    rule: PayerRule
    types: frozenset[str] = frozenset()  # "system|code"
    type_prefixes: tuple[tuple[str, str], ...] = ()  # ("system", "code prefix")
    identifiers: frozenset[str] = frozenset()  # "system|value"
    references: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()  # casefolded

    def matches(self, coverage: CoverageInfo) -> bool:
        for system, code, _ in coverage.types:
            if f"{system}|{code}" in self.types:
                return True
            if any(system == s and code.startswith(p) for s, p in self.type_prefixes):
                return True
        for party in coverage.payers:
            if party.reference is not None and party.reference in self.references:
                return True
            if any(i in self.identifiers for i in party.identifiers):
                return True
            if any(n.casefold() in self.names for n in party.names):
                return True
        return False


@dataclass(frozen=True, slots=True)
class PayerMapping:
    """Payer identifiers and Coverage types -> ``cms`` or ``ama``; ``source`` says from where."""

    entries: tuple[PayerEntry, ...]
    source: str

    def rule_for(self, coverage: CoverageInfo) -> PayerEntry | None:
        return next((e for e in self.entries if e.matches(coverage)), None)


def _strings(value: object, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PayerMappingError(f"{where}: '{key}' must be a list of non-empty strings")
    if len(value) > MAX_MATCHERS:
        raise PayerMappingError(f"{where}: '{key}' has more than {MAX_MATCHERS} items")
    return [v.strip() for v in value]


def _pair(text: str, where: str, key: str) -> tuple[str, str]:
    system, bar, code = text.partition("|")
    if not bar or not code:
        raise PayerMappingError(f"{where}: '{key}' item {text!r} must be written 'system|code'")
    return system, code


def _entry(raw: object, where: str) -> PayerEntry:
    if not isinstance(raw, dict):
        raise PayerMappingError(f"{where} must be a table")
    unknown = sorted(set(raw) - {"label", "rule", *_MATCHERS})
    if unknown:
        raise PayerMappingError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected label, rule and"
            " types / identifiers / references / names"
        )
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip() or len(label) > 80:
        raise PayerMappingError(f"{where}: 'label' must be text of 1 to 80 characters")
    try:
        rule = parse(PayerRule, raw.get("rule"), f"{where}: 'rule'")
    except VocabularyError as exc:
        raise PayerMappingError(str(exc)) from None
    if not any(k in raw for k in _MATCHERS):
        raise PayerMappingError(
            f"{where}: give at least one of types, identifiers, references, names"
        )
    types: set[str] = set()
    prefixes: list[tuple[str, str]] = []
    for text in _strings(raw.get("types", []), where, "types"):
        system, code = _pair(text, where, "types")
        if code.endswith("*"):
            if len(code) == 1:
                raise PayerMappingError(f"{where}: 'types' item {text!r} needs a code before '*'")
            prefixes.append((system, code[:-1]))
        else:
            types.add(f"{system}|{code}")
    identifiers = set()
    for text in _strings(raw.get("identifiers", []), where, "identifiers"):
        _pair(text, where, "identifiers")
        identifiers.add(text)
    return PayerEntry(
        label=label.strip(),
        rule=rule,
        types=frozenset(types),
        type_prefixes=tuple(prefixes),
        identifiers=frozenset(identifiers),
        references=frozenset(_strings(raw.get("references", []), where, "references")),
        names=frozenset(n.casefold() for n in _strings(raw.get("names", []), where, "names")),
    )


def parse_payer_mapping(text: str, source: str) -> PayerMapping:
    """A payer mapping from TOML text; :class:`PayerMappingError` naming ``source`` and where."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PayerMappingError(f"{source}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"payer"})
    if unknown:
        raise PayerMappingError(
            f"{source}: unknown top-level key(s) {', '.join(unknown)}; write [[payer]] tables"
        )
    raw = data.get("payer", [])
    if not isinstance(raw, list):
        raise PayerMappingError(f"{source}: 'payer' must be an array of tables ([[payer]])")
    if len(raw) > MAX_ENTRIES:
        raise PayerMappingError(f"{source}: more than {MAX_ENTRIES} [[payer]] entries")
    entries = tuple(_entry(item, f"{source}, [[payer]] #{n}") for n, item in enumerate(raw, 1))
    return PayerMapping(entries=entries, source=source)


def load_payer_mapping(path: Path) -> PayerMapping:
    """Read and validate a payer mapping file (THERAPY_CDS_PAYER_RULES_FILE)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PayerMappingError(
            f"{path}: cannot be read as UTF-8 text ({type(exc).__name__})"
        ) from None
    return parse_payer_mapping(text, str(path))


@cache
def shipped_payer_mapping() -> PayerMapping:
    """The mapping shipped in ``plugin/data/payer_rules.toml`` (Medicare -> cms)."""
    return parse_payer_mapping(_SHIPPED.read_text(encoding="utf-8"), "shipped payer mapping")


@dataclass(frozen=True, slots=True)
class PayerDecision:
    """The rule one visit is billed under and the one-line reason, e.g. "Medicare Part B
    coverage → CMS 8-minute rule"."""

    rule: PayerRule
    reason: str


@dataclass(frozen=True, slots=True)
class PayerChoice:
    """How the visits of one input get their payer rule (see the module doc).

    ``default``: the configured rule; ``override``: when set, why ``default`` applies to every
    visit whatever the Coverage ("request extension", "--payer-rule"); ``unread``: when set,
    why no Coverage could be read (then ``default`` applies and the reason says so);
    ``mapping``: ``None`` for the shipped one."""

    default: PayerRule = PayerRule.CMS
    mapping: PayerMapping | None = None
    override: str | None = None
    unread: str | None = None

    def decide(self, coverages: Sequence[CoverageInfo], patient: str, day: date) -> PayerDecision:
        rule_text = PayerRule(self.default).label
        if self.override is not None:
            return PayerDecision(self.default, f"{self.override} → {rule_text}")
        fallback = f"default {rule_text}"
        if self.unread is not None:
            return PayerDecision(self.default, f"{self.unread} → {fallback}")
        candidates = covering(coverages, patient, day)
        if not candidates:
            return PayerDecision(
                self.default, f"no active coverage on {day.isoformat()} → {fallback}"
            )
        chosen = candidates[0]
        tie = len(candidates) > 1 and _order(candidates[1]) == _order(chosen)
        note = " (several coverages of the same order: the first listed)" if tie else ""
        entry = (self.mapping or shipped_payer_mapping()).rule_for(chosen)
        if entry is None:
            return PayerDecision(
                self.default,
                f"{_described(chosen)} coverage not in the payer mapping{note} → {fallback}",
            )
        return PayerDecision(entry.rule, f"{entry.label} coverage{note} → {entry.rule.label}")

    def decide_all(
        self, coverages: Sequence[CoverageInfo], visits: Iterable[tuple[str, date]]
    ) -> dict[tuple[str, date], PayerDecision]:
        """:meth:`decide` for each (patient, date of service)."""
        return {key: self.decide(coverages, *key) for key in visits}


def _order(coverage: CoverageInfo) -> tuple[int, int]:
    return (0, coverage.order) if coverage.order is not None else (1, 0)


def covering(coverages: Sequence[CoverageInfo], patient: str, day: date) -> list[CoverageInfo]:
    """The active Coverages of ``patient`` whose period covers ``day``, primary first (lowest
    ``order``; input order among equals: ``sorted`` is stable)."""
    found = [
        c
        for c in coverages
        if c.status == "active"
        and (c.patient is None or c.patient == patient)
        and (c.start is None or c.start <= day)
        and (c.end is None or day <= c.end)
    ]
    return sorted(found, key=_order)


def _described(coverage: CoverageInfo) -> str:
    """A short name for a Coverage no mapping entry matched: a payer name or a type display."""
    for party in coverage.payers:
        if party.names:
            return party.names[0]
    for system, code, display in coverage.types:
        return display or f"{system}|{code}"
    return "the patient's"


__all__ = [
    "PayerChoice",
    "PayerDecision",
    "PayerEntry",
    "PayerMapping",
    "PayerMappingError",
    "covering",
    "load_payer_mapping",
    "parse_payer_mapping",
    "shipped_payer_mapping",
]
