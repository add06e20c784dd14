"""FHIR resources -> the pipeline -> what the pages show of each visit (timeline and findings).

The sandbox and the SMART app both come through here, and through the same
:func:`plugin.pipeline.check_record` as ``check`` and the CDS services, so a visit shows the same
units and findings on every page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from fhir_mappings import map_bundle
from fhir_mappings.model import TherapyVisit
from plugin.pipeline import CheckResult, check_record
from plugin.rules import CATALOGUE, Finding, PairRule, PayerRule, Severity
from plugin.rules.payer import PayerChoice
from plugin.settings import MAX_PROCEDURES_PER_VISIT
from plugin.web.timeline import build_timeline, render_svg

JsonObject = dict[str, Any]

_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
_INDICATOR = {Severity.ERROR: "critical", Severity.WARNING: "warning", Severity.INFO: "info"}


@dataclass(frozen=True, slots=True)
class FindingView:
    rule: str
    severity: str
    indicator: str  # the card indicator the finding becomes: critical, warning or info
    meaning: str
    message: str
    codes: tuple[str, ...]
    resources: tuple[str, ...]

    def to_json(self) -> JsonObject:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "indicator": self.indicator,
            "meaning": self.meaning,
            "message": self.message,
            "codes": list(self.codes),
            "resources": list(self.resources),
        }


@dataclass(frozen=True, slots=True)
class VisitView:
    title: str
    date: str
    discipline: str
    payer_rule: str
    pair_rule: str
    total_timed_minutes: int
    units: Mapping[str, int]
    minutes: Mapping[str, int]
    pair: str
    svg: str
    findings: tuple[FindingView, ...]
    time_zone: str = "UTC"  # the clock this visit was recorded in, e.g. "UTC-05:00"
    payer_rule_reason: str = ""  # which payer rule and why (issue 15); plain text

    def to_json(self) -> JsonObject:
        return {
            "title": self.title,
            "date": self.date,
            "discipline": self.discipline,
            "payerRule": self.payer_rule,
            "payerRuleReason": self.payer_rule_reason,
            "pairRule": self.pair_rule,
            "totalTimedMinutes": self.total_timed_minutes,
            "units": dict(self.units),
            "minutes": dict(self.minutes),
            "pair": self.pair,
            "svg": self.svg,
            "findings": [f.to_json() for f in self.findings],
            "timeZone": self.time_zone,
        }


@dataclass(frozen=True, slots=True)
class AnalysisView:
    visits: tuple[VisitView, ...]
    findings: tuple[FindingView, ...]  # not tied to any visit
    time_zone: str  # the visits' clock, e.g. "UTC-05:00"; several joined by " / " when they differ
    mapping_issues: int

    def to_json(self) -> JsonObject:
        return {
            "visits": [v.to_json() for v in self.visits],
            "findings": [f.to_json() for f in self.findings],
            "timeZone": self.time_zone,
            "mappingIssues": self.mapping_issues,
        }


def finding_view(finding: Finding) -> FindingView:
    return FindingView(
        rule=finding.rule.value,
        severity=finding.severity.value,
        indicator=_INDICATOR[finding.severity],
        meaning=CATALOGUE[finding.rule].meaning,
        message=finding.message,
        codes=finding.codes,
        resources=finding.resources,
    )


def _sorted_views(findings: Iterable[Finding]) -> tuple[FindingView, ...]:
    ordered = sorted(findings, key=lambda f: (_SEVERITY_ORDER[f.severity], f.rule.value))
    return tuple(finding_view(f) for f in ordered)


def _period_start(resource: Mapping[str, Any]) -> object:
    for member in ("performedPeriod", "occurrencePeriod", "period", "actualPeriod"):
        period = resource.get(member)
        if isinstance(period, Mapping) and isinstance(period.get("start"), str):
            return period["start"]
    for member in ("performedDateTime", "occurrenceDateTime"):
        if isinstance(resource.get(member), str):
            return resource[member]
    return None


def recorded_offset(resources: Iterable[Mapping[str, Any]]) -> tzinfo | None:
    """The UTC offset the first timed Procedure (else Encounter) was recorded in, so the
    timeline reads in the clinic's clock; None when no recorded time carries an offset."""
    ordered = sorted(
        (r for r in resources if r.get("resourceType") in ("Procedure", "Encounter")),
        key=lambda r: r.get("resourceType") != "Procedure",
    )
    for resource in ordered:
        value = _period_start(resource)
        if not isinstance(value, str) or "T" not in value:
            continue
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            continue
        if moment.tzinfo is not None:
            offset = moment.utcoffset() or timedelta(0)
            return timezone(offset)
    return None


def describe_zone(tz: tzinfo | None) -> str:
    if tz is None:
        return "UTC"
    offset = tz.utcoffset(None) or timedelta(0)
    if not offset:
        return "UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "\u2212"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def visit_resources(
    visit: TherapyVisit, by_ref: Mapping[str, Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The visit's own Procedures and Encounters among ``by_ref`` (resources by
    ``Type/id``): what :func:`recorded_offset` reads for that visit."""
    refs = [s.ref for s in visit.services] + [e.ref for e in visit.encounters]
    return [by_ref[r] for r in refs if r in by_ref]


def resources_by_ref(resources: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {
        f"{r.get('resourceType')}/{r['id']}": r for r in resources if isinstance(r.get("id"), str)
    }


def analysis_view(
    result: CheckResult,
    *,
    tz: tzinfo | None = None,
    resources: Iterable[Mapping[str, Any]] | None = None,
) -> AnalysisView:
    """Timelines and findings for every visit of ``result``. Each visit is drawn in the clock
    it was recorded in: :func:`recorded_offset` of its own resources when ``resources`` (the
    request's) are given, so two visits across a daylight-saving change each keep theirs, as
    in the audit report; else in ``tz``."""
    by_key = {(v.patient, v.service_date, v.discipline): v for v in result.grouping.visits}
    by_ref = resources_by_ref(resources) if resources is not None else None
    visits = []
    for analysed in result.analysis.visits:
        visit = by_key.get((analysed.patient, analysed.date, analysed.discipline))
        if visit is None:  # every analysed visit comes from the grouping; be safe anyway
            continue
        own = recorded_offset(visit_resources(visit, by_ref)) if by_ref is not None else tz
        timeline = build_timeline(
            visit,
            units=analysed.units,
            minutes=analysed.minutes,
            pair=analysed.pair.status.value,
        )
        visits.append(
            VisitView(
                title=timeline.title,
                date=analysed.date.isoformat(),
                discipline=analysed.discipline.value,
                payer_rule=analysed.payer_rule,
                payer_rule_reason=analysed.payer_rule_reason,
                pair_rule=analysed.pair_rule,
                total_timed_minutes=analysed.total_timed_minutes,
                units=dict(analysed.units),
                minutes=dict(analysed.minutes),
                pair=analysed.pair.status.value,
                svg=render_svg(timeline, tz=own),
                findings=_sorted_views(analysed.findings),
                time_zone=describe_zone(own),
            )
        )
    zones = list(dict.fromkeys(v.time_zone for v in visits)) or [describe_zone(tz)]
    return AnalysisView(
        visits=tuple(visits),
        findings=_sorted_views(result.analysis.findings),
        time_zone=" / ".join(zones),
        mapping_issues=len(result.record.issues),
    )


def bundle_resources(bundle: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []
    return [
        e["resource"]
        for e in entries
        if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)
    ]


def analyse_bundle(
    bundle: JsonObject,
    *,
    payer_rule: PayerRule,
    pair_rule: PairRule,
    max_procedures_per_visit: int = MAX_PROCEDURES_PER_VISIT,
    payer: PayerChoice | None = None,
) -> AnalysisView:
    """Map ``bundle``, run the rules and draw each visit (a visit over the Procedure cap raises
    :class:`~plugin.pipeline.TooManyProceduresError`, as in every entry point)."""
    record = map_bundle(bundle)
    result = check_record(
        record,
        payer_rule=payer_rule,
        pair_rule=pair_rule,
        max_procedures_per_visit=max_procedures_per_visit,
        payer=payer,
    )
    return analysis_view(result, resources=bundle_resources(bundle))
