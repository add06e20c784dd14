"""``/rules/feedback``: the feedback report beside the finding catalogue.

The same report as ``therapy-cds feedback`` (:mod:`plugin.feedback_report`, one computation),
server-rendered and escaped. Served as ``THERAPY_CDS_FEEDBACK_PAGE`` says: in development by
default; in production only when set to true. It holds no patient data (finding ids, weeks,
counts and the reason codes clinicians chose), but it tells whoever can open it how a clinic
uses the service: expose it to the CDS committee's network or behind the clinic's sign-in.
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import Engine

from plugin.feedback_report import (
    FeedbackReportError,
    load_report,
    rate_text,
    reason_label,
    week_rows,
)
from plugin.rules.catalogue import CATALOGUE
from plugin.storage import UNKNOWN_TOPIC
from plugin.web.pages import render

FEEDBACK_PAGE_PATH = "/rules/feedback"


def feedback_router(engine: Engine, *, sandbox_on: bool) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(FEEDBACK_PAGE_PATH)
    async def feedback_page(since: str | None = None) -> Response:
        context: dict[str, object] = {
            "page": "rules",
            "sandbox_on": sandbox_on,
            "since": since or "",
            "rate_text": rate_text,
            "reason_label": reason_label,
            "catalogued": frozenset(entry.rule.value for entry in CATALOGUE.values()),
            "unknown": UNKNOWN_TOPIC,
        }
        since_day = None
        if since:
            try:
                since_day = date.fromisoformat(since.strip())
            except ValueError:
                context["error"] = "The date to start from must be written YYYY-MM-DD."
                return render("feedback.html", context, status_code=400)
        try:
            report = await run_in_threadpool(load_report, engine, since_day)
        except FeedbackReportError as exc:
            context["error"] = str(exc)
            return render("feedback.html", context, status_code=503)
        context["report"] = report
        context["rows"] = list(week_rows(report))
        return render("feedback.html", context)

    return router


__all__ = ["FEEDBACK_PAGE_PATH", "feedback_router"]
