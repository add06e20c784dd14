"""The rule catalogue page (``/rules``) and ``docs/rules.md``, both generated from the rule data.

One entry per finding id (I-6): what it means, its severity, the rule-book ids it implements,
its sources, the document it rests on, and the sample bundles that raise it.
Regenerate the committed page with ``make docs`` (``python -m plugin.web.docs docs/rules.md``);
a test fails when the committed file and the rule data disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from plugin.rules import CATALOGUE, catalogue_markdown
from plugin.rules.vocabulary import CHOICES
from plugin.web.pages import render
from plugin.web.samples import Scenario, examples_by_rule
from plugin.web.settings import WebSettings, default_sample_bundles_dir

_SEVERITY_INDICATOR = {"error": "critical", "warning": "warning", "info": "info"}

_INTRO = """\
# Finding catalogue

Every finding the rules can raise, generated from the rule data (`plugin/rules/catalogue.py`)
and the sample-bundle manifest (`sample_bundles/scenarios.json`). Do not edit by hand:
run `make docs` to regenerate; a test fails when this page and the rule data disagree.

Errors become `critical` cards, warnings `warning` cards; findings of one cause share one card,
whose `source.topic.code` (system `https://therapy-cds.github.io/fhir/CodeSystem/finding`) is
the primary finding's id, the others listed in it. Informational findings ride in the card they
concern, or in the visit's `info` summary card (topic `units-summary`) when the card policy asks
for it (README, "Cards"). With a public base URL, each card links here, to `#<finding id>`.

Source ids (S1a, S7, ...) are listed with their documents in [sources.md](sources.md).

## Summary

"""


def _example_text(examples: Sequence[tuple[Scenario, str]]) -> str:
    if not examples:
        return "Example: none of the sample bundles raises it."
    parts = []
    for scenario, payer in examples:
        rule_note = "" if payer == scenario.payer_rule else f" (with `--payer-rule {payer}`)"
        parts.append(
            f"[`{scenario.file}`](../sample_bundles/{scenario.file}){rule_note}: {scenario.title}"
        )
    return "Example" + ("s" if len(parts) > 1 else "") + ": " + "; ".join(parts) + "."


def choices_markdown() -> str:
    """The rule choices (:mod:`plugin.rules.vocabulary`): where each is made, its values."""
    lines = [
        "## Rule choices",
        "",
        "Each choice has a default setting and a CLI option (the rules: `check` and `audit`; the",
        "card policy: `invoke`); a CDS Hooks call may choose per call with the member of the",
        "request extension `io.github.therapy-cds`, as the sandbox and the SMART app do. Any other",
        "value is refused with the accepted ones: a 400 for a call, exit 2 for the CLI, a start-up",
        "error for a setting.",
        "",
    ]
    for kind, choice in CHOICES.items():
        lines.append(
            f"### {choice.noun.capitalize()}: `{choice.setting}`, `{choice.option}`,"
            f" `{choice.member}`"
        )
        lines.append("")
        lines.append("| value | label | meaning |")
        lines.append("|---|---|---|")
        lines.extend(f"| `{rule.value}` | {rule.label} | {rule.meaning} |" for rule in kind)
        lines.append("")
    return "\n".join(lines)


def rules_markdown(samples_dir: Path | None = None) -> str:
    """The text of ``docs/rules.md``."""
    examples = examples_by_rule(samples_dir or default_sample_bundles_dir())
    lines = [_INTRO + catalogue_markdown(), choices_markdown(), "## Findings", ""]
    for entry in CATALOGUE.values():
        rule = entry.rule.value
        lines.append(f"### `{rule}`")
        lines.append("")
        severity = entry.severity.value
        pair_note = (
            " Makes the 97140/97530 pair NOT_SUPPORTED." if entry.changes_pair_status else ""
        )
        lines.append(
            f"**{severity}** (card indicator `{_SEVERITY_INDICATOR[severity]}`).{pair_note}"
        )
        lines.append("")
        lines.append(entry.meaning[0].upper() + entry.meaning[1:] + ".")
        lines.append("")
        lines.append(f"- Implements: {', '.join(entry.implements)}")
        lines.append(f"- Sources: {', '.join(entry.sources)}")
        lines.append(f"- Document: {entry.document}")
        lines.append(f"- {_example_text(examples.get(rule, []))}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def catalogue_router(web: WebSettings, *, sandbox_on: bool, feedback_on: bool = False) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/rules")
    async def rules_page() -> Response:
        examples = examples_by_rule(web.sample_bundles_dir)
        entries = [
            {
                "entry": entry,
                "indicator": _SEVERITY_INDICATOR[entry.severity.value],
                "examples": examples.get(entry.rule.value, []),
            }
            for entry in CATALOGUE.values()
        ]
        return render(
            "rules.html",
            {
                "page": "rules",
                "entries": entries,
                "sandbox_on": sandbox_on,
                "feedback_on": feedback_on,
            },
        )

    return router
