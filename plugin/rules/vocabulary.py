"""The rule vocabulary: the payer rule, the 97140/97530 pair rule and the card policy.

Each choice is a :class:`~enum.StrEnum` whose values are the words of the product contract
(``THERAPY_CDS_PAYER_RULE=cms``, ``--pair-rule strict``, the request extension member
``"cardPolicy": "summary"``). Every member carries a short ``label`` (a form's option, the CLI's
help) and a ``meaning`` (one sentence, for help and docs). Each kind knows where it is chosen
(:class:`Choice`: setting, CLI option, request extension member).

Every entry point reads a choice with :func:`parse`: the settings, the CLI options, the request
extension ``io.github.therapy-cds``, the sandbox, the SMART app and the payer mapping file. A
value outside the enum is a :class:`VocabularyError` whose message says where the value came from
and which values are accepted. The rejected value itself is never in the message: it may come
from a request, and a request's content is not echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Self, TypeVar


class Vocabulary(StrEnum):
    """A rule choice: its value is the contract's word; ``label`` and ``meaning`` say it.

    Members are written ``NAME = value, label, meaning``."""

    _value_: str
    label: str
    """A few words for a form's option or a report line, e.g. "CMS 8-minute rule"."""
    meaning: str
    """One sentence: what choosing this value does (CLI help, docs)."""

    def __new__(cls, value: str, label: str = "", meaning: str = "") -> Self:
        # (defaults only so that a lookup by value, `PayerRule("cms")`, type-checks)
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label
        member.meaning = meaning
        return member


class PayerRule(Vocabulary):
    """How timed minutes become units (R-B, R-C)."""

    CMS = (
        "cms",
        "CMS 8-minute rule",
        "the day's timed minutes are pooled: 8 to 22 minutes earn 1 unit, each further 15 one more",
    )
    AMA = (
        "ama",
        "AMA per-code rule",
        "each code is counted on its own minutes (8 to 22 minutes: 1 unit), no pooling",
    )


class PairRule(Vocabulary):
    """How the time blocks of 97140 and 97530 on one date of service are read (R-D3)."""

    CMS = (
        "cms",
        "CMS: distinct blocks",
        "97140 and 97530 need distinct, non-overlapping time blocks; split blocks allowed",
    )
    STRICT = (
        "strict",
        "Strict: 15 min each",
        "each code of the 97140/97530 pair needs 15 minutes or more of its own distinct time",
    )


class CardPolicy(Vocabulary):
    """Which cards a CDS Hooks call answers with."""

    PROBLEMS = (
        "problems",
        "Problems only",
        "only cards to act on; a visit with nothing to act on gets no card",
    )
    SUMMARY = (
        "summary",
        "Problems + visit summary",
        "also each visit's info summary card (units per code, informational findings)",
    )
    ALL = "all", "Everything", "also one info card per informational finding"


@dataclass(frozen=True, slots=True)
class Choice:
    """Where one kind of rule choice is made: its names in each entry point."""

    noun: str  # "payer rule"
    setting: str  # the environment variable of the default
    option: str  # the CLI option
    member: str  # the member of the request extension (and the sandbox and SMART app fields)


CHOICES: Final[Mapping[type[Vocabulary], Choice]] = {
    PayerRule: Choice("payer rule", "THERAPY_CDS_PAYER_RULE", "--payer-rule", "payerRule"),
    PairRule: Choice("pair rule", "THERAPY_CDS_PAIR_INTERVAL_RULE", "--pair-rule", "pairRule"),
    CardPolicy: Choice("card policy", "THERAPY_CDS_CARD_POLICY", "--card-policy", "cardPolicy"),
}

#: The payer-rule choice of the sandbox and the SMART app that leaves the rule to the patient's
#: Coverage (else ``THERAPY_CDS_PAYER_RULE``): not a payer rule, so not a member.
FROM_COVERAGE: Final = "coverage"
FROM_COVERAGE_LABEL: Final = "From the patient's coverage"

V = TypeVar("V", bound=Vocabulary)


def allowed_text(kind: type[Vocabulary], *, also: Mapping[str, str] | None = None) -> str:
    """The accepted values, quoted, with their labels: ``'cms' (CMS 8-minute rule) or 'ama'
    (AMA per-code rule)``; ``also``: further accepted values and their labels, listed first."""
    words = [f"'{value}' ({label})" for value, label in (also or {}).items()]
    words += [f"'{member.value}' ({member.label})" for member in kind]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


class VocabularyError(ValueError):
    """A rule choice outside the vocabulary. ``where`` names its source (a setting, a CLI option,
    a request member); the message lists the accepted values and never repeats the rejected one.
    """

    def __init__(
        self, kind: type[Vocabulary], where: str, *, also: Mapping[str, str] | None = None
    ) -> None:
        self.kind = kind
        self.where = where
        self.allowed = (*(also or {}), *(m.value for m in kind))
        super().__init__(f"{where} must be {allowed_text(kind, also=also)}")


def parse(kind: type[V], text: object, where: str) -> V:
    """``text`` as a member of ``kind``, or :class:`VocabularyError` naming ``where``.

    Exact values only (``"cms"``, not ``"CMS"`` nor ``" cms"``): every entry point accepts
    exactly the enum's values, and the contract's words are lower case.
    """
    if isinstance(text, kind):
        return text
    if isinstance(text, str):
        try:
            return kind(text)
        except ValueError:
            pass
    raise VocabularyError(kind, where)


def parse_payer_choice(text: object, where: str) -> PayerRule | None:
    """A payer rule, or ``None`` for :data:`FROM_COVERAGE` (the sandbox's and SMART app's
    "from the patient's coverage"); anything else is a :class:`VocabularyError` that lists
    ``coverage`` with the rules."""
    if text == FROM_COVERAGE:
        return None
    try:
        return parse(PayerRule, text, where)
    except VocabularyError:
        raise VocabularyError(PayerRule, where, also={FROM_COVERAGE: FROM_COVERAGE_LABEL}) from None


def choices_text(kind: type[Vocabulary]) -> str:
    """The values and their meanings in one line, for CLI help: ``cms: ...; ama: ...``."""
    return "; ".join(f"{m.value}: {m.meaning}" for m in kind)
