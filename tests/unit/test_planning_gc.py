"""Planning pauses the cyclic garbage collector and always gives it back as it found it."""

from __future__ import annotations

import gc

import pytest

from syncengine.service.planning import bulk_objects


def test_the_collector_is_paused_and_restored_even_on_error() -> None:
    assert gc.isenabled()
    with bulk_objects():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="boom"), bulk_objects():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_someone_else_paused_stays_paused() -> None:
    gc.disable()
    try:
        with bulk_objects():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
