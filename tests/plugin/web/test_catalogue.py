"""The finding catalogue: docs/rules.md never drifts from the rule data, /rules shows every id."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from web_support import ROOT, dev_settings

from plugin.app import create_app
from plugin.rules import CATALOGUE
from plugin.web.catalogue import rules_markdown
from plugin.web.docs import main as write_docs
from plugin.web.samples import examples_by_rule, scenarios
from plugin.web.settings import default_sample_bundles_dir

DOC = ROOT / "docs" / "rules.md"


def test_the_committed_page_is_what_the_rule_data_generates() -> None:
    assert DOC.read_text(encoding="utf-8") == rules_markdown(), (
        "docs/rules.md is out of date: run `make docs`"
    )


def test_the_generator_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "rules.md"
    assert write_docs([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == rules_markdown()


def test_every_finding_id_has_an_entry_and_every_raised_one_an_example() -> None:
    text = rules_markdown()
    examples = examples_by_rule(default_sample_bundles_dir())
    for rule in CATALOGUE:
        assert f"### `{rule.value}`" in text
    raised = {r for s in scenarios(default_sample_bundles_dir()) for r in s.rules()}
    assert raised, "the manifest lists findings"
    for rule in raised:
        assert examples[rule], rule
        first = examples[rule][0][0].file
        section = text.split(f"### `{rule}`", 1)[1].split("### ", 1)[0]
        assert f"../sample_bundles/{first}" in section


def test_a_rule_raised_only_under_ama_says_so() -> None:
    section = rules_markdown().split("### `W-MIN-UNDER-8`", 1)[1].split("### ", 1)[0]
    # under-8-minutes.json raises it under the default rule; short-services only under AMA.
    assert "under-8-minutes.json" in section


@pytest.mark.anyio
async def test_the_rules_page_shows_every_finding(tmp_path: Path) -> None:
    app = create_app(dev_settings(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        page = await client.get("/rules")
    assert page.status_code == 200
    for rule in CATALOGUE:
        assert f'id="{rule.value}"' in page.text
    assert "/sandbox?scenario=pair-no-modifier.json" in page.text
