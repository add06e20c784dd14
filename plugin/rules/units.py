"""Timed-code units: the CMS 8-minute rule, the AMA midpoint rule, and the unit findings.

Pure unit math: :func:`units` (R-B3 / R-C1), :func:`cms_allocations` (R-B2..R-B8, all tied
allocations, R-B6) and :func:`ama_units` (R-C2). :func:`assess_units` applies them to one visit
after group exclusion (I-2.6) and interval attribution (R-F4, I-2.7) and reports
E-GROUP-NOT-ONE-ON-ONE, W-OVERLAP, I-COMBINE-LINES, W-MIN-UNDER-8, W-CODE-ZERO-UNITS, I-TIE and
E-UNITS-EXCEED (I-3).

POLICY details: with tied allocations, W-CODE-ZERO-UNITS is raised only for a code that gets 0
units in every allocation still in play (the billed one when it is acceptable, else all), so a
tie is reported as I-TIE, not as "do not bill". A total E-UNITS-EXCEED is raised only when the
billed units still exceed the cap after each code is cut to its own maximum, so it never just
repeats a per-code finding. Timing findings (W-MISSING-END ...) are raised for timed codes only:
an untimed code's units do not depend on its minutes.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from fhir_mappings.model import TimedService
from plugin.rules.billing import BillingLine
from plugin.rules.catalogue import RuleId
from plugin.rules.counts import CodeCounts
from plugin.rules.findings import Finding, FindingFacts, Fix, make_finding
from plugin.rules.intervals import (
    Overlap,
    SpanAttribution,
    attribute_spans,
    describe_minutes,
    whole_minutes,
)
from plugin.rules.view import VisitView
from plugin.rules.vocabulary import PayerRule

Allocation = CodeCounts
GROUP_CODE = "97150"


def units(total_minutes: int) -> int:
    """Units for a number of timed minutes: 0 under 8, then one per 15 from 8 (R-B3, R-C1)."""
    return 0 if total_minutes < 8 else (total_minutes + 7) // 15


def cms_allocations(minutes: Mapping[str, int]) -> tuple[Allocation, ...]:
    """Every acceptable CMS allocation of the day's timed units to codes (R-B2..R-B8).

    ``N = units(sum of minutes)``; each code gets ``minutes // 15`` (R-B4); the remaining
    ``N - sum`` units go one each to the codes with the largest remainders ``minutes % 15``
    (R-B5, R-B6 step 3). When remainders tie at the cut, every choice among the tied codes is
    acceptable (R-B6 step 4) and all are returned, ordered by the tuple of codes that receive
    the extra unit. Each allocation sums to exactly ``N`` (R-B7).
    """
    codes = sorted(minutes)
    total = sum(minutes[c] for c in codes)
    base = {c: minutes[c] // 15 for c in codes}
    remaining = units(total) - sum(base.values())
    if remaining <= 0:
        return (CodeCounts.from_sorted(base),)
    by_remainder = sorted(codes, key=lambda c: (-(minutes[c] % 15), c))
    cut = minutes[by_remainder[remaining - 1]] % 15
    sure = [c for c in codes if minutes[c] % 15 > cut]
    tied = [c for c in codes if minutes[c] % 15 == cut]
    result: list[Allocation] = []
    for extra in combinations(tied, remaining - len(sure)):
        allocation = dict(base)
        for c in (*sure, *extra):
            allocation[c] += 1
        result.append(CodeCounts.from_sorted(allocation))
    return tuple(result)


def ama_units(minutes: Mapping[str, int]) -> Allocation:
    """AMA / CPT midpoint rule: each code counted on its own, no pooling, no cap (R-C2)."""
    return CodeCounts({code: units(m) for code, m in minutes.items()})


def allocations_for(minutes: Mapping[str, int], payer_rule: PayerRule) -> tuple[Allocation, ...]:
    """The acceptable allocations under the payer's unit rule (R-B6 or R-C2)."""
    if payer_rule == PayerRule.AMA:
        return (ama_units(minutes),)
    return cms_allocations(minutes)


@dataclass(slots=True)
class UnitAssessment:
    """Minutes and units of one visit (I-2.6 .. I-3); a working value, not changed once built."""

    payer_rule: PayerRule
    raw_minutes: CodeCounts  # documented minutes per timed code, before attribution
    minutes: CodeCounts  # attributed minutes per timed code (same keys)
    total_timed_minutes: int
    units_allowed_total: int
    allocations: tuple[Allocation, ...]  # every acceptable allocation
    chosen: tuple[Allocation, ...]  # those consistent with the billed units (else all)
    counted: tuple[TimedService, ...]  # timed services whose minutes count
    group_excluded: tuple[TimedService, ...]
    overlaps: tuple[Overlap, ...]  # at most intervals.LISTED_OVERLAPS, in time order
    findings: tuple[Finding, ...]

    @property
    def units(self) -> Allocation:
        """The allocation reported as ``units``: the billed one when it is acceptable."""
        return self.chosen[0]

    def max_allowed(self, code: str) -> int:
        """The most units any acceptable allocation gives ``code``."""
        return max(a.get(code, 0) for a in self.allocations)


def plural_units(n: int) -> str:
    """``"1 unit"`` / ``"2 units"`` for messages."""
    return f"{n} unit" if n == 1 else f"{n} units"


def _describe(allocation: Allocation) -> str:
    return " + ".join(f"{code} x {n}" for code, n in allocation.items())


def assess_units(
    view: VisitView, *, payer_rule: PayerRule, pair: tuple[str, str] | None
) -> UnitAssessment:
    """Minutes, units and unit findings for one visit (I-2.6, I-2.7, I-2.8, I-3).

    ``pair`` is the NCCI (column 1, column 2) of the 97140/97530 edit, whose overlapping
    minutes go to column 1 (R-F4).
    """
    lines = view.lines
    attribution = attribute_spans(view.spans, view.one_on_one_codes, pair)
    raw_counts: dict[str, int] = {}
    kept_counts: dict[str, int] = {}
    for code in sorted(attribution.raw):
        raw_minutes = whole_minutes(attribution.raw[code])
        if raw_minutes > 0:
            raw_counts[code] = raw_minutes
            kept_counts[code] = whole_minutes(attribution.kept[code])
    raw = CodeCounts.from_sorted(raw_counts)
    minutes = CodeCounts.from_sorted(kept_counts)
    total = sum(kept_counts.values())
    allocations = allocations_for(minutes, payer_rule)
    allowed_total = units(total) if payer_rule == PayerRule.CMS else sum(allocations[0].values())

    timed_codes = view.timed_codes
    billed = {
        code: line.billed_units
        for code, line in lines.items()
        if line.billed_units is not None and code in timed_codes
    }
    if not billed:
        chosen = allocations
    else:
        consistent = tuple(
            a for a in allocations if all(a.get(c, 0) == b for c, b in billed.items())
        )
        chosen = consistent or allocations

    findings: list[Finding] = []
    if view.group:
        findings += _group_findings(view.group, lines)
    findings += _overlap_findings(attribution)
    findings += _combine_findings(view.counted_by_code, minutes, chosen, lines)
    findings += _threshold_findings(
        payer_rule,
        raw,
        minutes,
        total,
        chosen,
        lines,
        view.one_on_one_codes,
        view.visit.charge_lines_read,
    )
    if len(allocations) > 1:
        tied = sorted({c for a in allocations for c in a if a[c] != allocations[0][c]})
        options = "; or ".join(_describe(a) for a in allocations)
        findings.append(
            make_finding(
                RuleId.I_TIE,
                codes=tied,
                resources=[s.ref for s in view.counted if s.code in tied],
                message=(
                    f"The remaining minutes of {', '.join(tied)} are equal, so any of these"
                    f" allocations is acceptable: {options}."
                ),
                facts=FindingFacts(allocations=allocations, units_allowed=allowed_total),
            )
        )
    if billed:
        findings += _exceed_findings(
            payer_rule, allocations, chosen, allowed_total, billed, lines, (total, minutes)
        )
    return UnitAssessment(
        payer_rule=payer_rule,
        raw_minutes=raw,
        minutes=minutes,
        total_timed_minutes=total,
        units_allowed_total=allowed_total,
        allocations=allocations,
        chosen=chosen,
        counted=view.counted,
        group_excluded=view.group,
        overlaps=tuple(attribution.overlaps),
        findings=tuple(findings),
    )


def _group_findings(
    group: Sequence[TimedService], lines: Mapping[str, BillingLine]
) -> list[Finding]:
    """E-GROUP-NOT-ONE-ON-ONE per code delivered to a group (R-F2, R-H8, I-2.6)."""
    has_group_code = GROUP_CODE in lines  # the lines hold every code documented or charged
    group_line = lines.get(GROUP_CODE)
    group_billed = group_line is not None and group_line.has_billing
    found = []
    for code in sorted({s.code for s in group}):
        services = [s for s in group if s.code == code]
        line = lines.get(code)
        # the code's charge also bills one-on-one services of the code: it stays (the unit
        # rules judge its units against their minutes) and the session gets a 97150 line
        mixed = line is not None and not set(line.service_refs) <= {s.ref for s in services}
        if group_billed and (line is None or not line.has_billing or mixed):
            # the session is billed as 97150 and the one-on-one code bills no group service:
            # what the finding asks for is done (its accepted suggestion must not raise it again)
            continue
        refs = line.fix_refs if line else ()
        if mixed:
            template = line.charge_refs if line else ()
            fix = Fix(line_code=GROUP_CODE, charge_refs=template, set_units=1, new_line=True)
        elif has_group_code:
            fix = Fix(line_code=code, charge_refs=refs, set_units=0)
        else:
            fix = Fix(line_code=code, charge_refs=refs, replace_code=GROUP_CODE, set_units=1)
        minutes = sum(s.minutes or 0 for s in services)
        advice = (
            f"Bill {GROUP_CODE} x 1 for the group session; the {code} line bills the one-on-one"
            f" {code} minutes only."
            if mixed
            else f"Bill {GROUP_CODE} x 1 for the group session instead."
        )
        found.append(
            make_finding(
                RuleId.E_GROUP_NOT_ONE_ON_ONE,
                codes=(code,),
                resources=[s.ref for s in services],
                message=(
                    f"{code} is a one-on-one code but was delivered to a group; its"
                    f" {minutes} minutes are excluded from the timed total. {advice}"
                ),
                facts=FindingFacts(minutes=minutes, units_allowed=0),
                fixes=(fix,),
            )
        )
    return found


def _pair_outcome(o: Overlap) -> str:
    if len(o.codes) == 1:
        return "the shared minutes are counted once"
    if o.kept_by:
        return f"the shared minutes count for {o.kept_by} only"
    return "the shared minutes count for neither code"


def _overlap_findings(attribution: SpanAttribution) -> list[Finding]:
    """One W-OVERLAP per visit for the one-on-one services sharing time (R-F4, I-2.7).

    One pair is described as it is; more are folded into one finding that counts every pair,
    spells out the first ``intervals.LISTED_OVERLAPS`` in time order and says how many it left
    out, so a visit's findings grow with its services, not with the pairs among them.
    """
    count, listed = attribution.overlap_count, attribution.overlaps
    if not count:
        return []
    resources = [sp.service.ref for sp in attribution.overlapping]
    codes = {sp.code for sp in attribution.overlapping}
    if count == 1:
        o = listed[0]
        if len(o.codes) == 1:
            what = f"Two {o.codes[0]} services overlap by {describe_minutes(o.length)}"
        else:
            what = f"{' and '.join(o.codes)} overlap by {describe_minutes(o.length)}"
        message = f"{what}; one-on-one minutes cannot support two codes, so {_pair_outcome(o)}."
        facts = FindingFacts(minutes=o.minutes, minutes_kept_by=o.kept_by)
    else:
        pairs = "; ".join(
            f"{o.refs[0]} and {o.refs[1]} ({' and '.join(o.codes)}) share"
            f" {describe_minutes(o.length)}: {_pair_outcome(o)}"
            for o in listed
        )
        left_out = count - len(listed)
        more = f"; and {left_out} more pairs, not listed here" if left_out else ""
        message = (
            f"{count} pairs of one-on-one services overlap ({describe_minutes(attribution.shared)}"
            f" covered by two or more of them); one-on-one minutes cannot support two codes."
            f" {'The first ' + str(len(listed)) if left_out else 'The pairs'}, in time order:"
            f" {pairs}{more}."
        )
        facts = FindingFacts(minutes=whole_minutes(attribution.shared))
    return [
        make_finding(
            RuleId.W_OVERLAP, codes=codes, resources=resources, message=message, facts=facts
        )
    ]


def _combine_findings(
    counted_by_code: Mapping[str, Sequence[TimedService]],
    minutes: Mapping[str, int],
    chosen: Sequence[Allocation],
    lines: Mapping[str, BillingLine],
) -> list[Finding]:
    """I-COMBINE-LINES when a timed code is documented more than once on the day (R-B8)."""
    found = []
    for code, services in counted_by_code.items():  # sorted by code
        if len(services) < 2:
            continue
        allowed = {a.get(code, 0) for a in chosen}
        units_allowed = allowed.pop() if len(allowed) == 1 else None
        line = lines.get(code)
        fixes = (
            (Fix(line_code=code, charge_refs=line.charge_refs, set_units=units_allowed),)
            if line and len(line.charge_refs) > 1 and units_allowed is not None
            else ()
        )
        units_text = f" ({plural_units(units_allowed)})" if units_allowed is not None else ""
        found.append(
            make_finding(
                RuleId.I_COMBINE_LINES,
                codes=(code,),
                resources=[s.ref for s in services],
                message=(
                    f"{code} is documented in {len(services)} services on this date; their"
                    f" minutes are added together ({minutes.get(code, 0)} minutes) and billed"
                    f" on one line{units_text}."
                ),
                facts=FindingFacts(minutes=minutes.get(code, 0), units_allowed=units_allowed),
                fixes=fixes,
            )
        )
    return found


def _billed(lines: Mapping[str, BillingLine], codes: Iterable[str], read: bool) -> int | None:
    """The units billed for ``codes`` (0: none of them is billed); ``None`` when that is not
    known: no charge line of the visit could be read (``read`` False), or a line bills one of
    them without saying how many units."""
    if not read:
        return None
    total = 0
    for code in codes:
        line = lines.get(code)
        if line is None or not line.has_billing:
            continue
        if line.billed_units is None:
            return None
        total += line.billed_units
    return total


def _zero_fix(line: BillingLine | None, code: str) -> tuple[Fix, ...]:
    if line is not None and line.billed_units:
        return (Fix(line_code=code, charge_refs=line.fix_refs, set_units=0),)
    return ()


def _threshold_findings(
    payer_rule: PayerRule,
    raw: Mapping[str, int],
    minutes: Mapping[str, int],
    total: int,
    chosen: Sequence[Allocation],
    lines: Mapping[str, BillingLine],
    one_on_one_codes: Container[str],
    read: bool,
) -> list[Finding]:
    """W-MIN-UNDER-8 and W-CODE-ZERO-UNITS exactly as I-3 specifies; ``read``: the visit's
    charge lines could be read (their facts then say how many units the codes bill)."""
    found: list[Finding] = []
    if not minutes:
        return found
    if payer_rule == PayerRule.AMA:
        for code, m in minutes.items():
            if m < 8:
                line = lines.get(code)
                found.append(
                    make_finding(
                        RuleId.W_MIN_UNDER_8,
                        codes=(code,),
                        resources=line.service_refs if line else (),
                        message=(
                            f"{code} has {m} minutes, under the 8 needed for one unit under"
                            " the per-code (AMA) rule; do not bill it."
                        ),
                        facts=FindingFacts(
                            minutes=m,
                            raw_minutes=raw[code],
                            units_allowed=0,
                            units_billed=_billed(lines, (code,), read),
                        ),
                        fixes=_zero_fix(line, code),
                    )
                )
        return found
    if total < 8:
        fixes = [f for code in minutes for f in _zero_fix(lines.get(code), code)]
        found.append(
            make_finding(
                RuleId.W_MIN_UNDER_8,
                codes=minutes.keys(),
                resources=[r for c in minutes if c in lines for r in lines[c].service_refs],
                message=(
                    f"The day's timed minutes total {total}, under the 8 needed for one unit;"
                    " no timed unit can be billed."
                ),
                facts=FindingFacts(
                    minutes=total, units_allowed=0, units_billed=_billed(lines, minutes, read)
                ),
                fixes=fixes,
            )
        )
        return found
    for code, m in minutes.items():
        if raw[code] > 0 and code in one_on_one_codes and all(a[code] == 0 for a in chosen):
            line = lines.get(code)
            found.append(
                make_finding(
                    RuleId.W_CODE_ZERO_UNITS,
                    codes=(code,),
                    resources=line.service_refs if line else (),
                    message=(
                        f"{code} has {m} countable minutes ({raw[code]} documented) but the"
                        f" day's {total} timed minutes allow no unit for it; keep it in the"
                        " note, do not bill it."
                    ),
                    facts=FindingFacts(
                        minutes=m,
                        raw_minutes=raw[code],
                        units_allowed=0,
                        units_billed=_billed(lines, (code,), read),
                    ),
                    fixes=_zero_fix(line, code),
                )
            )
    return found


def _exceed_message(
    payer_rule: PayerRule,
    code: str,
    billed: int,
    allowed: int,
    allocations: Sequence[Allocation],
    allowed_total: int,
    counted: tuple[int, Mapping[str, int]],
) -> str:
    total, minutes = counted
    if payer_rule == PayerRule.AMA:
        return (
            f"{code} is billed for {plural_units(billed)} but its {minutes.get(code, 0)} minutes"
            f" support at most {allowed} under the per-code (AMA) rule."
        )
    options = " or ".join(_describe(a) for a in allocations) or "no timed unit"
    return (
        f"{code} is billed for {plural_units(billed)} but the day's {total} pooled timed minutes"
        f" support {plural_units(allowed_total)} in all ({options}), so at most {allowed} for"
        f" {code} (CMS 8-minute rule)."
    )


def _exceed_findings(
    payer_rule: PayerRule,
    allocations: Sequence[Allocation],
    chosen: Sequence[Allocation],
    allowed_total: int,
    billed: Mapping[str, int],
    lines: Mapping[str, BillingLine],
    counted: tuple[int, Mapping[str, int]],
) -> list[Finding]:
    """E-UNITS-EXCEED per code and in total (I-3; R-B4, R-B6, R-B7, R-C2).

    ``counted``: the day's timed minutes and each code's. The message says where a code's
    limit comes from: under CMS the day's pooled minutes and their allocation (a code's own
    minutes may support more on their own), under AMA the code's own minutes.

    Per code: billed units above the most any acceptable allocation gives the code. Total
    (CMS only): billed units above ``units(T)`` even after capping each code at its own
    maximum, so a total finding is not just an echo of a per-code one.
    """
    found: list[Finding] = []
    max_allowed = {code: max(a.get(code, 0) for a in allocations) for code in billed}
    for code, n in billed.items():
        if n > max_allowed[code]:
            line = lines[code]
            found.append(
                make_finding(
                    RuleId.E_UNITS_EXCEED,
                    codes=(code,),
                    resources=(*line.charge_refs, *line.service_refs),
                    message=_exceed_message(
                        payer_rule, code, n, max_allowed[code], allocations, allowed_total, counted
                    ),
                    facts=FindingFacts(
                        units_allowed=max_allowed[code], units_billed=n, detail="code"
                    ),
                    fixes=(
                        Fix(line_code=code, charge_refs=line.fix_refs, set_units=max_allowed[code]),
                    ),
                )
            )
    capped = sum(min(n, max_allowed[c]) for c, n in billed.items())
    if payer_rule == PayerRule.CMS and billed and capped > allowed_total:
        target = chosen[0]
        fixes = [
            Fix(line_code=c, charge_refs=lines[c].fix_refs, set_units=target.get(c, 0))
            for c, n in billed.items()
            if n != target.get(c, 0)
        ]
        billed_total = sum(billed.values())
        found.append(
            make_finding(
                RuleId.E_UNITS_EXCEED,
                codes=billed.keys(),
                resources=[r for c in billed for r in lines[c].fix_refs],
                message=(
                    f"{plural_units(billed_total)} of timed codes are billed but the day's timed"
                    f" minutes support {allowed_total} in total; for example bill"
                    f" {_describe(target)}."
                ),
                facts=FindingFacts(
                    units_allowed=allowed_total,
                    units_billed=billed_total,
                    allocations=tuple(allocations),
                    detail="total",
                ),
                fixes=fixes,
            )
        )
    return found
