"""Feedback store: idempotent, durable, on SQLite files and in memory."""

from __future__ import annotations

from pathlib import Path

from cds_hooks.models import FeedbackRequest
from plugin.storage import SqlFeedbackStore, make_engine

ACCEPTED = {
    "card": "card-1",
    "outcome": "accepted",
    "outcomeTimestamp": "2021-12-11T10:05:31Z",
    "acceptedSuggestions": [{"id": "s-2"}, {"id": "s-1"}],
}
OVERRIDDEN = {
    "card": "card-2",
    "outcome": "overridden",
    "outcomeTimestamp": "2021-12-11T10:05:31.123Z",
    "overrideReason": {"reason": {"code": "separate-note", "system": "https://x.example"}},
}


def _items(*bodies: dict[str, object]) -> FeedbackRequest:
    return FeedbackRequest.model_validate({"feedback": list(bodies)})


def test_repeats_are_stored_once(tmp_path: Path) -> None:
    store = SqlFeedbackStore(make_engine(f"sqlite:///{tmp_path / 'fb.db'}"))
    assert store.record("svc", _items(ACCEPTED, OVERRIDDEN).feedback) == 2
    assert store.record("svc", _items(ACCEPTED).feedback) == 0
    assert store.record("other-svc", _items(ACCEPTED).feedback) == 1
    assert store.count() == 3
    assert store.count("svc") == 2


def test_acknowledged_feedback_survives_a_new_engine(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    SqlFeedbackStore(make_engine(url)).record("svc", _items(OVERRIDDEN).feedback)
    rows = SqlFeedbackStore(make_engine(url)).outcomes("svc")
    assert len(rows) == 1
    assert rows[0]["card_uuid"] == "card-2"
    assert rows[0]["override_reason_code"] == "separate-note"


def test_suggestion_order_does_not_make_a_new_item() -> None:
    store = SqlFeedbackStore(make_engine("sqlite://"))
    reordered = dict(ACCEPTED, acceptedSuggestions=[{"id": "s-1"}, {"id": "s-2"}])
    assert store.record("svc", _items(ACCEPTED).feedback) == 1
    assert store.record("svc", _items(reordered).feedback) == 0
