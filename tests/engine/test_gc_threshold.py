"""A run raises the young-generation gc threshold while it is in progress (its bookkeeping is
long-lived objects that every young collection would traverse again) and restores it after."""

from __future__ import annotations

import gc

import pytest

from memodag import Instance, job, list_versions, op
from memodag.engine.gc_threshold import RUN_THRESHOLD

seen: list[tuple[int, int, int]] = []


@op
def look():
    seen.append(gc.get_threshold())
    return 1


@op
def fail(look):
    raise ValueError("boom")


@job
def looks():
    look()


@job
def fails():
    fail(look())


@pytest.fixture
def default_threshold():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_a_run_collects_less_often_and_restores_the_threshold(default_threshold):
    seen.clear()
    with Instance.ephemeral() as inst:
        looks.execute_in_process(instance=inst)
        assert seen == [(RUN_THRESHOLD, 10, 10)]
        assert gc.get_threshold() == (700, 10, 10)

        # also when the run fails
        fails.execute_in_process(instance=inst, raise_on_error=False)
        assert gc.get_threshold() == (700, 10, 10)
        with pytest.raises(Exception, match="boom"):
            fails.execute_in_process(instance=inst)
        assert gc.get_threshold() == (700, 10, 10)
        list_versions(looks, None, inst)
        assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_or_collection_turned_off_is_left_alone():
    before = gc.get_threshold()
    try:
        for threshold in ((50_000, 5, 5), (0, 10, 10)):
            gc.set_threshold(*threshold)
            seen.clear()
            with Instance.ephemeral() as inst:
                looks.execute_in_process(instance=inst)
            assert seen == [threshold]
            assert gc.get_threshold() == threshold
    finally:
        gc.set_threshold(*before)
