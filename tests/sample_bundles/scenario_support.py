"""Shared helpers for the sample-bundle tests: the manifest, the pipeline, the README table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "sample_bundles"
MANIFEST = BUNDLES / "scenarios.json"
README = BUNDLES / "README.md"
TABLE_BEGIN = "<!-- scenarios:begin -->"
TABLE_END = "<!-- scenarios:end -->"

VISIT_KEYS = (
    "patient",
    "date",
    "discipline",
    "total_timed_minutes",
    "units",
    "allocations",
    "pair",
    "findings",
)


@cache
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return data


def scenarios() -> list[dict[str, Any]]:
    return list(manifest()["scenarios"])


def bundle(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BUNDLES / name).read_text(encoding="utf-8"))
    return data


def cases() -> list[tuple[str, str]]:
    """(file, payer rule) for every expectation in the manifest."""
    return [(s["file"], rule) for s in scenarios() for rule in s["expected"]]


def _allocation_key(allocation: Mapping[str, int]) -> str:
    return json.dumps(dict(allocation), sort_keys=True)


def reduce_check_json(document: Mapping[str, Any]) -> dict[str, Any]:
    """The ``check --format json`` document reduced to what the manifest pins down.

    Findings become the sorted set of rule ids; allocations become a sorted list (order free).
    """
    visits = []
    for visit in document["visits"]:
        reduced = {key: visit[key] for key in VISIT_KEYS}
        reduced["findings"] = sorted({f["rule"] for f in visit["findings"]})
        reduced["allocations"] = sorted(_allocation_key(a) for a in visit["allocations"])
        visits.append(reduced)
    return {"visits": visits, "findings": sorted({f["rule"] for f in document["findings"]})}


def reduce_expected(expected: Mapping[str, Any]) -> dict[str, Any]:
    visits = []
    for visit in expected["visits"]:
        reduced = {key: visit[key] for key in VISIT_KEYS}
        reduced["findings"] = sorted(visit["findings"])
        reduced["allocations"] = sorted(_allocation_key(a) for a in visit["allocations"])
        visits.append(reduced)
    return {"visits": visits, "findings": sorted(expected["findings"])}


# ---- README table (generated from the manifest; the test asserts README and manifest agree)


def _units_text(units: Mapping[str, int]) -> str:
    return ", ".join(f"{code} × {n}" for code, n in sorted(units.items())) or "no timed units"


def cards_text(result: Mapping[str, Any]) -> str:
    """What a scenario's result shows: the errors and warnings (on the problem cards of the
    default card policy, findings of one cause sharing a card), then what the visit summary
    card (card policy ``summary``) says."""
    parts: list[str] = []
    for visit in result["visits"]:
        rules: list[str] = visit["findings"]
        errors = [r for r in rules if r.startswith("E-")]
        warnings = [r for r in rules if r.startswith("W-")]
        infos = [r for r in rules if r.startswith("I-")]
        if errors:
            parts.append("critical " + ", ".join(errors))
        if warnings:
            parts.append("warning " + ", ".join(warnings))
        summary = _units_text(visit["units"])
        if infos:
            summary += "; " + ", ".join(infos)
        parts.append(f"summary ({summary})")
    if result["findings"]:
        parts.append("not tied to a visit: " + ", ".join(result["findings"]))
    return "; ".join(parts)


def _budget_text(budget: Mapping[str, int]) -> str:
    count = budget["count"]
    return "no card" if count == 0 else f"{count} card{'s' if count > 1 else ''}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def readme_table(items: Iterable[Mapping[str, Any]]) -> str:
    lines = [
        "| scenario | what it shows | hook | pair | cards to expect |",
        "|---|---|---|---|---|",
    ]
    for s in items:
        expected = s["expected"]
        main = expected[s["payer_rule"]]
        pair = ", ".join(v["pair"] for v in main["visits"])
        cards = f"**{_budget_text(s['cards'])}** by default. {cards_text(main)}"
        for rule, other in expected.items():
            if rule != s["payer_rule"]:
                cards += f". With `--payer-rule {rule}`: {cards_text(other)}"
        lines.append(
            f"| [{s['file']}]({s['file']}) | **{_cell(s['title'])}.** {_cell(s['shows'])} "
            f"| `{s['hook']}` | {pair} | {_cell(cards)} |"
        )
    return "\n".join(lines)


def readme_with_table(readme: str, table: str) -> str:
    head, _, rest = readme.partition(TABLE_BEGIN)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}"


if (
    __name__ == "__main__"
):  # refresh the README table: python tests/sample_bundles/scenario_support.py
    README.write_text(
        readme_with_table(README.read_text(encoding="utf-8"), readme_table(scenarios()))
    )
