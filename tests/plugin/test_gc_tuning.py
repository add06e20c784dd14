"""The server's start-up freezes what start-up built and raises the young GC threshold; building
the app alone (as most tests do) leaves the interpreter's collector as it was."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.app import GC_YOUNG_THRESHOLD, create_app
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
    before = (gc.get_threshold(), gc.get_freeze_count())
    create_app(_settings(tmp_path))
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_serving_freezes_start_up_objects_and_raises_the_threshold(
    tmp_path: Path, restore_gc: None
) -> None:
    app = create_app(_settings(tmp_path))
    older = gc.get_threshold()[1:]
    # The lifespan, as uvicorn runs it in each worker.
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *older)
        assert gc.get_freeze_count() > 10_000
