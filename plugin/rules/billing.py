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
from fhir_mappings.model import DeliveryMode, Discipline, TherapyVisit
from plugin.rules.code_catalog import CodeCatalog

NCCI_MODIFIERS: frozenset[str] = CODE_LIST.ncci_modifiers
"""NCCI-associated modifiers that may bypass a PTP edit with indicator 1 (R-D1, R-D4)."""

X_MODIFIERS: frozenset[str] = NCCI_MODIFIERS - {"59"}
"""XE, XS, XP, XU (R-D4)."""

DISCIPLINE_MODIFIERS: Mapping[Discipline, str] = MappingProxyType(
    {d: m for m, d in sorted(CODE_LIST.discipline_modifiers.items())}
)
"""R-G1: the therapy plan-of-care modifier of each discipline (GP, GO, GN)."""

_NOT_BILLED_STATUSES = frozenset({"entered-in-error", "revoked", "cancelled"})


@dataclass(frozen=True, slots=True)
class BillingLine:
    """One code as billed on the visit."""

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
    codes = {s.code for s in visit.services}
    charges = [c for c in visit.charges if (c.status or "").lower() not in _NOT_BILLED_STATUSES]
    codes.update(c.code for c in charges)
    lines: dict[str, BillingLine] = {}
    for code in sorted(codes):
        code_charges = [c for c in charges if c.code == code]
        code_services = [s for s in visit.services if s.code == code]
        modifiers = {normalise_modifier(m) for c in code_charges for m in c.modifiers}
        modifiers.update(normalise_modifier(m) for s in code_services for m in s.modifiers)
        charge_units = [c.units for c in code_charges if c.units is not None]
        service_units = [s.billed_units for s in code_services if s.billed_units is not None]
        billed: int | None
        if charge_units:
            billed = sum(charge_units)
        elif service_units:
            billed = sum(service_units)
        else:
            billed = None
        lines[code] = BillingLine(
            code=code,
            charge_refs=tuple(sorted({c.ref for c in code_charges})),
            service_refs=tuple(sorted({s.ref for s in code_services})),
            modifiers=frozenset(m for m in modifiers if m),
            billed_units=billed,
            units_from_charges=bool(charge_units),
        )
    return MappingProxyType(lines)


def billable_codes(visit: TherapyVisit, codes: CodeCatalog) -> frozenset[str]:
    """Codes documented or charged on ``visit``, leaving out one-on-one codes delivered to a
    group (billed as 97150 instead, R-F2, I-2.6); the codes PTP edits are looked up for."""
    present = {
        s.code
        for s in visit.services
        if not (
            codes.is_one_on_one(s.code)
            and (s.delivery_mode is DeliveryMode.GROUP or s.subject_is_group)
        )
    }
    present.update(
        c.code for c in visit.charges if (c.status or "").lower() not in _NOT_BILLED_STATUSES
    )
    return frozenset(present)
