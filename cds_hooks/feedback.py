"""Feedback storage seam (checklist F-1..F-9).

The protocol layer validates feedback bodies and hands the items to a store; the application
decides where they live (the plugin stores them through SQLAlchemy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cds_hooks.models import FeedbackItem


class FeedbackStore(Protocol):
    """Persists feedback. ``record`` must be idempotent on repeats (F-8) and durable on return:
    an acknowledged item is never lost. Returns how many items were new."""

    def record(self, service_id: str, items: Sequence[FeedbackItem]) -> int: ...
