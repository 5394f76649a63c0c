"""app/core/heap.py: the lifespan freezes the start-up heap and raises the young generation's threshold."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.core.heap import YOUNG_THRESHOLD
from tests.conftest import AppFactory


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """The test process's collector as it was (the suite runs with GC_TUNING=false)."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.asyncio
@pytest.mark.usefixtures("restored_gc")
async def test_start_up_freezes_the_heap_and_collects_young_objects_less_often(make_app: AppFactory) -> None:
    gc.unfreeze()
    middle, old = gc.get_threshold()[1:]
    application = await make_app(GC_TUNING=True)
    assert gc.get_freeze_count() > 10_000  # modules, routes and validators: out of the collector's sight
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    assert not any(o is application for o in gc.get_objects())  # the app itself is frozen, not walked


@pytest.mark.asyncio
@pytest.mark.usefixtures("restored_gc")
async def test_off_leaves_the_collector_alone(make_app: AppFactory) -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    await make_app(GC_TUNING=False)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold
