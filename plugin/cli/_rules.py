"""The rule options of the CLI (``--payer-rule``, ``--pair-rule``, ``--card-policy``).

Their values, help and refusals come from :mod:`plugin.rules.vocabulary`: a value outside the
enum is refused by :func:`~plugin.rules.vocabulary.parse` with the message every other entry
point gives (exit 2, as for any bad option)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from plugin.rules.vocabulary import (
    CHOICES,
    CardPolicy,
    PairRule,
    PayerRule,
    Vocabulary,
    VocabularyError,
    choices_text,
    parse,
)

_Rule = TypeVar("_Rule", bound=Vocabulary)


def _parser(kind: type[_Rule]) -> Callable[[str], _Rule]:
    option = CHOICES[kind].option

    def convert(text: str) -> _Rule:
        try:
            return parse(kind, text, option)
        except VocabularyError as exc:
            raise typer.BadParameter(str(exc)) from None

    return convert


def rule_option(kind: type[Vocabulary], default: str) -> Any:
    """The Typer option for ``kind``: its values with their meanings in the help, then
    ``default`` (what applies without the option)."""
    return typer.Option(
        CHOICES[kind].option,
        parser=_parser(kind),
        metavar=f"<{'|'.join(kind)}>",
        help=f"{choices_text(kind)}. Default: {default}.",
    )


PayerRuleOption = Annotated[
    PayerRule | None,
    rule_option(
        PayerRule,
        f"each visit's from its Coverage (the payer mapping), else {CHOICES[PayerRule].setting}",
    ),
]
PairRuleOption = Annotated[PairRule | None, rule_option(PairRule, CHOICES[PairRule].setting)]
CardPolicyOption = Annotated[
    CardPolicy | None,
    rule_option(
        CardPolicy,
        f"the service's {CHOICES[CardPolicy].setting} (sent as the request extension member "
        f"{CHOICES[CardPolicy].member})",
    ),
]
