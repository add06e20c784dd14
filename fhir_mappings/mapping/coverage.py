"""Coverage -> :class:`~fhir_mappings.model.CoverageInfo` (issue 15).

Status, beneficiary, period, order, type codings and payer parties (R4 ``payor``, R5
``insurer`` / ``paymentBy.party``), from which the plugin chooses each visit's payer rule.
"""

from __future__ import annotations

from fhir_mappings.mapping.codings import short_name
from fhir_mappings.mapping.context import Item, JsonObject, MappingContext
from fhir_mappings.model import CoverageInfo, PayerParty

#: Caps on what one Coverage contributes (its text ends up in reasons): codings, payer parties
#: and identifiers/names per party.
MAX_ITEMS = 8


def read_coverage(ctx: MappingContext, item: Item) -> CoverageInfo:
    """One Coverage: status, beneficiary, period, order (a positive integer, else reported),
    type codings and payer parties, each list capped at :data:`MAX_ITEMS`."""
    source, _, key, res = item
    loc = source.location
    status = res.get("status")
    start = end = None
    if "period" in res:
        start, end = ctx.period(res["period"], loc, key, "period")
    patient, _ = ctx.subject(res, "beneficiary", loc, key)
    order = res.get("order")
    if order is not None and (type(order) is not int or order < 1):
        ctx.issue(loc, "order is not a positive integer; not used", key, "order")
        order = None
    references: list[object] = []
    for field in ("payor", "paymentBy"):  # R4 payor[], R5 paymentBy[].party
        values = res.get(field)
        if type(values) is list:
            for value in values[:MAX_ITEMS]:
                references.append(
                    value.get("party") if field == "paymentBy" and type(value) is dict else value
                )
    if "insurer" in res:  # R5
        references.append(res["insurer"])
    payers = tuple(p for p in (_payer(ctx, r, key) for r in references[:MAX_ITEMS]) if p)
    types: list[tuple[str, str, str]] = []
    kind = res.get("type")
    codings = kind.get("coding") if type(kind) is dict else None
    if type(codings) is list:
        for coding in codings[:MAX_ITEMS]:
            if type(coding) is dict:
                system, code, display = (
                    coding.get("system"),
                    coding.get("code"),
                    coding.get("display"),
                )
                if type(system) is str and type(code) is str:
                    types.append((system, code, short_name(display)))
    return CoverageInfo(
        ref=key,
        status=status if type(status) is str else None,
        patient=patient,
        start=start[1] if start is not None else None,
        end=end[1] if end is not None else None,
        order=order,
        payers=payers,
        types=tuple(types),
    )


def _payer(ctx: MappingContext, value: object, key: str) -> PayerParty | None:
    """The party a payer reference names, with what its Organization (when present) adds."""
    if type(value) is not dict:
        return None
    target = ctx.index.of(value, key) if "reference" in value else None
    identifiers: list[str] = []
    names: list[str] = []
    sources: list[JsonObject] = [value]
    if target is not None:
        for _, rtype, found_key, found in ctx.by_type.get("Organization", ()):
            if found_key == target and rtype == "Organization":
                sources.append(found)
                break
    for source in sources:
        raw_ids = source.get("identifier")
        ids = [raw_ids] if type(raw_ids) is dict else raw_ids if type(raw_ids) is list else []
        for ident in ids[:MAX_ITEMS]:
            if type(ident) is dict:
                system, val = ident.get("system"), ident.get("value")
                if type(val) is str and val:
                    identifiers.append(f"{system if type(system) is str else ''}|{val}")
        for field in ("display", "name"):
            name = short_name(source.get(field))
            if name:
                names.append(name)
    if target is None and not identifiers and not names:
        return None
    return PayerParty(reference=target, identifiers=tuple(identifiers), names=tuple(names))
