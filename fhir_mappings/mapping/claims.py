"""Claim and ExplanationOfBenefit items -> :class:`~fhir_mappings.model.Charge` (``CLAIM``).

Items coded in CPT or HCPCS are charges, linked to Procedures through
``Claim.procedure[].procedureReference`` + ``item.procedureSequence`` (R-H7); the linked lines
are kept in ``ctx.claim_lines`` for the Procedures they bill.
"""

from __future__ import annotations

from fhir_mappings.mapping.codings import billing_coding, modifier_codes
from fhir_mappings.mapping.context import ClaimLine, Item, MappingContext
from fhir_mappings.model import Charge, ChargeSource

_CLAIM = ChargeSource.CLAIM


def read_claim(ctx: MappingContext, item: Item) -> None:
    """Claim or ExplanationOfBenefit items -> charges; remember lines linked to Procedures."""
    source, _, key, res = item
    loc = source.location
    items = res.get("item")
    if not isinstance(items, list):
        ctx.out_of_scope += 1
        return
    procedure_by_sequence: dict[int, str] = {}
    procedures = res.get("procedure")
    if isinstance(procedures, list):
        for position, procedure in enumerate(procedures, start=1):
            if not isinstance(procedure, dict):
                continue
            sequence = procedure.get("sequence", position)
            ref = ctx.index.of(procedure.get("procedureReference"), key)
            if isinstance(sequence, int) and ref is not None:
                procedure_by_sequence[sequence] = ref
    patient, _ = ctx.subject(res, "patient", loc, key)
    status = res.get("status")
    found_any = False
    for position, line in enumerate(items, start=1):
        if not isinstance(line, dict):
            continue
        sequence = line.get("sequence")
        if type(sequence) is not int:
            sequence = position
        field = f"item[{position - 1}]"
        coding = billing_coding(
            ctx, line.get("productOrService"), loc, key, f"{field}.productOrService"
        )
        if coding is None:
            continue
        found_any = True
        system, code_value, _ = coding
        modifier_codings: list[object] = []
        modifiers = line.get("modifier")
        if isinstance(modifiers, list):
            for concept in modifiers:
                if isinstance(concept, dict) and isinstance(concept.get("coding"), list):
                    modifier_codings.extend(concept["coding"])
        line_modifiers = tuple(
            modifier_codes(
                ctx, modifier_codings, loc, key, f"{field}.modifier", allow_no_system=True
            )
        )
        quantity = line.get("quantity")
        units = (
            ctx.units(quantity.get("value"), loc, key, f"{field}.quantity.value")
            if isinstance(quantity, dict)
            else None
        )
        service_date = None
        if "servicedDate" in line:
            point = ctx.point(line["servicedDate"], loc, key, f"{field}.servicedDate")
            service_date = point[1] if point is not None else None
        elif "servicedPeriod" in line:
            start, _ = ctx.period(line["servicedPeriod"], loc, key, f"{field}.servicedPeriod")
            service_date = start[1] if start is not None else None
        linked: list[str] = []
        sequences = line.get("procedureSequence")
        if isinstance(sequences, list):
            for number in sequences:
                target = procedure_by_sequence.get(number) if isinstance(number, int) else None
                if target is None:
                    ctx.issue(
                        loc,
                        "procedureSequence names no Claim.procedure with a procedureReference",
                        key,
                        f"{field}.procedureSequence",
                    )
                elif target not in linked:
                    linked.append(target)
        ref = f"{key}#item-{sequence}"
        ctx.charges.append(
            Charge(
                ref=ref,
                source=_CLAIM,
                code=code_value,
                system=system,
                units=units,
                modifiers=line_modifiers,
                patient=patient,
                service_date=service_date,
                status=status if isinstance(status, str) else None,
                procedure_refs=tuple(linked),
            )
        )
        for target in linked:
            ctx.claim_lines.setdefault(target, []).append(
                ClaimLine(ref=ref, code=code_value, modifiers=line_modifiers, units=units)
            )
    if not found_any:
        ctx.out_of_scope += 1
