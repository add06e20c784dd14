"""E-MUE-EXCEEDED: units of a code on one date of service above its CMS MUE value (issue 15).

Checked only when an MUE table is loaded (``THERAPY_CDS_MUE_FILES``, ``--mue-file``): values
are never invented. The MUE Adjudication Indicator decides what is compared with the value
(CMS MUE page; Noridian and NGS MUE pages, ``docs/sources.md``):

- **1 (line edit)**: each charge line's units. Units over the value are denied on that line; the
  fix is mechanical: set the line's units to the value (medically necessary units beyond it go on
  another line with an appropriate modifier, which the card does not guess).
- **2 (date of service, policy)** and **3 (date of service, clinical)**: the units of every line
  of the code on the date of service, summed over the patient's visits of that date (all
  disciplines). No suggestion: which line to cut is not mechanical (2: no higher value is
  payable; 3: payable on appeal with documentation).

A "line" is a charge (draft ServiceRequest or Claim item, not cancelled) with units; when no
charge of the code states units, each Procedure's billed units (the billing extension) are one
line, as in :func:`plugin.rules.billing.billing_lines`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fhir_mappings.model import TherapyVisit
from plugin.rules.billing import NOT_BILLED_STATUSES
from plugin.rules.catalogue import RuleId
from plugin.rules.cms_data import MueTable
from plugin.rules.findings import Finding, FindingFacts, Fix, make_finding
from plugin.rules.units import plural_units


def unit_lines(visit: TherapyVisit) -> dict[str, list[tuple[str, int]]]:
    """Per code, the visit's billed lines as ``(reference, units)``."""
    by_charge: dict[str, list[tuple[str, int]]] = {}
    for c in visit.charges:
        if c.units is None or (c.status and c.status.lower() in NOT_BILLED_STATUSES):
            continue
        by_charge.setdefault(c.code, []).append((c.ref, c.units))
    lines = dict(by_charge)
    for s in visit.services:
        if s.billed_units is not None and s.code not in by_charge:
            lines.setdefault(s.code, []).append((s.ref, s.billed_units))
    return lines


_MAI = {2: "date-of-service edit, policy", 3: "date-of-service edit, clinical"}


def mue_findings(
    visit: TherapyVisit, same_day: Sequence[TherapyVisit], table: MueTable
) -> tuple[Finding, ...]:
    """E-MUE-EXCEEDED for ``visit`` under ``table``; ``same_day``: the patient's other visits
    of the date (their lines count toward date-of-service MUEs)."""
    lines = unit_lines(visit)
    if not lines:
        return ()
    others: dict[str, int] = {}
    for other in same_day:
        for code, found in unit_lines(other).items():
            others[code] = others.get(code, 0) + sum(units for _, units in found)
    on = visit.service_date.isoformat()
    name = table.file.name
    findings = []
    for code in sorted(lines):
        edit = table.get(code)
        if edit is None:
            continue
        if edit.per_line:
            over = [(ref, units) for ref, units in lines[code] if units > edit.value]
            if not over:
                continue
            most = max(units for _, units in over)
            where = (
                f"{plural_units(most)} billed on one line"
                if len(over) == 1
                else f"{len(over)} lines billed with up to {plural_units(most)}"
            )
            findings.append(
                make_finding(
                    RuleId.E_MUE_EXCEEDED,
                    codes=(code,),
                    resources=[ref for ref, _ in over],
                    message=(
                        f"{code} on {on}: {where}, over the MUE of"
                        f" {edit.value} per line (MUE adjudication indicator 1, line edit; CMS"
                        f" MUE table {name}); units over it are denied. Bill {edit.value} on the"
                        " line; medically necessary units beyond it go on another line with an"
                        " appropriate modifier."
                    ),
                    facts=FindingFacts(units_allowed=edit.value, units_billed=most, detail="line"),
                    fixes=tuple(
                        Fix(line_code=code, charge_refs=(ref,), set_units=edit.value)
                        for ref, _ in over
                    ),
                )
            )
            continue
        own = sum(units for _, units in lines[code])
        total = own + others.get(code, 0)
        if total <= edit.value:
            continue
        across = f" ({own} on this visit)" if total != own else ""
        outcome = (
            "CMS pays no higher value"
            if edit.indicator == 2
            else "units over it are paid only on appeal with documentation"
        )
        findings.append(
            make_finding(
                RuleId.E_MUE_EXCEEDED,
                codes=(code,),
                resources=[ref for ref, _ in lines[code]],
                message=(
                    f"{code} on {on}: {plural_units(total)} billed on the date of service"
                    f"{across}, over the MUE of {edit.value} per date of service (MUE"
                    f" adjudication indicator {edit.indicator}, {_MAI[edit.indicator]}; CMS MUE"
                    f" table {name}): the day's lines are summed and {outcome}. Review the"
                    " units of the day's lines."
                ),
                facts=FindingFacts(
                    units_allowed=edit.value, units_billed=total, detail="date-of-service"
                ),
            )
        )
    return tuple(findings)
