"""Timing findings for documented services (I-2.3, I-2.4, R-H2, R-H10).

W-MISSING-END / W-MISSING-START for incomplete periods, W-NO-DURATION when only a date or a
dateTime was recorded (or the period ends before it starts, or its times are outside what a visit
can be: detail ``implausible``), W-SPANS-MIDNIGHT when an interval
crosses local midnight (it stays wholly on its start date).
"""

from __future__ import annotations

from fhir_mappings.model import TimedService, TimingKind
from fhir_mappings.times import MAX_SERVICE_SPAN, VISIT_YEARS
from plugin.rules.catalogue import RuleId
from plugin.rules.findings import Finding, FindingFacts, make_finding
from plugin.rules.intervals import as_utc


def timing_findings(service: TimedService) -> tuple[Finding, ...]:
    """I-2.3 / I-2.4 findings for one service (a timed code whose minutes would count)."""
    found: list[Finding] = []
    code, ref = service.code, service.ref

    def add(rule: RuleId, message: str, detail: str | None = None) -> None:
        found.append(
            make_finding(
                rule,
                codes=(code,),
                resources=(ref,),
                message=message,
                facts=FindingFacts(detail=detail),
            )
        )

    if service.timing is TimingKind.PERIOD:
        if service.start is None and service.end is None:
            add(
                RuleId.W_NO_DURATION,
                f"{code}: the period has neither a start nor an end time; its minutes"
                " cannot be counted.",
                "empty-period",
            )
        elif service.start is None:
            add(
                RuleId.W_MISSING_START,
                f"{code}: the period has an end but no start time; its minutes cannot be"
                " counted. Record when the service started.",
            )
        elif service.end is None:
            add(
                RuleId.W_MISSING_END,
                f"{code}: the period has a start but no end time; its minutes cannot be"
                " counted. Record when the service ended.",
            )
        elif as_utc(service.end) < as_utc(service.start):
            add(
                RuleId.W_NO_DURATION,
                f"{code}: the period ends before it starts; its minutes cannot be counted.",
                "end-before-start",
            )
    elif service.timing is TimingKind.IMPLAUSIBLE:
        add(
            RuleId.W_NO_DURATION,
            f"{code}: the recorded time is outside what a visit can be (before"
            f" {VISIT_YEARS.start}, after {VISIT_YEARS.stop - 1}, or one service over"
            f" {MAX_SERVICE_SPAN.total_seconds() / 3600:g} hours), so it was not used; its"
            " minutes cannot be counted. Correct the start and end times at the source.",
            service.timing.value,
        )
    else:
        recorded = {
            TimingKind.INSTANT: "only a date and time",
            TimingKind.DATE: "only a date",
            TimingKind.NONE: "no usable time",
        }[service.timing]
        add(
            RuleId.W_NO_DURATION,
            f"{code}: {recorded} was recorded, not a start and end; the service has no"
            " duration and adds no minutes.",
            service.timing.value,
        )
    if service.spans_midnight:
        add(
            RuleId.W_SPANS_MIDNIGHT,
            f"{code}: the service crosses local midnight; all of its minutes are counted on"
            " its start date.",
        )
    return tuple(found)
