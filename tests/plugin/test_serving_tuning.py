"""Serving-time tuning: the server's start-up freezes what start-up built (building the app
alone, as most tests do, leaves the collector as it was); log lines keep their format with
the per-second time cache; FastAPI's OpenTelemetry hooks are on only where OpenTelemetry is
configured."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.app import _LineFormatter, _telemetry_config, create_app
from plugin.settings import Settings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _settings(tmp_path: Path) -> Settings:
    return Settings(require_auth=False, database_url=f"sqlite:///{tmp_path / 'gc.db'}")


def test_building_the_app_leaves_the_collector_alone(tmp_path: Path, restore_gc: None) -> None:
    # An earlier test that ran a lifespan leaves objects frozen, and some of them are freed
    # while the app is built (the count drops): start from nothing frozen.
    gc.unfreeze()
    before = (gc.get_threshold(), gc.get_freeze_count())
    create_app(_settings(tmp_path))
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_serving_freezes_start_up_objects(tmp_path: Path, restore_gc: None) -> None:
    app = create_app(_settings(tmp_path))
    threshold = gc.get_threshold()
    # The lifespan, as uvicorn runs it in each worker.
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == threshold


def test_line_format_and_cached_time() -> None:
    formatter = _LineFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    record = logging.LogRecord("cds_hooks", logging.INFO, "", 0, "event=invoke", None, None)
    record.created = 1_780_000_000.25
    first = formatter.format(record)
    record.created = 1_780_000_000.75  # same second: the cached text
    assert formatter.format(record) == first
    record.created = 1_780_000_001.0  # next second: new text
    later = formatter.format(record)
    assert later != first
    assert first.endswith(" INFO cds_hooks event=invoke")
    assert first.split(" ")[0] == logging.Formatter("%(asctime)s", "%Y-%m-%dT%H:%M:%S").formatTime(
        logging.makeLogRecord({"created": 1_780_000_000.25}), "%Y-%m-%dT%H:%M:%S"
    )


def test_opentelemetry_hooks_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("FASTAPI_OTEL_AUTO_CONFIGURE", raising=False)
    assert _telemetry_config() == {"tracing": False, "metrics": False, "logs": False}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.invalid:4318")
    assert _telemetry_config() == {}
