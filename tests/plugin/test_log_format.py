"""The service's log lines as an operator's pipeline reads them (issue 18): the key=value text
with the logger's name once, and ``THERAPY_CDS_LOG_FORMAT=json`` with one JSON object per line,
for the service's own lines and uvicorn's."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugin.app import create_app
from plugin.hook_request import build_hook_request
from plugin.services import ORDER_SIGN_SERVICE
from plugin.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_bundles" / "overlapping-time-blocks.json"
HOOK_INSTANCE = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    uvicorn = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
        for n in (
            "uvicorn",
            "uvicorn.error",
            "uvicorn.access",
        )
    }
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, (handlers, propagate) in uvicorn.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


def _service_handler() -> logging.StreamHandler[Any]:
    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "_therapy_cds", False)]
    assert isinstance(handler, logging.StreamHandler)
    return handler


async def _one_call_logged(tmp_path: Path, log_format: str) -> list[str]:
    """Build the service with ``log_format``, make one order-sign call and one uvicorn line,
    and return what the service's handler wrote."""
    settings = Settings(
        dev_mode=True,
        require_auth=False,
        database_url=f"sqlite:///{tmp_path / 'cds.db'}",
        log_format=log_format,
    )
    # What uvicorn does before building the app: its own handler on "uvicorn", and the access
    # log switched off (`serve` runs it with access_log=False).
    logging.getLogger("uvicorn").handlers[:] = [logging.StreamHandler(io.StringIO())]
    logging.getLogger("uvicorn").propagate = False
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
    app = create_app(settings)
    assert not logging.getLogger("uvicorn.access").hasHandlers()  # stays off
    stream = io.StringIO()
    _service_handler().setStream(stream)
    try:
        body = build_hook_request(json.loads(SAMPLE.read_text()), hook="order-sign")
        body["hookInstance"] = HOOK_INSTANCE
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
            response = await client.post(f"/cds-services/{ORDER_SIGN_SERVICE}", json=body)
        assert response.status_code == 200, response.text
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 4242)
    finally:
        _service_handler().setStream(io.StringIO())
    return stream.getvalue().splitlines()


@pytest.mark.anyio
async def test_text_line_names_the_logger_once(tmp_path: Path, restore_logging: None) -> None:
    lines = await _one_call_logged(tmp_path, "text")
    (call,) = [line for line in lines if "event=invoke" in line]
    assert "cds_hooks cds_hooks" not in call
    _time, level, name, first = call.split(" ")[:4]
    assert (level, name, first) == ("INFO", "cds_hooks", "event=invoke")
    assert f"hook_instance={HOOK_INSTANCE}" in call
    assert f"service={ORDER_SIGN_SERVICE}" in call
    assert any(line.endswith(" INFO uvicorn.error Started server process [4242]") for line in lines)


@pytest.mark.anyio
async def test_json_lines_parse_and_carry_the_call_fields(
    tmp_path: Path, restore_logging: None
) -> None:
    lines = await _one_call_logged(tmp_path, "json")
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(r, dict) and {"time", "level", "logger"} <= r.keys() for r in records)
    (call,) = [r for r in records if r.get("event") == "invoke"]
    assert call["logger"] == "cds_hooks"
    assert call["level"] == "INFO"
    assert call["status"] == 200
    assert call["service"] == ORDER_SIGN_SERVICE
    assert call["hook_instance"] == HOOK_INSTANCE
    assert isinstance(call["duration_ms"], float)
    assert "message" not in call
    # the same content as the text line: the handler's fields too, and no patient data
    assert {"cards", "visits", "rules"} <= call.keys()
    patient = build_hook_request(json.loads(SAMPLE.read_text()), hook="order-sign")["context"][
        "patientId"
    ]
    assert patient not in json.dumps(call)
    uvicorn = [r for r in records if r["logger"] == "uvicorn.error"]
    assert uvicorn == [
        {
            "time": uvicorn[0]["time"],
            "level": "INFO",
            "logger": "uvicorn.error",
            "message": "Started server process [4242]",
        }
    ]


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")
