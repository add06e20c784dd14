"""The package docstring's example is real code: run it and call the service it declares."""

from __future__ import annotations

import textwrap
from typing import Any

import httpx
import pytest

import cds_hooks

pytestmark = pytest.mark.anyio


def docstring_example() -> str:
    doc = cds_hooks.__doc__ or ""
    block = doc.split("::\n", 1)[1]
    return textwrap.dedent(block)


async def test_package_docstring_example_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(docstring_example(), "cds_hooks-docstring", "exec"), namespace)
    app = namespace["app"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        discovery = await c.get("/cds-services")
        response = await c.post(
            "/cds-services/greeter",
            json={
                "hook": "patient-view",
                "hookInstance": "0f8fad5b-d9cb-469f-a165-70867728950e",
                "context": {"userId": "Practitioner/1", "patientId": "p1"},
                "prefetch": {"patient": {"resourceType": "Patient", "id": "p1"}},
            },
        )
    assert discovery.json()["services"][0]["id"] == "greeter"
    assert response.json()["cards"][0]["summary"] == "Hello p1"
