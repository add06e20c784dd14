"""FHIR is read and written in fhir_mappings only, and fhir_mappings knows nothing above it.

fhir_mappings turns FHIR into the domain model and writes suggestions' changes back as FHIR; it
imports neither the protocol layer nor the billing rules or cards. The cards say what to change
(fhir_mappings.writeback.ChargeChange) and name no FHIR member themselves.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: ServiceRequest members and FHIR datatype members a suggestion's write-back touches (not words
#: like "code" or "units", which the cards use in the domain's sense).
FHIR_MEMBERS = frozenset(
    {
        "resourceType",
        "coding",
        "concept",
        "orderDetail",
        "parameter",
        "valueCodeableConcept",
        "valueString",
        "valueCoding",
        "extension",
        "quantityQuantity",
    }
)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            found.add(node.module)
    return found


def test_fhir_mappings_imports_nothing_above_it() -> None:
    modules = sorted((ROOT / "fhir_mappings").rglob("*.py"))
    assert modules
    above = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in modules
        for name in _imports(path)
        if name.split(".")[0] in ("plugin", "cds_hooks", "bench")
    }
    assert not above


def _strings(path: Path) -> set[str]:
    """The string literals of a module other than its docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    }


def test_the_cards_name_no_fhir_member() -> None:
    assert not _strings(ROOT / "plugin" / "cards.py") & FHIR_MEMBERS
    assert {"orderDetail", "valueCodeableConcept"} <= _strings(
        ROOT / "fhir_mappings" / "writeback.py"
    ) | _strings(ROOT / "fhir_mappings" / "orders.py"), "the write-back does name them"
