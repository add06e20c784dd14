"""A worker killed mid-load: every feedback item the service acknowledged (200) is in the store.

``therapy-cds serve --workers 2`` on 127.0.0.1 with a SQLite file; eight clients post feedback
items with unique card ids; one worker is SIGKILLed while they do (``bench/faults.py``; the
same scenario on PostgreSQL is in ``tests/postgres``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from faults import kill_worker_during_feedback  # noqa: E402


def test_acknowledged_feedback_survives_a_killed_worker(tmp_path: Path) -> None:
    result = kill_worker_during_feedback(f"sqlite:///{tmp_path / 'kill.db'}", tmp_path)
    assert len(result.acknowledged) > 50
    assert result.served_after_kill > 0, "the service went on serving"
    assert result.lost == [], (
        f"{len(result.lost)} acknowledged items lost ({result.not_acknowledged} not acknowledged)"
    )
