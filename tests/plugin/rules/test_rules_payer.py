"""The payer rule from Coverage (issue 15): the mapping file, the Coverage chosen for a date of
service, the reason, and Coverage as the FHIR mapping reads it (R4 payor, R5 insurer)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_mappings import map_bundle
from fhir_mappings.model import CoverageInfo, PayerParty
from plugin.rules.payer import (
    PayerChoice,
    PayerMappingError,
    covering,
    load_payer_mapping,
    parse_payer_mapping,
    shipped_payer_mapping,
)
from plugin.settings import Settings

SOPT = "https://nahdo.org/sopt"
PATIENT = "Patient/p1"
DAY = date(2025, 3, 24)
MAPPING = parse_payer_mapping(
    """
[[payer]]
label = "Acme PPO"
rule = "ama"
identifiers = ["http://example.org/payer-id|ACME"]

[[payer]]
label = "Beta Health"
rule = "ama"
references = ["Organization/beta"]

[[payer]]
label = "Gamma Mutual"
rule = "ama"
names = ["Gamma Mutual Insurance"]

[[payer]]
label = "Medicare"
rule = "cms"
types = ["https://nahdo.org/sopt|1*"]
""",
    "test mapping",
)


def coverage(
    ref: str = "Coverage/c1",
    *,
    status: str | None = "active",
    patient: str | None = PATIENT,
    start: date | None = None,
    end: date | None = None,
    order: int | None = None,
    types: tuple[tuple[str, str, str], ...] = (),
    payers: tuple[PayerParty, ...] = (),
) -> CoverageInfo:
    return CoverageInfo(
        ref=ref,
        status=status,
        patient=patient,
        start=start,
        end=end,
        order=order,
        types=types,
        payers=payers,
    )


MEDICARE = ((SOPT, "121", "Medicare FFS"),)
ACME = (PayerParty(reference=None, identifiers=("http://example.org/payer-id|ACME",)),)


def decide(*coverages: CoverageInfo, **choice: Any) -> tuple[str, str]:
    decision = PayerChoice(mapping=MAPPING, **choice).decide(coverages, PATIENT, DAY)
    return decision.rule, decision.reason


# ---- mapping by payer identifier, reference, name and Coverage.type


def test_a_payer_identifier_maps_to_its_rule() -> None:
    assert decide(coverage(payers=ACME)) == ("ama", "Acme PPO coverage → AMA per-code rule")


def test_a_payer_reference_and_a_payer_name_map_too() -> None:
    by_ref = coverage(payers=(PayerParty(reference="Organization/beta"),))
    assert decide(by_ref)[1] == "Beta Health coverage → AMA per-code rule"
    by_name = coverage(payers=(PayerParty(names=("GAMMA mutual insurance",)),))
    assert decide(by_name)[1] == "Gamma Mutual coverage → AMA per-code rule"


def test_a_coverage_type_maps_by_code_and_by_prefix() -> None:
    assert decide(coverage(types=MEDICARE)) == ("cms", "Medicare coverage → CMS 8-minute rule")
    # "1*" is Medicare and every code under it, not 2 (Medicaid) nor another system's 1
    assert decide(coverage(types=((SOPT, "2", "MEDICAID"),)))[0] == "cms"  # the default
    assert "not in the payer mapping" in decide(coverage(types=((SOPT, "2", "MEDICAID"),)))[1]
    other_system = coverage(types=(("http://example.org/types", "121", ""),))
    assert "not in the payer mapping" in decide(other_system)[1]


def test_the_first_matching_entry_decides() -> None:
    both = coverage(types=MEDICARE, payers=ACME)  # Acme is listed before Medicare
    assert decide(both) == ("ama", "Acme PPO coverage → AMA per-code rule")


def test_an_unmapped_payer_gets_the_default_and_the_reason_names_it() -> None:
    unknown = coverage(payers=(PayerParty(names=("Delta Plan",)),))
    assert decide(unknown, default="ama") == (
        "ama",
        "Delta Plan coverage not in the payer mapping → default AMA per-code rule",
    )


def test_the_shipped_mapping_sends_medicare_to_cms() -> None:
    shipped = shipped_payer_mapping()
    for code, label in (("121", "Medicare Part B"), ("12", "Medicare Part B")):
        entry = shipped.rule_for(coverage(types=((SOPT, code, ""),)))
        assert entry is not None
        assert (entry.rule, entry.label) == ("cms", label)
    entry = shipped.rule_for(coverage(types=((SOPT, "111", "Medicare HMO"),)))
    assert entry is not None
    assert (entry.rule, entry.label) == ("cms", "Medicare Advantage")
    assert shipped.rule_for(coverage(types=((SOPT, "512", "Commercial PPO"),))) is None
    assert shipped.rule_for(coverage(payers=(PayerParty(names=("medicare",)),))) is not None


# ---- the Coverage of the date of service


def test_only_active_coverage_of_the_patient_covering_the_date_counts() -> None:
    ended = coverage("Coverage/ended", end=date(2025, 3, 23), payers=ACME)
    later = coverage("Coverage/later", start=date(2025, 3, 25), payers=ACME)
    cancelled = coverage("Coverage/cancelled", status="cancelled", payers=ACME)
    someone_else = coverage("Coverage/other", patient="Patient/p2", payers=ACME)
    assert covering([ended, later, cancelled, someone_else], PATIENT, DAY) == []
    rule, reason = decide(ended, later, cancelled, someone_else, default="cms")
    assert (rule, reason) == ("cms", "no active coverage on 2025-03-24 → default CMS 8-minute rule")
    # the period's ends are inclusive
    on_the_day = coverage(start=DAY, end=DAY, types=MEDICARE)
    assert covering([on_the_day], PATIENT, DAY) == [on_the_day]


def test_the_lowest_order_is_primary_and_coverage_without_order_comes_last() -> None:
    secondary = coverage("Coverage/2", order=2, payers=ACME)
    unordered = coverage("Coverage/x", payers=ACME)
    primary = coverage("Coverage/1", order=1, types=MEDICARE)
    assert decide(unordered, secondary, primary) == (
        "cms",
        "Medicare coverage → CMS 8-minute rule",
    )
    assert [c.ref for c in covering([unordered, secondary, primary], PATIENT, DAY)] == [
        "Coverage/1",
        "Coverage/2",
        "Coverage/x",
    ]


def test_on_a_tie_the_first_listed_is_used_and_the_reason_says_so() -> None:
    first = coverage("Coverage/a", order=1, payers=ACME)
    second = coverage("Coverage/b", order=1, types=MEDICARE)
    rule, reason = decide(first, second)
    assert rule == "ama"
    assert reason == (
        "Acme PPO coverage (several coverages of the same order: the first listed)"
        " → AMA per-code rule"
    )


def test_an_override_or_unread_coverage_leaves_the_default() -> None:
    assert decide(coverage(payers=ACME), default="cms", override="request extension") == (
        "cms",
        "request extension → CMS 8-minute rule",
    )
    assert decide(default="ama", unread="coverage could not be read (the FHIR search failed)") == (
        "ama",
        "coverage could not be read (the FHIR search failed) → default AMA per-code rule",
    )


# ---- the mapping file


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[[payer]\n", "not valid TOML"),
        ("payers = 1\n", "unknown top-level key(s) payers"),
        ('[[payer]]\nlabel = "x"\nrule = "medicare"\ntypes = ["a|b"]\n', "'rule' must be"),
        ('[[payer]]\nlabel = "x"\nrule = "cms"\n', "give at least one of"),
        ('[[payer]]\nlabel = "x"\nrule = "cms"\ntypes = ["121"]\n', "'system|code'"),
        ('[[payer]]\nlabel = "x"\nrule = "cms"\ntypes = "a|b"\n', "must be a list"),
        ('[[payer]]\nlabel = "x"\nrule = "cms"\ntypes = ["a|*"]\n', "needs a code before"),
        ('[[payer]]\nlabel = "x"\nrule = "cms"\nname = ["a"]\n', "unknown key(s) name"),
        ('[[payer]]\nrule = "cms"\nnames = ["a"]\n', "'label' must be"),
    ],
)
def test_a_bad_mapping_file_is_refused_saying_where(text: str, said: str, tmp_path: Path) -> None:
    path = tmp_path / "payers.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PayerMappingError) as caught:
        load_payer_mapping(path)
    assert said in str(caught.value)
    assert str(path) in str(caught.value)


def test_the_setting_is_validated_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "payers.toml"
    path.write_text('[[payer]]\nlabel = "x"\nrule = "xyz"\nnames = ["a"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"THERAPY_CDS_PAYER_RULES_FILE: .*'rule' must be"):
        Settings(dev_mode=True, payer_rules_file=path)
    with pytest.raises(ValueError, match="cannot be read"):
        Settings(dev_mode=True, payer_rules_file=tmp_path / "missing.toml")
    path.write_text('[[payer]]\nlabel = "x"\nrule = "ama"\nnames = ["a"]\n', encoding="utf-8")
    loaded = Settings(dev_mode=True, payer_rules_file=path).payer_mapping()
    assert [e.label for e in loaded.entries] == ["x"]
    assert Settings(dev_mode=True).payer_mapping() is shipped_payer_mapping()


# ---- Coverage as the mapping reads it


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def test_r4_coverage_with_its_organization_is_read() -> None:
    record = map_bundle(
        _bundle(
            {
                "resourceType": "Organization",
                "id": "acme",
                "name": "Acme Health",
                "identifier": [{"system": "http://example.org/payer-id", "value": "ACME"}],
            },
            {
                "resourceType": "Coverage",
                "id": "c1",
                "status": "active",
                "beneficiary": {"reference": "Patient/p1"},
                "period": {"start": "2025-01-01", "end": "2025-12-31T23:59:59-05:00"},
                "order": 2,
                "type": {"coding": [{"system": SOPT, "code": "512", "display": "PPO"}]},
                "payor": [{"reference": "Organization/acme"}],
            },
        )
    )
    (found,) = record.coverages
    assert (found.ref, found.status, found.patient, found.order) == (
        "Coverage/c1",
        "active",
        "Patient/p1",
        2,
    )
    assert (found.start, found.end) == (date(2025, 1, 1), date(2025, 12, 31))
    assert found.types == ((SOPT, "512", "PPO"),)
    assert found.payers == (
        PayerParty(
            reference="Organization/acme",
            identifiers=("http://example.org/payer-id|ACME",),
            names=("Acme Health",),
        ),
    )
    assert PayerChoice(mapping=MAPPING).decide(record.coverages, PATIENT, DAY).rule == "ama"


def test_r5_insurer_and_payment_by_are_the_payers_and_a_bad_order_is_not_used() -> None:
    record = map_bundle(
        _bundle(
            {
                "resourceType": "Coverage",
                "id": "c5",
                "status": "active",
                "kind": "insurance",
                "beneficiary": {"reference": "Patient/p1"},
                "order": 0,
                "insurer": {"display": "Gamma Mutual Insurance"},
                "paymentBy": [{"party": {"reference": "Organization/beta"}}],
            }
        )
    )
    (found,) = record.coverages
    assert found.order is None
    assert any(i.field == "order" for i in record.issues)
    assert {p.reference for p in found.payers} == {"Organization/beta", None}
    assert ("Gamma Mutual Insurance",) in [p.names for p in found.payers]


def test_a_coverage_of_another_patient_is_left_out_with_a_patient_in_context() -> None:
    from fhir_mappings import map_cds_hooks

    other = {
        "resourceType": "Coverage",
        "id": "c9",
        "status": "active",
        "beneficiary": {"reference": "Patient/p2"},
        "payor": [{"display": "Acme"}],
    }
    record = map_cds_hooks(None, {"coverage": _bundle(other)}, patient_id="p1")
    assert record.coverages == ()
    assert record.other_patient_resources == 1


def test_payer_names_are_cut_and_lists_capped() -> None:
    long_name = "N" * 500
    record = map_bundle(
        _bundle(
            {
                "resourceType": "Coverage",
                "id": "c1",
                "status": "active",
                "beneficiary": {"reference": "Patient/p1"},
                "payor": [{"display": long_name}] * 50,
                "type": {"coding": [{"system": SOPT, "code": str(i)} for i in range(50)]},
            }
        )
    )
    (found,) = record.coverages
    assert len(found.payers) <= 8
    assert len(found.types) <= 8
    assert all(len(n) <= 80 for p in found.payers for n in p.names)
