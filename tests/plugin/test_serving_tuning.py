"""Serving-time tuning: log lines keep their format with the per-second time cache; FastAPI's
OpenTelemetry hooks are on only where OpenTelemetry is configured."""

from __future__ import annotations

import logging
import os

import pytest

from plugin.app import _LineFormatter, _telemetry_config


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
