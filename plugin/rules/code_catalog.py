"""The seam to the timed / one-on-one code lists (R-A4, R-F3).

The rules need two questions answered about a CPT/HCPCS code: is it a 15-minute timed code
(enters the unit math) and is it one-on-one or constant attendance (its minutes may not overlap
another such code's, R-F3/R-F4). The lists themselves are versioned data owned by
``fhir_mappings.codes``; the rules depend only on this protocol, so tests can pass a
:class:`StaticCodeCatalog` and the default resolves ``fhir_mappings.codes`` lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, cast


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
    """A catalog from explicit code sets (tests, or a caller with its own lists)."""

    timed: frozenset[str]
    one_on_one: frozenset[str]

    @classmethod
    def of(cls, timed: Iterable[str], one_on_one: Iterable[str]) -> StaticCodeCatalog:
        return cls(frozenset(timed), frozenset(one_on_one))

    def is_timed(self, code: str) -> bool:
        return code in self.timed

    def is_one_on_one(self, code: str) -> bool:
        return code in self.one_on_one


class ModuleCodeCatalog:
    """Delegates to the module-level ``is_timed`` / ``is_one_on_one`` of a module (lazy import)."""

    def __init__(self, module_name: str = "fhir_mappings.codes") -> None:
        self._module_name = module_name

    def _function(self, name: str) -> Callable[[str], bool]:
        try:
            module = importlib.import_module(self._module_name)
        except ImportError as exc:  # pragma: no cover - only before the code lists exist
            raise RuntimeError(
                f"code lists unavailable: cannot import {self._module_name}; "
                "pass an explicit CodeCatalog"
            ) from exc
        return cast(Callable[[str], bool], getattr(module, name))

    def is_timed(self, code: str) -> bool:
        return self._function("is_timed")(code)

    def is_one_on_one(self, code: str) -> bool:
        return self._function("is_one_on_one")(code)


def default_code_catalog() -> CodeCatalog:
    """The project's code lists (``fhir_mappings.codes``), imported on first use."""
    return ModuleCodeCatalog()
