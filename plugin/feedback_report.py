"""What clinicians do with the cards: per finding and ISO week, the cards shown, accepted and
overridden, the override rate and the override reasons (``therapy-cds feedback`` and the
``/rules/feedback`` page, one computation for both).

Read-only: the report never creates or changes a table. Counts come from what the service
stored (``plugin.storage``): ``cards_shown`` (flushed by every worker), ``feedback`` with the
finding of its card, or, when the card was not known yet where the feedback arrived, the finding
from ``card_topics``. Feedback whose card the service never returned (or forgot, see the
README) counts under ``unknown``.

The override rate is overridden / (accepted + overridden): the share of the cards acted on that
were overridden (an EHR sends feedback only for cards a user acted on). Findings are sorted so
that the most overridden come first; weeks newest first. Nothing here is about a patient.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from plugin.storage import (
    UNKNOWN_TOPIC,
    card_topics_table,
    cards_shown_table,
    feedback_table,
    iso_week,
    make_engine,
)

#: How an override without a reason is shown (JSON: ``null``).
NO_REASON_TEXT = "(none)"


class FeedbackReportError(Exception):
    """The report cannot be made: the message says what is wrong and what to do (no secrets)."""


@dataclass
class Counts:
    """One finding's numbers for one week (or for all weeks)."""

    shown: int = 0
    accepted: int = 0
    overridden: int = 0
    #: Override reason code (None: no reason given) -> items.
    reasons: dict[str | None, int] = field(default_factory=dict)

    @property
    def override_rate(self) -> float | None:
        acted = self.accepted + self.overridden
        return self.overridden / acted if acted else None

    def add(self, other: Counts) -> None:
        self.shown += other.shown
        self.accepted += other.accepted
        self.overridden += other.overridden
        for reason, count in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count

    def sorted_reasons(self) -> list[tuple[str | None, int]]:
        """Most frequent first, then by code (no reason last among equals)."""
        return sorted(self.reasons.items(), key=lambda item: (-item[1], item[0] is None, item[0]))


@dataclass
class FindingReport:
    finding: str
    weeks: dict[str, Counts]  # ISO week -> counts, newest first once sorted
    total: Counts


@dataclass
class FeedbackReport:
    since: date | None
    findings: list[FindingReport]

    @property
    def since_week(self) -> str | None:
        return iso_week(self.since) if self.since is not None else None

    @property
    def empty(self) -> bool:
        return not self.findings


# ---------------------------------------------------------------------- formatting helpers


def rate_text(rate: float | None) -> str:
    """``43%``, or ``-`` when no card of that row was acted on."""
    return "-" if rate is None else f"{rate * 100:.0f}%"


def reason_label(reason: str | None) -> str:
    return NO_REASON_TEXT if reason is None else reason


def reasons_text(counts: Counts) -> str:
    """``payer-exception 3, will-correct-documentation 1``."""
    return ", ".join(f"{reason_label(r)} {n}" for r, n in counts.sorted_reasons())


# ---------------------------------------------------------------------- reading


def database_label(database_url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def open_database(database_url: str) -> Engine:
    """An engine for the report. A SQLite file that does not exist is an error here, not a
    new empty database."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise FeedbackReportError(
            "the database URL is not valid (expected sqlite:///PATH or postgresql://...)"
        ) from None
    if url.get_backend_name() == "sqlite":
        name = url.database or ""
        on_disk = name not in ("", ":memory:") and not name.startswith("file:")
        if on_disk and not Path(name).is_file():
            raise FeedbackReportError(
                f"no database file at {name}: the service creates it when it starts; give "
                "--database-url (or THERAPY_CDS_DATABASE_URL) as the service has it"
            )
    try:
        return make_engine(database_url)
    except (SQLAlchemyError, ImportError) as exc:
        raise FeedbackReportError(
            f"cannot use the database {database_label(database_url)} "
            f"({type(exc).__name__}); use sqlite:///PATH or postgresql://..."
        ) from None


def load_report(engine: Engine, since: date | None = None) -> FeedbackReport:
    """The report over ``engine``'s tables, from the ISO week of ``since`` on."""
    try:
        return _load(engine, since)
    except SQLAlchemyError as exc:
        label = engine.url.render_as_string(hide_password=True)
        raise FeedbackReportError(
            f"cannot read the database {label} ({type(exc).__name__}): is it running and "
            "reachable, and is this the service's database?"
        ) from None


def _load(engine: Engine, since: date | None) -> FeedbackReport:
    since_week = iso_week(since) if since is not None else None
    found: dict[str, dict[str, Counts]] = {}

    def counts(topic: str | None, week: str | None) -> Counts:
        weeks = found.setdefault(topic or UNKNOWN_TOPIC, {})
        return weeks.setdefault(week or "-", Counts())

    with engine.connect() as connection:
        schema = inspect(connection)
        tables = set(schema.get_table_names())
        if "cards_shown" in tables:
            shown = cards_shown_table.c
            query = select(shown.topic, shown.week, func.sum(shown.shown)).group_by(
                shown.topic, shown.week
            )
            if since_week is not None:
                query = query.where(shown.week >= since_week)
            for topic, week, total in connection.execute(query):
                counts(topic, week).shown += int(total)
        if "feedback" in tables:
            columns = {column["name"] for column in schema.get_columns("feedback")}
            if not {"topic", "week"} <= columns or "card_topics" not in tables:
                raise FeedbackReportError(
                    "the database was written by an older therapy-cds: start the service "
                    "once on it (it adds what is missing), then run the report again"
                )
            fb, cards = feedback_table.c, card_topics_table.c
            topic = func.coalesce(fb.topic, cards.topic)
            acted = (
                select(topic, fb.week, fb.outcome, fb.override_reason_code, func.count())
                .select_from(
                    feedback_table.outerjoin(card_topics_table, cards.card_uuid == fb.card_uuid)
                )
                .group_by(topic, fb.week, fb.outcome, fb.override_reason_code)
            )
            if since_week is not None:
                acted = acted.where(fb.week >= since_week)
            for topic_value, week, outcome, reason, number in connection.execute(acted):
                row = counts(topic_value, week)
                if outcome == "accepted":
                    row.accepted += int(number)
                elif outcome == "overridden":
                    row.overridden += int(number)
                    row.reasons[reason] = row.reasons.get(reason, 0) + int(number)
    return FeedbackReport(since=since, findings=_sorted(found))


def _sorted(found: Mapping[str, Mapping[str, Counts]]) -> list[FindingReport]:
    findings = []
    for finding, weeks in found.items():
        total = Counts()
        for week_counts in weeks.values():
            total.add(week_counts)
        ordered = dict(sorted(weeks.items(), key=lambda item: item[0], reverse=True))
        findings.append(FindingReport(finding=finding, weeks=ordered, total=total))

    def most_overridden(item: FindingReport) -> tuple[int, float, int, str]:
        rate = item.total.override_rate
        return (-item.total.overridden, -(rate or 0.0), -item.total.shown, item.finding)

    return sorted(findings, key=most_overridden)


# ---------------------------------------------------------------------- output


def _counts_json(counts: Counts) -> dict[str, Any]:
    rate = counts.override_rate
    return {
        "shown": counts.shown,
        "accepted": counts.accepted,
        "overridden": counts.overridden,
        "override_rate": None if rate is None else round(rate, 4),
        "override_reasons": [
            {"code": reason, "count": number} for reason, number in counts.sorted_reasons()
        ],
    }


def report_json(report: FeedbackReport) -> dict[str, Any]:
    """``{"since", "since_week", "findings": [{"finding", totals..., "weeks": [...]}]}``."""
    return {
        "since": report.since.isoformat() if report.since is not None else None,
        "since_week": report.since_week,
        "findings": [
            {
                "finding": item.finding,
                **_counts_json(item.total),
                "weeks": [
                    {"week": week, **_counts_json(counts)} for week, counts in item.weeks.items()
                ],
            }
            for item in report.findings
        ],
    }


CSV_COLUMNS = (
    "finding",
    "week",
    "shown",
    "accepted",
    "overridden",
    "override_rate",
    "override_reasons",
)


def report_csv(report: FeedbackReport) -> str:
    """One row per finding and week; reasons as ``code=count`` joined by ``;``. Reason codes
    come from the EHR: a cell a spreadsheet would read as a formula is quoted, as the audit's."""
    from plugin.audit.rows import cell as _cell  # only here: the audit package is large

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in report.findings:
        for week, counts in item.weeks.items():
            rate = counts.override_rate
            reasons = ";".join(f"{reason_label(r)}={n}" for r, n in counts.sorted_reasons())
            writer.writerow(
                (
                    _cell(item.finding),
                    week,
                    counts.shown,
                    counts.accepted,
                    counts.overridden,
                    "" if rate is None else f"{rate:.4f}",
                    _cell(reasons),
                )
            )
    return out.getvalue()


def week_rows(report: FeedbackReport) -> Iterable[tuple[FindingReport, str | None, Counts]]:
    """Per finding: its total (week None), then each week -- the rows of the text table and
    of the page, in order."""
    for item in report.findings:
        yield item, None, item.total
        for week, counts in item.weeks.items():
            yield item, week, counts


__all__ = [
    "CSV_COLUMNS",
    "NO_REASON_TEXT",
    "Counts",
    "FeedbackReport",
    "FeedbackReportError",
    "FindingReport",
    "database_label",
    "load_report",
    "open_database",
    "rate_text",
    "reason_label",
    "reasons_text",
    "report_csv",
    "report_json",
    "week_rows",
]
