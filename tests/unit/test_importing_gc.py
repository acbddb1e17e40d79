"""``importing.loading``: imports run with the collector paused, which always runs again
afterwards (after an error too, and only when the last of overlapping blocks ends), and what
the imports made is frozen out of later collections."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from syncengine.importing import loading


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Give the test process's objects back to the collector afterwards."""
    yield
    gc.unfreeze()


def test_the_collector_is_paused_inside_and_runs_again_after_even_on_error() -> None:
    assert gc.isenabled()
    with loading():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="boom"), loading():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_what_the_block_made_is_frozen() -> None:
    gc.unfreeze()
    with loading():
        made = [[i] for i in range(1000)]  # noqa: F841  (alive, like a module's objects)
    assert gc.get_freeze_count() > 1000


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with loading():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_blocks_resume_the_collector_when_the_last_one_ends() -> None:
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with loading():
            inside.set()
            leave.wait(10)

    worker = threading.Thread(target=other)
    with loading():
        worker.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # the other thread is still importing
    leave.set()
    worker.join(10)
    assert gc.isenabled()
