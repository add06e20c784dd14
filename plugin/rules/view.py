"""One visit as the rules read it, computed once per visit and shared by every rule.

The rules of one visit keep asking the same questions: which services are timed, which were
one-on-one codes delivered to a group (I-2.6), what each counted service's UTC interval is
(R-H10), what the visit bills per code (I-3, I-4.4), which codes PTP edits are looked up for
(R-D1). :func:`visit_view` answers them in one pass over the visit; the rules take the
:class:`VisitView` instead of recomputing them. Nothing here decides a finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fhir_mappings.model import DeliveryMode, TherapyVisit, TimedService, TimingKind
from plugin.rules.billing import BillingLine, billing_lines
from plugin.rules.code_catalog import CodeCatalog, classify
from plugin.rules.intervals import Span, usable_span


@dataclass(slots=True)
class VisitView:
    """The per-visit facts the rules share (see the module docstring); not changed once built."""

    visit: TherapyVisit
    lines: Mapping[str, BillingLine]  # billing lines by code, sorted by code
    timed_codes: frozenset[str]  # codes of the lines that are 15-minute timed codes (R-A4)
    one_on_one_codes: frozenset[str]  # codes of the lines that are one-on-one (R-F3)
    billable_codes: frozenset[str]  # codes PTP edits are looked up for (R-D1, R-F2)
    counted: tuple[TimedService, ...]  # timed services whose minutes count, in visit order
    group: tuple[TimedService, ...]  # timed one-on-one services delivered to a group (I-2.6)
    counted_by_code: Mapping[str, tuple[TimedService, ...]]  # ``counted`` per code, in order
    spans: tuple[Span, ...]  # usable UTC intervals of ``counted``, in order
    spans_by_code: Mapping[str, tuple[Span, ...]]  # ``spans`` per code, in order
    codes_without_span: frozenset[str]  # codes with a counted service lacking a usable interval
    timing_suspects: tuple[TimedService, ...]  # ``counted`` not a plain usable period


def is_group_delivery(service: TimedService) -> bool:
    """Delivered to a group: group delivery mode or a Group subject (R-H8)."""
    return service.delivery_mode is DeliveryMode.GROUP or service.subject_is_group


def visit_view(visit: TherapyVisit, catalog: CodeCatalog) -> VisitView:
    """Build the :class:`VisitView` of ``visit`` under ``catalog``."""
    lines = billing_lines(visit)
    timed_codes, one_on_one_codes = classify(catalog, lines.keys())
    billable: set[str] = {c for c, line in lines.items() if line.charge_refs}
    counted: list[TimedService] = []
    group: list[TimedService] = []
    counted_by_code: dict[str, list[TimedService]] = {}
    spans: list[Span] = []
    spans_by_code: dict[str, list[Span]] = {}
    without_span: set[str] = set()
    suspects: list[TimedService] = []
    for s in visit.services:
        code = s.code
        if code in one_on_one_codes and is_group_delivery(s):
            if code in timed_codes:
                group.append(s)
            continue
        billable.add(code)
        if code not in timed_codes:
            continue
        counted.append(s)
        counted_by_code.setdefault(code, []).append(s)
        span = usable_span(s)
        if span is None:
            without_span.add(code)
        else:
            spans.append(span)
            spans_by_code.setdefault(code, []).append(span)
        if span is None or s.timing is not TimingKind.PERIOD or s.spans_midnight:
            suspects.append(s)
    return VisitView(
        visit=visit,
        lines=lines,
        timed_codes=timed_codes,
        one_on_one_codes=one_on_one_codes,
        billable_codes=frozenset(billable),
        counted=tuple(counted),
        group=tuple(group),
        counted_by_code={c: tuple(v) for c, v in sorted(counted_by_code.items())},
        spans=tuple(spans),
        spans_by_code={c: tuple(v) for c, v in spans_by_code.items()},
        codes_without_span=frozenset(without_span),
        timing_suspects=tuple(suspects),
    )
