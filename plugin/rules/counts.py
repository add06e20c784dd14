"""A read-only, hashable, code-sorted mapping from code to a count (units or minutes).

Allocations and minutes per code travel inside frozen dataclasses (findings, visit results);
this keeps those values hashable and their iteration order deterministic (sorted by code).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar, overload

T = TypeVar("T")


class CodeCounts(Mapping[str, int]):
    """``{code: count}`` sorted by code; immutable and hashable."""

    __slots__ = ("_data",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        source = counts if counts is not None else {}
        self._data: dict[str, int] = {code: source[code] for code in sorted(source)}

    @classmethod
    def from_sorted(cls, counts: dict[str, int]) -> CodeCounts:
        """Wrap ``counts``, whose keys are already sorted, without copying or sorting again.

        For the rules' own freshly built dicts only: the caller hands ``counts`` over and never
        changes it afterwards.
        """
        made = cls.__new__(cls)
        made._data = counts
        return made

    def __getitem__(self, code: str) -> int:
        return self._data[code]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    # Direct dict look-ups: the generic Mapping versions go through __getitem__ and exceptions,
    # and the rules call these in their inner loops.
    @overload
    def get(self, code: str, /) -> int | None: ...
    @overload
    def get(self, code: str, default: int | T, /) -> int | T: ...
    def get(self, code: str, default: object = None, /) -> object:
        return self._data.get(code, default)

    def __contains__(self, code: object) -> bool:
        return code in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"CodeCounts({self._data!r})"
