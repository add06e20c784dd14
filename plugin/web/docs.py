"""``python -m plugin.web.docs [OUT]``: write the finding catalogue page (``docs/rules.md``).

Prints it when OUT is not given. ``make docs`` runs this; a test keeps the committed file equal
to what this writes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from plugin.web.catalogue import rules_markdown


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    text = rules_markdown()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
