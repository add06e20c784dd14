"""Helpers for the audit tests: the export generator, the CLI, and reading the outputs."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from typer.testing import CliRunner

from plugin.cli import app

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_bundles"
ARTIFACTS = ROOT / "tests" / "artifacts"


def bench_script(filename: str) -> ModuleType:
    """``bench/<filename>`` (a script, not a package), imported once per test session (its
    dataclasses look their module up in ``sys.modules``)."""
    name = "therapy_bench_" + filename.removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / filename)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def gen_export_module() -> ModuleType:
    """``bench/gen_export.py``."""
    return bench_script("gen_export.py")


def generate(visits: int, out: Path, *, seed: int = 11, bundles: bool = False) -> tuple[Path, Path]:
    """A generated export in ``out/export`` (NDJSON + manifest) and, with ``bundles``, the same
    data as one Bundle per patient in ``out/bundles``."""
    raw = out / "raw"
    args = [str(visits), str(raw), "--seed", str(seed)]
    if bundles:
        args.append("--bundles")
    assert gen_export_module().main(args) == 0
    export = out / "export"
    export.mkdir()
    for item in raw.iterdir():
        if item.is_file():
            shutil.copy(item, export / item.name)
    return export, raw / "bundles"


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def audit(*args: str) -> Any:
    return run_cli("audit", *args)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def summary(out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return loaded


def check_json(*paths: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """``therapy-cds check --format json`` over ``paths`` (exit 2 is fine: some files are not
    FHIR, check says so and analyses the rest)."""
    result = CliRunner().invoke(
        app, ["check", *map(str, paths), "--format", "json", *extra], catch_exceptions=False
    )
    assert result.exit_code in (0, 2), result.output
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def check_counts(document: dict[str, Any]) -> dict[str, Any]:
    """The summary.json numbers, computed from ``check``'s contract JSON."""
    by_rule: Counter[str] = Counter()
    pair: Counter[str] = Counter()
    units: Counter[str] = Counter()
    months: Counter[str] = Counter()
    billing: Counter[str] = Counter()
    with_findings = 0
    for visit in document["visits"]:
        billed = visit["billed_units"]
        if billed is None:
            billing["visits_without_charges"] += 1
        else:
            billing["visits_with_charges"] += 1
            for code, count in billed.items():
                difference = count - visit["units"].get(code, 0)
                billing["units_billed"] += count
                billing["units_allowed"] += visit["units"].get(code, 0)
                billing["units_over_billed"] += max(0, difference)
                billing["units_under_billed"] += max(0, -difference)
        pair[visit["pair"]] += 1
        months[visit["date"][:7]] += 1
        with_findings += bool(visit["findings"])
        for finding in visit["findings"]:
            by_rule[finding["rule"]] += 1
        for code, count in visit["units"].items():
            units[code] += count
    for finding in document["findings"]:
        by_rule[finding["rule"]] += 1
    return {
        "visits": len(document["visits"]),
        "visits_with_findings": with_findings,
        "findings_by_rule": dict(by_rule),
        "pair_status": {k: v for k, v in pair.items() if v},
        "units_by_code": {k: v for k, v in units.items() if v},
        "visits_by_month": dict(months),
        "findings_not_on_a_visit": len(document["findings"]),
        "billing": {k: v for k, v in billing.items() if v},
    }


def audit_counts(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "visits": body["totals"]["visits"],
        "visits_with_findings": body["totals"]["visits_with_findings"],
        "findings_by_rule": body["findings_by_rule"],
        "pair_status": {k: v for k, v in body["pair_status"].items() if v},
        "units_by_code": {k: v["units"] for k, v in body["units_by_code"].items() if v["units"]},
        "visits_by_month": {k: v["visits"] for k, v in body["by_month"].items()},
        "findings_not_on_a_visit": body["totals"]["findings_not_on_a_visit"],
        "billing": {  # one payer rule per audit
            k: v
            for rule in body["billing_by_payer_rule"].values()
            for k, v in rule.items()
            if v and k not in ("visits_over_billed", "visits_under_billed")
        },
    }


_RUN_LINE = re.compile(r'<p class="run">.*?</p>')


def comparable_report(html: str) -> str:
    """The report without the line that differs between runs (start time, seconds, jobs)."""
    return _RUN_LINE.sub("", html)
