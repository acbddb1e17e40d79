"""One function run in a thread while the caller does something else (planning's overlaps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """``fn()`` started at once in a daemon thread; :meth:`result` waits for its value (or
    raises its error in the caller's thread), :meth:`wait` only waits.

    Whatever ``fn`` uses (a provider, say) is the thread's until one of the two returned: the
    caller must not use it meanwhile. ``seconds`` is how long ``fn`` ran (wall time)."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self._value = self._fn()
        except BaseException as exc:  # raised in the caller's thread by result()
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - started

    def wait(self) -> None:
        """Wait for the thread, whatever its outcome."""
        self._thread.join()

    def result(self) -> T:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set when no error was kept
