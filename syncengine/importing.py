"""Lazy imports without the garbage collector's start-up walks.

Importing a large library allocates objects by the hundred thousand (SQLAlchemy and the
staging models, pydantic and the config models), and the cyclic collector runs every few
hundred allocations, walking more of them each time as the heap grows: about a tenth of a
no-op nightly ``sync``'s CPU went to collections during its imports, which free nothing
(modules, classes and functions live as long as the process). :func:`loading` runs a block of
imports with the collector paused and then ``gc.freeze()``\\ s what exists, so later
collections skip it as well. Only reference cycles among the frozen objects would outlive
their use; at start-up that is the import system's own bookkeeping. Everything else is still
freed by reference counting, and the collector is running again after the block.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # blocks running (in any thread)
_was_enabled = True  # whether the collector ran before the outermost block


@contextmanager
def loading() -> Iterator[None]:
    """Run the block (a first import of something large) with the collector paused; then
    freeze what exists and let the collector run again, unless it was off before."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.freeze()
                if _was_enabled:
                    gc.enable()
