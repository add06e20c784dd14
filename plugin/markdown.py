"""Quoting data into card Markdown: what came from FHIR is shown as text, never read as Markdown.

Card details are CommonMark (GitHub-flavoured in most EHRs), and the cards quote values that
came from the request: resource ids, statuses, codes, and the findings' messages that carry them.
A value like ``[re-enter your password](https://evil.example/phish)`` must reach the clinician as
those characters, not as a link. :func:`quote_markdown` is the one place that makes data safe
for Markdown; every card quotes data through it. Links in cards come only from the service's
configuration (``Card.links``), never from text.
"""

from __future__ import annotations

import re

__all__ = ["quote_markdown"]

# Characters that open Markdown or HTML structure anywhere in a line: escapes, code, emphasis,
# strikethrough, links and images, HTML tags and entities, table cells, headings, e-mail
# autolinks, and the braces / dollar / caret some renderers give meaning to. CommonMark lets
# any ASCII punctuation be escaped with a backslash, and shows it as the character itself.
_ANYWHERE = re.compile(r"([\\`*_~\[\]<>&|#!{}$^@])")
# Bare URLs and www. names become links in GitHub-flavoured Markdown: break the pattern.
_URL_SCHEME = re.compile(r":(?=//)")
_WWW = re.compile(r"(?i)\b(www)\.")
# What opens a block at the start of a line: list items, block quotes, setext underlines.
_LINE_START = re.compile(r"^([-+=>])|^(\d+)([.)])")


def _flatten(text: str) -> str:
    """One line: every run of white space (line breaks, tabs, Unicode separators) is one space,
    so a value can neither start a block on a new line nor indent a code block."""
    return " ".join(str(text).split())


def quote_markdown(text: str, *, code: bool = False) -> str:
    """``text`` as Markdown that shows exactly its characters (white space flattened to single
    spaces): escaped with backslashes, or -- with ``code`` -- as a code span whose backtick fence
    is longer than any run of backticks inside it (CommonMark 6.1).

    A code span is literal, so nothing inside it becomes structure, but a GitHub table still
    splits it at ``|``: quote table cells as text.
    """
    flat = _flatten(text)
    if code:
        longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
        fence = "`" * (longest + 1)
        pad = " " if flat.startswith("`") or flat.endswith("`") or not flat else ""
        return f"{fence}{pad}{flat}{pad}{fence}"
    escaped = _ANYWHERE.sub(r"\\\1", flat)
    escaped = _URL_SCHEME.sub(r"\\:", escaped)
    escaped = _WWW.sub(r"\1\\.", escaped)
    return _LINE_START.sub(
        lambda m: f"\\{m.group(1)}" if m.group(1) else f"{m.group(2)}\\{m.group(3)}", escaped
    )
