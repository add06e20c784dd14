"""Therapy-assistant modifiers CQ and CO (rule book R-G3; sources S40a-S40e).

CMS (S40a, confirmed): CQ marks "outpatient physical therapy services furnished in whole or in
part by a physical therapist assistant", CO the same for occupational therapy and an
occupational therapy assistant; they are required on claims with dates of service on and after
1 January 2020, and from 1 January 2022 such a line is paid at 85 % of the fee schedule.

"In part" is a de minimis standard (S40b-S40d, secondary sources quoting the CY 2020 and CY 2022
PFS final rules): the modifier applies when the assistant furnishes **more than 10 %** of the
service; minutes the assistant furnishes together with the therapist are the therapist's; for
15-minute timed codes the standard is applied per billed unit, and a unit the therapist's own
minutes earn (the 8-minute threshold, met without the assistant's minutes) is billed without the
modifier. The checker reduces this to one test per timed code and date of service (POLICY):

    the assistant's minutes of the code ``a``, everyone else's ``t``, the code's units ``n``
    (the allocation of R-B6 / R-C2):  CQ/CO is needed when  10·a > a + t  and  units(t) < n,

where ``units(t)`` is what the therapist's minutes earn on their own (0 under 8 minutes, else
``(t + 7) // 15``). Exactly 10 % is not "more than 10 %". A split bill -- the code on one line
with the modifier and on another without, as CMS's CY 2022 examples do -- satisfies the test,
because a line's modifiers are the union over the code's charges (I-4.4).

Nothing is guessed: a code whose services do not all name a readable performer, or one of
whose services has no usable period, gets no finding (see :mod:`fhir_mappings.performers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from types import MappingProxyType

from fhir_mappings.model import Discipline, PerformerRole, TimedService
from plugin.rules.catalogue import RuleId
from plugin.rules.counts import CodeCounts
from plugin.rules.findings import Finding, FindingFacts, Fix, make_finding
from plugin.rules.view import VisitView

#: The first date of service on which CMS requires CQ/CO (S40a).
REQUIRED_FROM = date(2020, 1, 1)

#: The assistant modifier of each discipline, and the assistant it names (S40a).
ASSISTANT_MODIFIERS: Mapping[Discipline, tuple[str, PerformerRole]] = MappingProxyType(
    {
        Discipline.PT: ("CQ", PerformerRole.PTA),
        Discipline.OT: ("CO", PerformerRole.OTA),
    }
)
_ASSISTANT_OF: Mapping[str, PerformerRole] = MappingProxyType(dict(ASSISTANT_MODIFIERS.values()))
_TITLE = {
    PerformerRole.PTA: "physical therapist assistant",
    PerformerRole.OTA: "occupational therapy assistant",
}


def own_units(minutes: int) -> int:
    """Units ``minutes`` of one code earn on their own (R-B3 / R-C1 threshold)."""
    return 0 if minutes < 8 else (minutes + 7) // 15


def above_de_minimis(assistant: int, total: int) -> bool:
    """More than 10 % of ``total`` minutes (integers: exactly 10 % is not above)."""
    return assistant > 0 and 10 * assistant > total


def assistant_findings(view: VisitView, units: CodeCounts) -> list[Finding]:
    """W-ASSISTANT-MODIFIER-MISSING and W-ASSISTANT-MODIFIER-UNSUPPORTED for one visit."""
    visit = view.visit
    if visit.service_date < REQUIRED_FROM:
        return []
    found: list[Finding] = []
    wanted = ASSISTANT_MODIFIERS.get(visit.discipline)
    services_by_code: dict[str, list[TimedService]] = {}
    for s in visit.services:
        services_by_code.setdefault(s.code, []).append(s)
    for code, line in view.lines.items():
        services = services_by_code.get(code, ())
        if not services:
            continue
        if wanted is not None and code in view.timed_codes and line.has_billing:
            modifier, role = wanted
            if modifier not in line.modifiers:
                missing = _missing(view, code, role, units.get(code, 0))
                if missing is not None:
                    assistant, total, n = missing
                    found.append(
                        make_finding(
                            RuleId.W_ASSISTANT_MODIFIER_MISSING,
                            codes=[code],
                            resources=[*line.charge_refs, *line.service_refs],
                            message=(
                                f"{code}: a {_TITLE[role]} furnished {assistant} of its {total}"
                                f" minutes (more than 10 %) and the therapist's own"
                                f" {total - assistant} minutes do not earn its"
                                f" {n} unit{'' if n == 1 else 's'}; add {modifier}"
                                f" (paid at 85 % from 2022)."
                            ),
                            facts=FindingFacts(
                                minutes=assistant,
                                raw_minutes=total,
                                units_allowed=n,
                                detail=modifier,
                            ),
                            fixes=(
                                Fix(
                                    line_code=code, charge_refs=line.fix_refs, add_modifier=modifier
                                ),
                            ),
                        )
                    )
        for modifier in sorted(line.modifiers & _ASSISTANT_OF.keys()):
            role = _ASSISTANT_OF[modifier]
            roles = {s.performer_role for s in services}
            if PerformerRole.UNKNOWN in roles or role in roles:
                continue  # an assistant is recorded, or a performer cannot be read
            found.append(
                make_finding(
                    RuleId.W_ASSISTANT_MODIFIER_UNSUPPORTED,
                    codes=[code],
                    resources=[*line.charge_refs, *(s.ref for s in services)],
                    message=(
                        f"{code}: the line carries {modifier} but no {_TITLE[role]} is recorded"
                        f" as a performer of its services on this date; remove {modifier} or"
                        " record the assistant."
                    ),
                    facts=FindingFacts(detail=modifier),
                    fixes=(
                        Fix(line_code=code, charge_refs=line.fix_refs, remove_modifier=modifier),
                    ),
                )
            )
    return found


def _missing(
    view: VisitView, code: str, role: PerformerRole, n: int
) -> tuple[int, int, int] | None:
    """(assistant minutes, all minutes, units) when the code needs the modifier, else None."""
    if n <= 0 or code in view.codes_without_span:
        return None
    services = view.counted_by_code.get(code, ())
    if any(s.performer_role is PerformerRole.UNKNOWN for s in services):
        return None
    assistant = total = 0
    for s in services:
        minutes = s.minutes or 0
        total += minutes
        if s.performer_role is role:
            assistant += minutes
    if not above_de_minimis(assistant, total) or own_units(total - assistant) >= n:
        return None
    return assistant, total, n
