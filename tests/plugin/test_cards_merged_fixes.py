"""One card, one suggestion: how the fixes of a card's findings are merged for one charge.

Findings of one cause share a card (``plugin.cards.problem_groups``) and its one suggestion
carries every fix. When several of them change the units of the same charge, the suggestion
sets the fewest (each is the most its finding lets the line bill), whatever the order of the
findings; a code replacement still goes before any units change of that line.
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import pytest

from fhir_mappings.writeback import DraftOrders
from plugin.cards import CardOptions, problem_card, problem_groups
from plugin.rules.catalogue import RuleId
from plugin.rules.findings import Finding, FindingFacts, Fix, make_finding

Json = dict[str, Any]
CPT = "http://www.ama-assn.org/go/cpt"


def _draft(ident: str, code: str, units: int) -> Json:
    return {
        "resourceType": "ServiceRequest",
        "id": ident,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": CPT, "code": code}]},
        "quantityQuantity": {"value": units, "unit": "unit"},
        "subject": {"reference": "Patient/p1"},
        "occurrenceDateTime": "2025-03-04",
    }


DRAFTS = DraftOrders(
    {
        "ServiceRequest/chg-0": _draft("chg-0", "97140", 2),
        "ServiceRequest/chg-1": _draft("chg-1", "97530", 2),
    },
    None,
)
OPTIONS = CardOptions(hook_instance="7d1c1f5e-0000-4000-8000-000000000000", drafts=DRAFTS)


def _units(rule: RuleId, codes: tuple[str, ...], *fixes: Fix, detail: str) -> Finding:
    return make_finding(
        rule,
        codes=codes,
        resources=[ref for fix in fixes for ref in fix.charge_refs],
        message=f"{rule.value} about {', '.join(codes)}",
        facts=FindingFacts(detail=detail),
        fixes=fixes,
    )


def _set(code: str, ref: str, units: int) -> Fix:
    return Fix(line_code=code, charge_refs=(f"ServiceRequest/{ref}",), set_units=units)


#: A 97530 sharing a minute with 97140, 2 units billed for each, 23 pooled minutes (2 units in
#: all: 97140 x 2 + 97530 x 0, or 97140 x 1 + 97530 x 1).
SHARED_BLOCK = make_finding(
    RuleId.E_PAIR_SAME_TIMEBLOCK,
    codes=("97140", "97530"),
    resources=("Procedure/proc-1", "Procedure/proc-2"),
    message="97140 and 97530 were documented in the same time block",
    facts=FindingFacts(detail="overlap"),
    fixes=(_set("97530", "chg-1", 1),),
)
CODE_OVER = _units(RuleId.E_UNITS_EXCEED, ("97530",), _set("97530", "chg-1", 1), detail="code")
DAY_OVER = _units(
    RuleId.E_UNITS_EXCEED,
    ("97140", "97530"),
    _set("97530", "chg-1", 0),
    detail="total",
)


def _actions(findings: tuple[Finding, ...]) -> list[tuple[str, str, Any]]:
    """The one card's suggestion, as (action type, charge, units left on it)."""
    (group,) = problem_groups(findings)
    card = problem_card(group, None, OPTIONS)
    (suggestion,) = card.suggestions
    found = []
    for action in suggestion.actions:
        if action.type == "delete":
            assert action.resource_id is not None
            found.append(("delete", action.resource_id, None))
        else:
            assert action.resource is not None
            ref = f"ServiceRequest/{action.resource['id']}"
            found.append((action.type, ref, action.resource["quantityQuantity"]["value"]))
    return found


@pytest.mark.parametrize(
    "order",
    list(permutations((SHARED_BLOCK, CODE_OVER, DAY_OVER))),
    ids=lambda order: "-".join(str(f.facts.detail) for f in order),
)
def test_a_charge_resized_by_several_findings_gets_the_fewest_units(
    order: tuple[Finding, ...],
) -> None:
    # 97530 at 1 (its most, or the pair's) would leave 3 units billed for 2: the day's fix
    # (97530 at 0, the draft removed) is the one that meets all three
    assert _actions(order) == [("delete", "ServiceRequest/chg-1", None)]


def test_units_changes_of_other_charges_are_kept() -> None:
    day = _units(
        RuleId.E_UNITS_EXCEED,
        ("97140", "97530"),
        _set("97140", "chg-0", 1),
        _set("97530", "chg-1", 1),
        detail="total",
    )
    code = _units(RuleId.E_UNITS_EXCEED, ("97140",), _set("97140", "chg-0", 1), detail="code")
    assert _actions((code, day)) == [
        ("update", "ServiceRequest/chg-0", 1),
        ("update", "ServiceRequest/chg-1", 1),
    ]


def test_a_code_replacement_goes_before_a_units_change_of_its_line() -> None:
    group_fix = Fix(
        line_code="97530",
        charge_refs=("ServiceRequest/chg-1",),
        replace_code="97150",
        set_units=1,
    )
    group = make_finding(
        RuleId.E_GROUP_NOT_ONE_ON_ONE,
        codes=("97530",),
        resources=("Procedure/proc-1",),
        message="97530 was delivered to a group",
        fixes=(group_fix,),
    )
    over = _units(RuleId.E_UNITS_EXCEED, ("97530",), _set("97530", "chg-1", 0), detail="code")
    (action,) = _actions((over, group))
    assert action == ("update", "ServiceRequest/chg-1", 1)
