"""DocumentReference -> :class:`~fhir_mappings.model.ProgressReport` (R-E6)."""

from __future__ import annotations

from datetime import date

from fhir_mappings import codes
from fhir_mappings.mapping.context import Item, MappingContext
from fhir_mappings.model import ProgressReport


def read_progress_report(ctx: MappingContext, item: Item) -> ProgressReport | None:
    """A DocumentReference typed with a progress-note LOINC code (``PROGRESS_NOTE_TYPES``)
    and not withdrawn, on the date it covers; ``None`` for any other document.

    Date: R4 ``context.period`` / R5 ``period`` (its end, else its start), else ``date``
    (when the document was made). POLICY: ``status`` entered-in-error and ``docStatus``
    preliminary or entered-in-error are not a written report.
    """
    source, _, key, res = item
    doc_type = res.get("type")
    codings = doc_type.get("coding") if type(doc_type) is dict else None
    found: str | None = None
    for coding in codings if type(codings) is list else ():
        if type(coding) is dict and coding.get("system") == codes.LOINC_SYSTEM:
            code = coding.get("code")
            if type(code) is str and code in codes.PROGRESS_NOTE_TYPES:
                found = code
                break
    if found is None:
        ctx.out_of_scope += 1
        return None
    if res.get("status") == "entered-in-error" or res.get("docStatus") in (
        "preliminary",
        "entered-in-error",
    ):
        return None
    loc = source.location
    context = res.get("context")
    period = res.get("period")
    if period is None and type(context) is dict:
        period = context.get("period")
    day: date | None = None
    if type(period) is dict:
        start, end = ctx.period(period, loc, key, "period")
        for point in (end, start):
            if point is not None and point[1] is not None:
                day = point[1]
                break
    if day is None and res.get("date") is not None:
        point = ctx.point(res.get("date"), loc, key, "date")
        day = point[1] if point is not None else None
    if day is None:
        ctx.issue(loc, "progress report without a usable date; not used", key, "date")
        return None
    patient, _ = ctx.subject(res, "subject", loc, key)
    return ProgressReport(
        ref=key,
        date=day,
        discipline=codes.PROGRESS_NOTE_TYPES[found],
        code=found,
        patient=patient,
    )
