"""``fast_builder``: the quick constructors of the mapper and the rules build the very values
the classes build."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest

from fhir_mappings.model import (
    Charge,
    ChargeSource,
    DeliveryMode,
    Discipline,
    EncounterInfo,
    MappingIssue,
    PlanOfCare,
    TherapyRecord,
    TherapyVisit,
    TimedService,
    TimingKind,
    fast_builder,
)
from plugin.rules import (
    Finding,
    FindingFacts,
    Fix,
    PairResult,
    RuleId,
    Severity,
    VisitAnalysis,
    analyze_visit,
)
from plugin.rules.findings import new_finding_facts, new_fix

START = datetime(2025, 3, 4, 14, 0, tzinfo=UTC)

SERVICE_ARGS: tuple[Any, ...] = (
    "Procedure/p1",
    "97530",
    "http://www.ama-assn.org/go/cpt",
    "completed",
    TimingKind.PERIOD,
    START,
    START.replace(minute=20),
    date(2025, 3, 4),
    False,
    "Patient/P1",
    "Encounter/E1",
)


def same(built: object, expected: object) -> None:
    assert type(built) is type(expected)
    assert built == expected
    if not isinstance(expected, TherapyRecord):  # a record holds dicts: not hashable
        assert hash(built) == hash(expected)
    assert repr(built) == repr(expected)
    assert pickle.loads(pickle.dumps(built)) == expected
    assert copy.deepcopy(built) == expected


def test_positional_and_keyword_arguments_and_defaults() -> None:
    build = fast_builder(TimedService)
    same(build(*SERVICE_ARGS), TimedService(*SERVICE_ARGS))
    extra = {"performers": ("Practitioner/T1",), "delivery_mode": DeliveryMode.GROUP}
    same(build(*SERVICE_ARGS, **extra), TimedService(*SERVICE_ARGS, **extra))
    built = build(*SERVICE_ARGS, billed_units=2)
    assert built.minutes == 20
    same(
        dataclasses.replace(built, code="97110"),
        dataclasses.replace(TimedService(*SERVICE_ARGS, billed_units=2), code="97110"),
    )


def test_every_mapped_class() -> None:
    same(
        fast_builder(Charge)("Claim/c1#item-1", ChargeSource.CLAIM, "97110", "x", 1),
        Charge("Claim/c1#item-1", ChargeSource.CLAIM, "97110", "x", 1),
    )
    same(
        fast_builder(PlanOfCare)("CarePlan/cp", "CarePlan", "active", None, None),
        PlanOfCare("CarePlan/cp", "CarePlan", "active", None, None),
    )
    same(
        fast_builder(EncounterInfo)("Encounter/E1", None, START, None, START.date()),
        EncounterInfo("Encounter/E1", None, START, None, START.date()),
    )
    same(
        fast_builder(MappingIssue)("entry[0]", "m", field="f"),
        MappingIssue("entry[0]", "m", field="f"),
    )


def test_default_factories_give_each_value_its_own_object() -> None:
    build = fast_builder(TherapyRecord)
    first, second = build(None), build(None)
    same(first, TherapyRecord(None))
    assert first.plans is not second.plans


def test_built_values_stay_frozen() -> None:
    built = fast_builder(TimedService)(*SERVICE_ARGS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.code = "97110"  # type: ignore[misc]
    with pytest.raises(TypeError):
        fast_builder(TimedService)(*SERVICE_ARGS[:3])  # missing arguments fail as in the class


def test_refuses_classes_it_cannot_build_faithfully() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    @dataclass(frozen=True, slots=True, weakref_slot=True)
    class WithWeakref:
        a: int = field(default=0)

    for cls in (NoSlots, NotFrozen, Checked, WithWeakref, dict):
        with pytest.raises(TypeError):
            fast_builder(cls)


def test_the_rules_classes_with_defaults_and_a_default_factory() -> None:
    same(new_fix("97530"), Fix("97530"))
    fix = {"line_code": "97530", "charge_refs": ("Claim/c1#item-1",), "set_units": 1}
    same(new_fix(**fix), Fix(**fix))
    same(new_finding_facts(), FindingFacts())
    same(
        new_finding_facts(3, units_billed=2, detail="x"),
        FindingFacts(3, units_billed=2, detail="x"),
    )
    build = fast_builder(Finding)
    args = (RuleId.W_NO_REASON, Severity.WARNING, ("97530",), ("Procedure/p1",), "m")
    first, second = build(*args), build(*args)
    same(first, Finding(*args))
    assert first.facts is not second.facts  # the default factory runs for each value
    same(build(*args, fixes=(Fix("97530"),)), Finding(*args, fixes=(Fix("97530"),)))


def test_every_value_of_a_visit_analysis_rebuilds_equal() -> None:
    charge = Charge("Claim/c1#item-1", ChargeSource.CLAIM, "97530", "x", 3)
    service = TimedService(*SERVICE_ARGS)
    visit = TherapyVisit("Patient/P1", date(2025, 3, 4), Discipline.PT, (service,), (charge,))
    analysis = analyze_visit(visit)
    values: list[Any] = [analysis, analysis.pair, *analysis.findings]
    values += [part for f in analysis.findings for part in (f.facts, *f.fixes)]
    assert {type(v) for v in values} == {VisitAnalysis, PairResult, Finding, FindingFacts, Fix}
    for value in values:
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        same(fast_builder(type(value))(**fields), type(value)(**fields))
        same(value, type(value)(**fields))  # what the rules built equals what the class builds
