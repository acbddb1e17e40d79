"""Planning makes full garbage collections rare and always restores the thresholds."""

from __future__ import annotations

import gc
import threading

import pytest

from syncengine.service.planning import FULL_COLLECTION_EVERY, bulk_objects


def test_full_collections_are_rare_inside_and_restored_after_even_on_error() -> None:
    before = gc.get_threshold()
    with bulk_objects():
        assert gc.isenabled()  # the young generations are still collected
        assert gc.get_threshold()[:2] == before[:2]
        assert gc.get_threshold()[2] == max(before[2], FULL_COLLECTION_EVERY)
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError, match="boom"), bulk_objects():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_overlapping_uses_restore_when_the_last_one_leaves() -> None:
    before = gc.get_threshold()
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with bulk_objects():
            inside.set()
            leave.wait(10)

    worker = threading.Thread(target=other)
    with bulk_objects():
        worker.start()
        assert inside.wait(10)
    # The first one left while the other is still planning: still raised.
    assert gc.get_threshold()[2] == max(before[2], FULL_COLLECTION_EVERY)
    leave.set()
    worker.join(10)
    assert gc.get_threshold() == before
