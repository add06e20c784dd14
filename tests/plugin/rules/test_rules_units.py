"""Unit math: R-B3 table, CMS ch. 5 §20.2 Examples 1-5, R-B5, R-B10 and AMA vs CMS (R-C2)."""

from __future__ import annotations

import pytest

from plugin.rules import ama_units, cms_allocations, units

CLM = "CMS Pub. 100-04 ch. 5 §20.2"


@pytest.mark.parametrize(
    ("minutes", "expected", "source"),
    [
        (0, 0, "R-B3: no billing under 8 minutes"),
        (7, 0, "R-B3 boundary 7/8 (S1c First Coast table)"),
        (8, 1, "R-B3 boundary 7/8"),
        (22, 1, "R-B3 boundary 22/23"),
        (23, 2, "R-B3 boundary 22/23"),
        (37, 2, "R-B3 boundary 37/38"),
        (38, 3, "R-B3 boundary 37/38"),
        (52, 3, "R-B3 3 units through 52"),
        (53, 4, "R-B3 4 units from 53 (Example 4 text)"),
        (67, 4, "R-B3"),
        (68, 5, "R-B3"),
        (82, 5, "R-B3"),
        (83, 6, "R-B3"),
        (97, 6, "R-B3"),
        (98, 7, "R-B3"),
        (112, 7, "R-B3"),
        (113, 8, "R-B3"),
        (127, 8, "R-B3"),
        (128, 9, "R-B3: the pattern continues past 2 hours"),
        (-5, 0, "defensive: negative minutes give nothing"),
    ],
)
def test_units_table(minutes: int, expected: int, source: str) -> None:
    assert units(minutes) == expected, source


@pytest.mark.parametrize(
    ("minutes", "expected", "source"),
    [
        (
            {"97112": 24, "97110": 23},
            [{"97110": 1, "97112": 2}],
            f"{CLM} Example 1 (S1b findacode verbatim): 47 min = 3 units, 2 x 97112 + 1 x 97110",
        ),
        (
            {"97112": 20, "97110": 20},
            [{"97110": 2, "97112": 1}, {"97110": 1, "97112": 2}],
            f"{CLM} Example 2 (S1b): 40 min = 3 units, either code 2 units (tie)",
        ),
        (
            {"97110": 33, "97140": 7},
            [{"97110": 2, "97140": 1}],
            f"{CLM} Example 3 (S1b, S1d): remaining 3 min of 97110 vs 7 min of 97140",
        ),
        (
            {"97110": 18, "97140": 13, "97116": 10, "97035": 8},
            [{"97035": 0, "97110": 1, "97116": 1, "97140": 1}],
            f"{CLM} Example 4 (S1b, S1e): 49 min = 3 units, ultrasound documented not billed",
        ),
        (
            {"97112": 7, "97110": 7, "97140": 7},
            [
                {"97110": 1, "97112": 0, "97140": 0},
                {"97110": 0, "97112": 1, "97140": 0},
                {"97110": 0, "97112": 0, "97140": 1},
            ],
            f"{CLM} Example 5 (minutes UNCONFIRMED: not in a retrieved quote, see"
            " billing-sources): 21 min = 1 unit, 'select one appropriate CPT code'",
        ),
        (
            {"97112": 8, "97110": 8},
            [{"97110": 1, "97112": 0}, {"97110": 0, "97112": 1}],
            "NCCI Policy Manual ch. I via S5 (R-B10): 8 + 8 minutes = one unit only",
        ),
        (
            {"97110": 5, "97140": 4},
            [{"97110": 1, "97140": 0}],
            "R-B5 (S1a): two services of 7 min or less totalling >= 8 -> one unit, most minutes",
        ),
        (
            {"97110": 4, "97140": 3},
            [{"97110": 0, "97140": 0}],
            "R-B3: total under 8 minutes -> nothing billable",
        ),
        (
            {"97140": 10, "97530": 15},
            [{"97140": 1, "97530": 1}],
            "CMS modifier-59 Example 9 split block (S7): 10 + 5 min 97140 and 15 min 97530",
        ),
        (
            {"97140": 15, "97530": 15},
            [{"97140": 1, "97530": 1}],
            "CMS modifier-59 Example 9 (S7): distinct 15-minute blocks",
        ),
        (
            {"97110": 30, "97140": 15},
            [{"97110": 2, "97140": 1}],
            "R-B4: every code keeps floor(m/15) units; no remainder to place",
        ),
        (
            {"97110": 52, "97530": 16},
            [{"97110": 4, "97530": 1}],
            "R-C2 contrast (CMS side): 52 + 16 = 68 min = 5 units",
        ),
    ],
)
def test_cms_allocations(
    minutes: dict[str, int], expected: list[dict[str, int]], source: str
) -> None:
    result = [dict(a) for a in cms_allocations(minutes)]
    assert result == expected, source
    for allocation in result:
        assert sum(allocation.values()) == units(sum(minutes.values())), "R-B7 hard cap"


@pytest.mark.parametrize(
    ("minutes", "cms_total", "ama", "source"),
    [
        (
            {"97110": 7, "97140": 7},
            1,
            {"97110": 0, "97140": 0},
            "R-C2: 7 + 7 = 0 units (CMS 1, R-B5)",
        ),
        (
            {"97112": 24, "97110": 23},
            3,
            {"97110": 2, "97112": 2},
            "R-C2: 24 + 23 = 4 units (CMS gives 3)",
        ),
        (
            {"97110": 52, "97530": 16},
            5,
            {"97110": 3, "97530": 1},
            "R-C2: 52 + 16 = 4 units (CMS gives 5)",
        ),
        (
            {"97112": 7, "97110": 7, "97140": 7},
            1,
            {"97110": 0, "97112": 0, "97140": 0},
            "R-C2: no pooling of short services (CMS Example 5 gives 1)",
        ),
        ({"97530": 8}, 1, {"97530": 1}, "R-C1: unit 1 at 8 minutes (S15 midpoint rule)"),
        ({"97530": 23}, 2, {"97530": 2}, "R-C1: unit 2 at 23 minutes"),
    ],
)
def test_ama_vs_cms(
    minutes: dict[str, int], cms_total: int, ama: dict[str, int], source: str
) -> None:
    assert dict(ama_units(minutes)) == ama, source
    assert sum(cms_allocations(minutes)[0].values()) == cms_total, source


def test_allocations_are_sorted_and_read_only() -> None:
    allocations = cms_allocations({"97530": 20, "97140": 20})
    assert [list(a) for a in allocations] == [["97140", "97530"]] * 2
    with pytest.raises(TypeError):
        allocations[0]["97140"] = 9  # type: ignore[index]


def test_no_codes_no_units() -> None:
    assert cms_allocations({}) == ({},)
    assert dict(ama_units({})) == {}
