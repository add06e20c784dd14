"""The sample bundles are valid FHIR, documented, and give exactly the manifest's results."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from scenario_support import (
    BUNDLES,
    README,
    TABLE_BEGIN,
    TABLE_END,
    bundle,
    cases,
    manifest,
    readme_table,
    readme_with_table,
    reduce_check_json,
    reduce_expected,
    scenarios,
)

from fhir_mappings import map_path

SCENARIO_FILES = [s["file"] for s in scenarios()]
RULE_IDS_PREFIXES = ("E-", "W-", "I-")


def _engine() -> tuple[Callable[..., Any], Callable[..., Any]]:
    from plugin.rules import analysis_to_json, analyze

    return analyze, analysis_to_json


# ---- the manifest itself


def test_manifest_lists_every_bundle_once() -> None:
    on_disk = sorted(p.name for p in BUNDLES.glob("*.json") if p.name != "scenarios.json")
    assert sorted(SCENARIO_FILES) == on_disk
    assert len(set(SCENARIO_FILES)) == len(SCENARIO_FILES)
    assert len(SCENARIO_FILES) >= 14


@pytest.mark.parametrize("item", scenarios(), ids=SCENARIO_FILES)
def test_manifest_entry_is_complete(item: dict[str, Any]) -> None:
    for key in ("file", "title", "shows", "hook", "fhir_version", "payer_rule", "arithmetic"):
        assert isinstance(item[key], str)
        assert item[key]
    assert item["hook"] in ("order-sign", "encounter-discharge")
    assert item["fhir_version"] in ("R4", "R5")
    assert item["payer_rule"] in item["expected"]
    assert set(item["expected"]) <= {"cms", "ama"}
    for result in item["expected"].values():
        assert result["visits"], "every scenario has at least one visit"
        for visit in result["visits"]:
            assert visit["pair"] in (
                "SUPPORTED",
                "NOT_SUPPORTED",
                "NOT_APPLICABLE",
                "INDETERMINATE",
            )
            assert visit["units"] in visit["allocations"]
            assert all(r.startswith(RULE_IDS_PREFIXES) for r in visit["findings"])
        assert all(r.startswith(RULE_IDS_PREFIXES) for r in result["findings"])


def test_rule_ids_are_in_the_catalogue() -> None:
    from plugin.rules.catalogue import RuleId

    known = {r.value for r in RuleId}
    used = {
        rule
        for s in scenarios()
        for result in s["expected"].values()
        for rule in [*result["findings"], *(r for v in result["visits"] for r in v["findings"])]
    }
    assert used <= known


def test_readme_agrees_with_the_manifest() -> None:
    text = README.read_text(encoding="utf-8")
    assert TABLE_BEGIN in text
    assert TABLE_END in text
    assert text == readme_with_table(text, readme_table(scenarios())), (
        "sample_bundles/README.md is out of date: run "
        "`python tests/sample_bundles/scenario_support.py`"
    )


# ---- the bundles are valid FHIR


@pytest.mark.parametrize("item", scenarios(), ids=SCENARIO_FILES)
def test_bundle_validates_with_fhir_resources(item: dict[str, Any]) -> None:
    data = bundle(item["file"])
    assert data["resourceType"] == "Bundle"
    assert data["type"] == "collection"
    if item["fhir_version"] == "R5":
        from fhir.resources.bundle import Bundle
    else:
        from fhir.resources.R4B.bundle import Bundle
    parsed = Bundle.model_validate(data)
    assert len(parsed.entry) == len(data["entry"])


@pytest.mark.parametrize("item", scenarios(), ids=SCENARIO_FILES)
def test_bundle_conventions(item: dict[str, Any]) -> None:
    """Draft charges, CPT codes with periods, and the CarePlan shape the docs promise."""
    resources = [e["resource"] for e in bundle(item["file"])["entry"]]
    kinds = [r["resourceType"] for r in resources]
    assert kinds.count("Patient") == 1
    assert "Encounter" in kinds
    procedures = [r for r in resources if r["resourceType"] == "Procedure"]
    assert procedures
    for proc in procedures:
        assert proc["code"]["coding"][0]["system"] == "http://www.ama-assn.org/go/cpt"
    for charge in (r for r in resources if r["resourceType"] == "ServiceRequest"):
        assert charge["status"] == "draft"
        assert charge["intent"] == "order"
        assert isinstance(charge["quantityQuantity"]["value"], int)
    if item["hook"] == "order-sign":
        assert "ServiceRequest" in kinds, "order-sign scenarios carry draft charges"
    for plan in (r for r in resources if r["resourceType"] == "CarePlan"):
        assert {"status", "category", "period"} <= set(plan)


def test_no_machine_specific_paths() -> None:
    for path in [*BUNDLES.glob("*.json"), README]:
        text = path.read_text(encoding="utf-8")
        # Built from parts so that this guard does not itself contain the paths it forbids.
        for marker in (f"/{'home'}/", f"/{'work'}/", f"/{'tmp'}/", "C:\\"):
            assert marker not in text, f"{path.name} contains {marker!r}"


# ---- the real pipeline gives exactly the manifest's results


def _expected(file: str, payer_rule: str) -> dict[str, Any]:
    item = next(s for s in scenarios() if s["file"] == file)
    return reduce_expected(item["expected"][payer_rule])


@pytest.mark.parametrize(("file", "payer_rule"), cases())
def test_pipeline_gives_the_expected_result(file: str, payer_rule: str) -> None:
    from plugin.pipeline import check_record

    _, analysis_to_json = _engine()
    # the pipeline every entry point runs (it also reads the bundle's visit history, R-E6)
    record = map_path(BUNDLES / file, strict=True)
    result = check_record(record, payer_rule=payer_rule, pair_rule="cms")  # type: ignore[arg-type]
    document = analysis_to_json(result.analysis)
    json.dumps(document)  # the contract document is plain JSON
    for visit in document["visits"]:
        assert visit["units"] in visit["allocations"]
    assert reduce_check_json(document) == _expected(file, payer_rule)


def test_the_mapper_reads_the_bundles_without_issues() -> None:
    for file in SCENARIO_FILES:
        record = map_path(BUNDLES / file, strict=True)
        assert record.issues == (), (file, record.issues)


@pytest.mark.parametrize(("file", "payer_rule"), cases())
def test_check_cli_gives_the_expected_result(file: str, payer_rule: str) -> None:
    from typer.testing import CliRunner

    from plugin.cli import app

    result = CliRunner().invoke(
        app, ["check", str(BUNDLES / file), "--payer-rule", payer_rule, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert reduce_check_json(json.loads(result.stdout)) == _expected(file, payer_rule)


def test_manifest_loads_as_plain_json() -> None:
    assert isinstance(manifest()["about"], str)
