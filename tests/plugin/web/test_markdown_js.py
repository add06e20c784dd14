"""The sandbox's card Markdown renderer (``plugin/web/static/markdown.js``) on hostile input.

Issue 17, item 3: a detail line starting with ``|`` that was not a table (a Procedure status of
``"stopped\\n|"``) made the renderer loop forever and froze the tab. The renderer runs here in
Node, each input under a time limit; with no ``node`` on the machine the tests are skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from plugin.markdown import quote_markdown

SCRIPT = Path(__file__).resolve().parents[3] / "plugin" / "web" / "static" / "markdown.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed; cannot run the JS")

# Loads markdown.js in a fresh context and renders each input of the JSON array on stdin with a
# 2-second limit of its own; prints one JSON result per input: the HTML, or "TIMEOUT".
_HARNESS = """
const fs = require("fs"), vm = require("vm");
const context = { window: {} };
vm.createContext(context);
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), context);
const inputs = JSON.parse(fs.readFileSync(0, "utf8"));
const results = inputs.map((text) => {
  context.input = text;
  try {
    return vm.runInContext("window.CardMarkdown.render(input)", context, { timeout: 2000 });
  } catch (error) {
    return /timed out/.test(String(error)) ? "TIMEOUT" : "ERROR " + String(error);
  }
});
process.stdout.write(JSON.stringify(results));
"""


def render(*texts: str) -> list[str]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "-e", _HARNESS, str(SCRIPT)],
        input=json.dumps(list(texts)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    results: list[str] = json.loads(done.stdout)
    return results


HOSTILE = {
    "the issue's status": "Documentation: stopped\n|",
    "a lone bar": "|",
    "bars that are no table": "| a\n| b |\n|c\n\n|",
    "a bar line then a divider-less table": "| a | b |\n| c | d |",
    "a heading cut by a line separator": "# a\u2028b\n#\u2029",
    "deep nesting": "> " * 5000 + "[" * 5000 + "*" * 5000 + "_" * 5000 + "(" * 5000,
    "unclosed backtick runs": " ".join("`" * n for n in range(1, 400)),
    "10,000 lines": "\n".join(
        ("| x", "- item", "1. one", "# h", "plain **b** `c`", "  indented", "|---|", "")[i % 8]
        for i in range(10_000)
    ),
    "escapes everywhere": "\\" * 10_001 + "\\|" * 3000,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_renders_in_time(name: str) -> None:
    (html,) = render(HOSTILE[name])
    assert html != "TIMEOUT", f"{name}: the renderer did not finish in 2 s"
    assert not html.startswith("ERROR"), html


def test_the_issue_status_renders_as_text() -> None:
    assert render("stopped\n|", "|") == ["<p>stopped |</p>", "<p>|</p>"]


def test_data_quoted_by_the_service_renders_as_its_characters() -> None:
    payload = "[re-enter your password](https://evil.example/phish) <script>x</script> `a`"
    text, code = render(quote_markdown(payload), quote_markdown(payload, code=True))
    assert "<a " not in text
    assert "<script" not in text
    assert "<a " not in code
    assert code.startswith("<p><code>")
    assert "&lt;script&gt;" in code
    assert "[re-enter your password](https://evil.example/phish)" in text


def test_the_cards_own_markdown_still_renders() -> None:
    table = "| code | min |\n|---|---:|\n| 97\\|110 | 38 |\n\nTotal: **38**\n\n*Rule X.*"
    (html,) = render(table)
    assert "<td>97|110</td>" in html
    assert '<td class="align-right">38</td>' in html
    assert "<strong>38</strong>" in html
    assert "<em>Rule X.</em>" in html
    (listing,) = render("- **I-TIE**: a\n- **I-OTHER-PTP**: b")
    assert (
        listing
        == "<ul><li><strong>I-TIE</strong>: a</li><li><strong>I-OTHER-PTP</strong>: b</li></ul>"
    )
