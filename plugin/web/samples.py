"""The sample scenario bundles (``sample_bundles/scenarios.json``) as the pages list them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from plugin.rules.vocabulary import PairRule, PayerRule

logger = logging.getLogger(__name__)

MANIFEST = "scenarios.json"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One sample bundle and what the manifest says it raises."""

    file: str
    title: str
    shows: str
    hook: str
    fhir_version: str
    payer_rule: str
    pair_rule: str
    # payer rule -> every finding id expected (visits and top level)
    expected_rules: Mapping[str, tuple[str, ...]]

    def rules(self) -> tuple[str, ...]:
        """Every finding id the scenario raises under any payer rule it is tested with."""
        return tuple(sorted({r for rules in self.expected_rules.values() for r in rules}))


def _expected_rules(expected: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for payer, result in expected.items():
        rules = {str(r) for visit in result.get("visits", ()) for r in visit.get("findings", ())}
        rules |= {str(r) for r in result.get("findings", ())}
        found[str(payer)] = tuple(sorted(rules))
    return found


@cache
def _load(directory: Path) -> tuple[Scenario, ...]:
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning(
            "sample bundles unavailable: no readable %s in the configured folder", MANIFEST
        )
        return ()
    scenarios = []
    for item in data.get("scenarios", ()):
        scenarios.append(
            Scenario(
                file=str(item["file"]),
                title=str(item.get("title", item["file"])),
                shows=str(item.get("shows", "")),
                hook=str(item.get("hook", "order-sign")),
                fhir_version=str(item.get("fhir_version", "R4")),
                payer_rule=str(item.get("payer_rule", PayerRule.CMS.value)),
                pair_rule=str(item.get("pair_rule", PairRule.CMS.value)),
                expected_rules=_expected_rules(item.get("expected", {})),
            )
        )
    return tuple(scenarios)


def scenarios(directory: Path) -> Sequence[Scenario]:
    """The manifest's scenarios, in its order (empty when the folder is not there)."""
    return _load(directory.resolve())


def scenario_bundle(directory: Path, file: str) -> dict[str, Any] | None:
    """The bundle of the scenario named ``file``; only names listed in the manifest are read,
    so no path from a request ever reaches the file system."""
    for scenario in scenarios(directory):
        if scenario.file == file:
            data = json.loads((directory / scenario.file).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
    return None


def examples_by_rule(directory: Path) -> dict[str, list[tuple[Scenario, str]]]:
    """Finding id -> the scenarios raising it, each with the payer rule it does so under."""
    found: dict[str, list[tuple[Scenario, str]]] = {}
    for scenario in scenarios(directory):
        for payer, rules in scenario.expected_rules.items():
            for rule in rules:
                if all(existing.file != scenario.file for existing, _ in found.get(rule, [])):
                    found.setdefault(rule, []).append((scenario, payer))
    return found
