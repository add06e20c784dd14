from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment; the caller's THERAPY_CDS_* must not leak into the tests."""
    import os

    for key in [k for k in os.environ if k.startswith("THERAPY_CDS_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
