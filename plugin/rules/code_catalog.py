"""The seam to the timed / one-on-one code lists (R-A4, R-F3).

The rules ask two questions about a CPT/HCPCS code: is it a 15-minute timed code (its minutes
enter the unit math) and is it one-on-one or constant attendance (its minutes may not overlap
another such code's, and group delivery of it is not billable as that code; R-F2..R-F4). The
lists are versioned data owned by ``fhir_mappings.codes``; the rules depend on this protocol so
tests, or a caller with its own lists, can pass a :class:`StaticCodeCatalog`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from fhir_mappings import codes as therapy_codes


class CodeCatalog(Protocol):
    """What the rules ask about a code."""

    def is_timed(self, code: str) -> bool:
        """A 15-minute timed code (R-A4): its minutes enter the unit math."""
        ...

    def is_one_on_one(self, code: str) -> bool:
        """Direct one-on-one or constant-attendance code (R-F3): may not overlap another."""
        ...


@dataclass(frozen=True, slots=True)
class StaticCodeCatalog:
    """A catalog from explicit code sets."""

    timed: frozenset[str]
    one_on_one: frozenset[str]

    @classmethod
    def of(cls, timed: Iterable[str], one_on_one: Iterable[str]) -> StaticCodeCatalog:
        return cls(frozenset(timed), frozenset(one_on_one))

    def is_timed(self, code: str) -> bool:
        return code in self.timed

    def is_one_on_one(self, code: str) -> bool:
        return code in self.one_on_one


class TherapyCodeCatalog:
    """The project's code list (``fhir_mappings/data/therapy_codes.json``)."""

    def is_timed(self, code: str) -> bool:
        return therapy_codes.is_timed(code)

    def is_one_on_one(self, code: str) -> bool:
        return therapy_codes.is_one_on_one(code)


_DEFAULT = TherapyCodeCatalog()
# A code that is not a row of the list is neither timed nor one-on-one, so the answers for the
# list's own rows are every answer; read once at import (the list is loaded once, at import).
_DEFAULT_TIMED = frozenset(c for c in therapy_codes.CODE_LIST.codes if therapy_codes.is_timed(c))
_DEFAULT_ONE_ON_ONE = frozenset(
    c for c in therapy_codes.CODE_LIST.codes if therapy_codes.is_one_on_one(c)
)


def classify(catalog: CodeCatalog, codes: Collection[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(timed, one-on-one): the members of ``codes`` the catalog answers yes for.

    One question per code and catalog, asked once per visit instead of once per use; the
    project's list and a :class:`StaticCodeCatalog` answer with set intersections.
    """
    if type(catalog) is TherapyCodeCatalog:  # not a subclass: it may answer differently
        return _DEFAULT_TIMED.intersection(codes), _DEFAULT_ONE_ON_ONE.intersection(codes)
    if type(catalog) is StaticCodeCatalog:
        return catalog.timed.intersection(codes), catalog.one_on_one.intersection(codes)
    return (
        frozenset(c for c in codes if catalog.is_timed(c)),
        frozenset(c for c in codes if catalog.is_one_on_one(c)),
    )


def default_code_catalog() -> CodeCatalog:
    """The project's code list (``fhir_mappings.codes``)."""
    return _DEFAULT
