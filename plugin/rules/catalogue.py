"""The finding catalogue (rule book I-6): every rule id the checker can emit, as data.

One entry per id: severity, a one-line meaning, the rule-book rules it implements and where
those rules come from (source ids of ``billing-sources.md`` plus the document). The CDS card
layer takes its severity from here and the docs page is generated from :data:`CATALOGUE`, so an
id, its severity and its wording live in exactly one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Severity(StrEnum):
    """How serious a finding is (I-6). Cards: error -> critical, warning -> warning."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


SEVERITY_RANK: Mapping[Severity, int] = MappingProxyType(
    {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
)


class RuleId(StrEnum):
    """The finding ids of rule book I-6, then the product's own (issue 14)."""

    E_PAIR_NO_MODIFIER = "E-PAIR-NO-MODIFIER"
    W_MODIFIER_ON_COL1 = "W-MODIFIER-ON-COL1"
    E_PAIR_SAME_TIMEBLOCK = "E-PAIR-SAME-TIMEBLOCK"
    W_OVERLAP = "W-OVERLAP"
    W_MODIFIER_MISMATCH_XE = "W-MODIFIER-MISMATCH-XE"
    W_MODIFIER_MISMATCH_XP = "W-MODIFIER-MISMATCH-XP"
    W_MODIFIER_MISMATCH_XS = "W-MODIFIER-MISMATCH-XS"
    W_59_WITH_X = "W-59-WITH-X"
    W_CODE_ZERO_UNITS = "W-CODE-ZERO-UNITS"
    W_MIN_UNDER_8 = "W-MIN-UNDER-8"
    I_TIE = "I-TIE"
    E_UNITS_EXCEED = "E-UNITS-EXCEED"
    W_MISSING_END = "W-MISSING-END"
    W_MISSING_START = "W-MISSING-START"
    W_NO_DURATION = "W-NO-DURATION"
    W_SPANS_MIDNIGHT = "W-SPANS-MIDNIGHT"
    I_COMBINE_LINES = "I-COMBINE-LINES"
    E_GROUP_NOT_ONE_ON_ONE = "E-GROUP-NOT-ONE-ON-ONE"
    W_NO_PLAN_OF_CARE = "W-NO-PLAN-OF-CARE"
    E_PLAN_NOT_ACTIVE = "E-PLAN-NOT-ACTIVE"
    E_PLAN_PERIOD = "E-PLAN-PERIOD"
    W_RECERT_DUE = "W-RECERT-DUE"
    W_NO_REASON = "W-NO-REASON"
    W_DISCIPLINE_MODIFIER_MISSING = "W-DISCIPLINE-MODIFIER-MISSING"
    I_IGNORED_STATUS = "I-IGNORED-STATUS"
    I_OTHER_PTP = "I-OTHER-PTP"
    I_CHARGES_NOT_AVAILABLE = "I-CHARGES-NOT-AVAILABLE"
    W_PROGRESS_REPORT_DUE = "W-PROGRESS-REPORT-DUE"
    # issue 15: CMS data loaded by the user
    E_MUE_EXCEEDED = "E-MUE-EXCEEDED"
    # Issue 15: therapy-assistant modifiers CQ / CO (R-G3)
    W_ASSISTANT_MODIFIER_MISSING = "W-ASSISTANT-MODIFIER-MISSING"
    W_ASSISTANT_MODIFIER_UNSUPPORTED = "W-ASSISTANT-MODIFIER-UNSUPPORTED"


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One finding id: what it means and where the rule behind it comes from."""

    rule: RuleId
    severity: Severity
    meaning: str
    implements: tuple[str, ...]  # rule-book ids, e.g. ("R-B6", "I-3")
    sources: tuple[str, ...]  # billing-sources ids, e.g. ("S1a", "S1b")
    document: str  # the primary document the rule rests on
    changes_pair_status: bool = False  # I-4: this finding makes the pair NOT_SUPPORTED


_CLM_CH5 = "CMS Medicare Claims Processing Manual, Pub. 100-04, ch. 5 §20.2"
_BPM_CH15 = "CMS Medicare Benefit Policy Manual, Pub. 100-02, ch. 15 §220"
_NCCI_59 = "NCCI Policy Manual ch. I and CMS modifier-59 article (Example 9); MLN Matters SE0715"
_NCCI_X = "CMS CR 8863 / MLN MM8863 (XE, XS, XP, XU modifiers, effective 1 Jan 2015)"
_NCCI_PTP = "CMS NCCI Practitioner PTP edit tables (quarterly)"
_GROUP = "CMS Carriers Manual Transmittal 1753; CMS '11 Part B Billing Scenarios for PTs and OTs'"
_FHIR = "HL7 FHIR R4/R4B/R5 Procedure, Period and dateTime definitions"
_POLICY = "therapy-cds policy (rule book section I)"
_ASSISTANT = (
    "CMS 'Billing Examples Using CQ/CO Modifiers' (Pub. 100-04 ch. 5 §20.1; CY 2020 PFS final"
    " rule 84 FR 62702-62707; CY 2022 PFS final rule 86 FR 64996)"
)


def _entry(
    rule: RuleId,
    severity: Severity,
    meaning: str,
    implements: tuple[str, ...],
    sources: tuple[str, ...],
    document: str,
    *,
    changes_pair_status: bool = False,
) -> CatalogueEntry:
    return CatalogueEntry(
        rule, severity, meaning, implements, sources, document, changes_pair_status
    )


_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO

_ENTRIES: tuple[CatalogueEntry, ...] = (
    _entry(
        RuleId.E_PAIR_NO_MODIFIER,
        _E,
        "97140 and 97530 both billable on the same date of service with no NCCI-associated"
        " modifier (59, XE, XS, XP, XU) on either line; also across two disciplines' visits"
        " of one billing provider (co-treatment, raised on the column-2 visit)",
        ("R-D1", "R-D2", "R-D3", "I-4.4"),
        ("S7", "S10a", "S14", "S29"),
        _NCCI_59,
        changes_pair_status=True,
    ),
    _entry(
        RuleId.W_MODIFIER_ON_COL1,
        _W,
        "the NCCI-associated modifier is on 97140 (column 1) but not on 97530 (column 2)",
        ("R-D3", "I-4.4"),
        ("S14",),
        _NCCI_59,
        changes_pair_status=True,
    ),
    _entry(
        RuleId.E_PAIR_SAME_TIMEBLOCK,
        _E,
        "a 97140 interval and a 97530 interval overlap: they are not distinct time blocks"
        " (also when the two are on different disciplines' visits: co-treatment)",
        ("R-D3", "R-F4", "I-4.2"),
        ("S5", "S7"),
        _NCCI_59,
        changes_pair_status=True,
    ),
    _entry(
        RuleId.W_OVERLAP,
        _W,
        "one-on-one intervals overlap; the overlapping minutes are attributed per R-F4",
        ("R-F3", "R-F4", "R-H10", "I-2.7"),
        ("S19b", "S19c", "S20"),
        _GROUP,
    ),
    _entry(
        RuleId.W_MODIFIER_MISMATCH_XE,
        _W,
        "XE (separate encounter) is used but the two services do not reference different"
        " encounters",
        ("R-D4", "I-4.4"),
        ("S8", "S9"),
        _NCCI_X,
        changes_pair_status=True,
    ),
    _entry(
        RuleId.W_MODIFIER_MISMATCH_XP,
        _W,
        "XP (separate practitioner) is used but the two services' performers do not differ",
        ("R-D4", "I-4.4"),
        ("S8", "S9"),
        _NCCI_X,
        changes_pair_status=True,
    ),
    _entry(
        RuleId.W_MODIFIER_MISMATCH_XS,
        _W,
        "XS (separate structure) is used but the two services do not both record different"
        " body sites",
        ("R-D4", "I-4.4"),
        ("S8", "S9"),
        _NCCI_X,
        changes_pair_status=True,
    ),
    _entry(
        RuleId.W_59_WITH_X,
        _W,
        "modifier 59 and an X{EPSU} modifier are on the same line; they are not reported together",
        ("R-D4", "I-4.5"),
        ("S9",),
        _NCCI_X,
    ),
    _entry(
        RuleId.W_CODE_ZERO_UNITS,
        _W,
        "a code has documented minutes but is allocated 0 units; document it, do not bill it",
        ("R-B6", "R-B7", "I-3"),
        ("S1a", "S1b", "S1e"),
        _CLM_CH5,
    ),
    _entry(
        RuleId.W_MIN_UNDER_8,
        _W,
        "below the 8-minute threshold (the day's total under CMS, the code's own minutes"
        " under AMA); nothing billable",
        ("R-B3", "R-C1", "R-C2", "I-3"),
        ("S1a", "S1c", "S15", "S16"),
        _CLM_CH5 + "; AMA CPT time rule",
    ),
    _entry(
        RuleId.I_TIE,
        _I,
        "remaining minutes tie between codes; any of the tied allocations is acceptable",
        ("R-B5", "R-B6", "I-3"),
        ("S1a", "S1b"),
        _CLM_CH5 + " (Examples 2 and 5)",
    ),
    _entry(
        RuleId.E_UNITS_EXCEED,
        _E,
        "billed units exceed the units the documented minutes support (per code or in total)",
        ("R-B3", "R-B4", "R-B6", "R-B7", "R-C2", "I-3"),
        ("S1a", "S1b", "S1c", "S16"),
        _CLM_CH5,
    ),
    _entry(
        RuleId.W_MISSING_END,
        _W,
        "the service's period has a start but no end; its minutes cannot be counted",
        ("R-H2", "R-H10", "I-2.3"),
        ("S22a", "S22j"),
        _FHIR,
    ),
    _entry(
        RuleId.W_MISSING_START,
        _W,
        "the service's period has an end but no start; its minutes cannot be counted",
        ("R-H2", "R-H10", "I-2.3"),
        ("S22a", "S22j"),
        _FHIR,
    ),
    _entry(
        RuleId.W_NO_DURATION,
        _W,
        "only a date or dateTime was recorded (no period), the period ends before it starts, or"
        " its times are outside what a visit can be (before 1900, after 2200, or one service"
        " over 24 hours); the service has no duration",
        ("R-H2", "R-H10", "I-2.3"),
        ("S22a", "S22c"),
        _FHIR,
    ),
    _entry(
        RuleId.W_SPANS_MIDNIGHT,
        _W,
        "the interval crosses local midnight; all of it is attributed to the start date",
        ("R-H10", "I-2.4"),
        ("S22i",),
        _POLICY,
    ),
    _entry(
        RuleId.I_COMBINE_LINES,
        _I,
        "the same code is documented in two or more services on one date of service; bill"
        " one line with the summed units",
        ("R-B8", "I-2.8"),
        ("S1c", "S1d"),
        _CLM_CH5 + " (First Coast MAC: one line per code per date of service)",
    ),
    _entry(
        RuleId.E_GROUP_NOT_ONE_ON_ONE,
        _E,
        "a one-on-one code was delivered to a group; its minutes are excluded, bill 97150 x 1",
        ("R-F2", "R-H8", "I-2.6"),
        ("S19a", "S19d", "S19e"),
        _GROUP,
    ),
    _entry(
        RuleId.W_NO_PLAN_OF_CARE,
        _W,
        "the service references no plan of care (no basedOn CarePlan or ServiceRequest)",
        ("R-E1", "R-H3", "I-5"),
        ("S2", "S32", "S22a"),
        _BPM_CH15 + " (§220.1.2, §220.2 A)",
    ),
    _entry(
        RuleId.E_PLAN_NOT_ACTIVE,
        _E,
        "the referenced plan of care is not active",
        ("R-E1", "R-H9", "I-5"),
        ("S2", "S22h"),
        _BPM_CH15 + " (§220.2 A)",
    ),
    _entry(
        RuleId.E_PLAN_PERIOD,
        _E,
        "the date of service is outside the plan of care's period",
        ("R-E1", "R-E3", "R-E4", "I-5"),
        ("S2", "S3"),
        _BPM_CH15 + " (§220.1.3)",
    ),
    _entry(
        RuleId.W_RECERT_DUE,
        _W,
        "more than 90 days since the plan's start or latest certification, with no later"
        " recertification",
        ("R-E3", "R-E4", "R-H9", "I-5"),
        ("S2", "S3"),
        _BPM_CH15 + " (§220.1.3)",
    ),
    _entry(
        RuleId.W_NO_REASON,
        _W,
        "the service records no reason (reasonCode, reasonReference or reason)",
        ("R-E5", "R-H4", "I-5"),
        ("S2", "S22e"),
        _BPM_CH15 + " (§220.2)",
    ),
    _entry(
        RuleId.W_DISCIPLINE_MODIFIER_MISSING,
        _W,
        "a timed line carries no discipline modifier (GP, GO or GN)",
        ("R-G1", "I-2.5", "I-5"),
        ("S18", "S34"),
        "CMS therapy modifier instructions (Pub. 100-04 ch. 5 §20.1, as quoted by WPS MAC)",
    ),
    _entry(
        RuleId.I_IGNORED_STATUS,
        _I,
        "a service was set aside and not analysed (status not completed, or no patient)",
        ("R-H6", "I-2.1"),
        ("S22d",),
        _POLICY,
    ),
    _entry(
        RuleId.I_OTHER_PTP,
        _I,
        "another NCCI PTP edit may apply to two codes on this date of service; not asserted",
        ("R-D1", "R-D5", "R-D6", "I-5"),
        ("S10a", "S10b", "S10c", "S14", "S30", "S31"),
        _NCCI_PTP,
    ),
    # Issue 14 (POLICY): informational, because nothing in the record is wrong -- the input
    # simply holds no charge line to compare with -- and the pair status (INDETERMINATE) and
    # the units per code already show on the visit's summary card.
    _entry(
        RuleId.I_CHARGES_NOT_AVAILABLE,
        _I,
        "no charge line could be read for the visit (no ServiceRequest, Claim item or billing"
        " extension): the billed units and modifiers were not checked",
        ("R-H7", "I-3", "I-4.4"),
        ("S24", "S25"),
        _POLICY,
    ),
    # Issue 15: R-E6 is CONFIRMED-P (S2, §220.3 D); what counts as a treatment day and as a
    # progress report in FHIR is POLICY (plugin/rules/progress.py; the LOINC progress-note
    # codes are those of HL7 C-CDA on FHIR's ProgressNoteDocumentTypeCode value set).
    _entry(
        RuleId.W_PROGRESS_REPORT_DUE,
        _W,
        "the visit is the 10th (or later) treatment day of its discipline since the plan of"
        " care started or since the last progress report, and no progress report was written;"
        " not checked when the visit history is not available",
        ("R-E6",),
        ("S2", "S33", "S35"),
        _BPM_CH15 + " (§220.3 D)",
    ),
)

# Issue 15: only when a CMS Practitioner MUE table is loaded (THERAPY_CDS_MUE_FILES); not in the
# rule book, so its sources are the CMS and MAC MUE pages (docs/sources.md, S52-S54).
_ENTRIES += (
    _entry(
        RuleId.E_MUE_EXCEEDED,
        _E,
        "units of a code above its CMS MUE value: on one line (adjudication indicator 1) or"
        " summed over the date of service (2 and 3); checked only with an MUE table loaded",
        ("I-3",),
        ("S52", "S53", "S54"),
        "CMS NCCI Medically Unlikely Edits, Practitioner Services MUE table (quarterly)",
    ),
)

# Issue 15: therapy-assistant modifiers CQ / CO (R-G3).
_ENTRIES += (
    # Issue 15 (R-G3): the modifiers and their dates are CMS's own text (S40a); the 10 %
    # de minimis standard and its per-unit reading for timed codes come from secondary sources
    # (S40b-S40d); reducing them to one test per code and date of service is POLICY.
    _entry(
        RuleId.W_ASSISTANT_MODIFIER_MISSING,
        _W,
        "a PTA or OTA furnished more than 10 % of a timed code's minutes on a date of service"
        " (on or after 1 Jan 2020) and the therapist's own minutes do not earn all its units,"
        " but no line of the code carries CQ (PT) or CO (OT)",
        ("R-G3", "R-B3", "I-5"),
        ("S40a", "S40b", "S40c", "S40d", "S40e"),
        _ASSISTANT + "; POLICY: one test per code and date of service",
    ),
    _entry(
        RuleId.W_ASSISTANT_MODIFIER_UNSUPPORTED,
        _W,
        "CQ or CO is on a line but every service of that code on the date names its performers"
        " and none is a PTA (CQ) or OTA (CO)",
        ("R-G3", "I-5"),
        ("S40a", "S40e"),
        _ASSISTANT + "; POLICY",
    ),
)

CATALOGUE: Mapping[RuleId, CatalogueEntry] = MappingProxyType({e.rule: e for e in _ENTRIES})
"""Every finding id of I-6, in the rule book's order, then the product's own."""


def entry(rule: RuleId) -> CatalogueEntry:
    """The catalogue entry for ``rule``."""
    return CATALOGUE[rule]


def severity_of(rule: RuleId) -> Severity:
    """The severity of ``rule`` (I-6)."""
    return CATALOGUE[rule].severity


def catalogue_markdown() -> str:
    """The catalogue as a Markdown table, for the generated docs page (I-6)."""
    rows = [
        "| Rule | Severity | Meaning | Implements | Sources | Document |",
        "|---|---|---|---|---|---|",
    ]
    for e in CATALOGUE.values():
        meaning = e.meaning + (" (pair NOT_SUPPORTED)" if e.changes_pair_status else "")
        rows.append(
            f"| `{e.rule.value}` | {e.severity.value} | {meaning} | {', '.join(e.implements)}"
            f" | {', '.join(e.sources)} | {e.document} |"
        )
    return "\n".join(rows) + "\n"
