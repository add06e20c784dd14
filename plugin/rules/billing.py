"""Billing lines: what the visit bills per code (units and modifiers), from charges or services.

A "line" is one code on the visit. Its modifiers are the union over that code's charges and its
services' billing modifiers (I-4.4); its billed units come from the visit's charges for the code
when any carries units, else from the services' ``billed_units`` (I-3). Charges that were
cancelled are not billed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fhir_mappings.codes import CODE_LIST
from fhir_mappings.model import Charge, Discipline, TherapyVisit, TimedService

NCCI_MODIFIERS: frozenset[str] = CODE_LIST.ncci_modifiers
"""NCCI-associated modifiers that may bypass a PTP edit with indicator 1 (R-D1, R-D4)."""

X_MODIFIERS: frozenset[str] = NCCI_MODIFIERS - {"59"}
"""XE, XS, XP, XU (R-D4)."""

DISCIPLINE_MODIFIERS: Mapping[Discipline, str] = MappingProxyType(
    {d: m for m, d in sorted(CODE_LIST.discipline_modifiers.items())}
)
"""R-G1: the therapy plan-of-care modifier of each discipline (GP, GO, GN)."""

NOT_BILLED_STATUSES = frozenset({"entered-in-error", "revoked", "cancelled"})
"""Charge statuses that bill nothing."""


@dataclass(slots=True)
class BillingLine:
    """One code as billed on the visit (a working value of the rules: built once, not changed)."""

    code: str
    charge_refs: tuple[str, ...]  # charges for the code (sorted)
    service_refs: tuple[str, ...]  # services documenting the code (sorted)
    modifiers: frozenset[str]
    billed_units: int | None  # None: nothing says how many units are billed
    units_from_charges: bool

    @property
    def fix_refs(self) -> tuple[str, ...]:
        """Where a fix lands: the charges, else the Procedures when they carry the billing."""
        return self.charge_refs if self.charge_refs else self.service_refs

    @property
    def has_billing(self) -> bool:
        """Anything billed for this code (a charge, billed units or a modifier)."""
        return bool(self.charge_refs) or self.billed_units is not None or bool(self.modifiers)


def normalise_modifier(modifier: str) -> str:
    """Modifiers compare case-insensitively and without surrounding blanks."""
    return modifier.strip().upper()


def billing_lines(visit: TherapyVisit) -> Mapping[str, BillingLine]:
    """Every code documented or charged on ``visit``, with its billed units and modifiers."""
    services_by_code: dict[str, list[TimedService]] = {}
    for s in visit.services:
        services_by_code.setdefault(s.code, []).append(s)
    charges_by_code: dict[str, list[Charge]] = {}
    for c in visit.charges:
        if c.status and c.status.lower() in NOT_BILLED_STATUSES:
            continue
        charges_by_code.setdefault(c.code, []).append(c)
    lines: dict[str, BillingLine] = {}
    for code in sorted(services_by_code.keys() | charges_by_code.keys()):
        code_charges = charges_by_code.get(code, ())
        code_services = services_by_code.get(code, ())
        modifiers = {normalise_modifier(m) for c in code_charges for m in c.modifiers}
        modifiers.update(normalise_modifier(m) for s in code_services for m in s.modifiers)
        modifiers.discard("")
        charge_units = [c.units for c in code_charges if c.units is not None]
        billed: int | None
        if charge_units:
            billed = sum(charge_units)
        else:
            service_units = [s.billed_units for s in code_services if s.billed_units is not None]
            billed = sum(service_units) if service_units else None
        lines[code] = BillingLine(
            code=code,
            charge_refs=_sorted_refs([c.ref for c in code_charges]),
            service_refs=_sorted_refs([s.ref for s in code_services]),
            modifiers=frozenset(modifiers),
            billed_units=billed,
            units_from_charges=bool(charge_units),
        )
    return MappingProxyType(lines)


def _sorted_refs(refs: list[str]) -> tuple[str, ...]:
    """``tuple(sorted(set(refs)))``, without the set for the common single reference."""
    if len(refs) < 2:
        return tuple(refs)
    return tuple(sorted(set(refs)))
