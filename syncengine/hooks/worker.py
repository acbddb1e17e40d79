"""The background threads of ``syncengine serve``: the hook worker and the nightly schedule.

The worker works off stored hook events; the receiver only stores them and wakes it. It runs
``process()`` (handed in by the service: take due events, sync the people they name, mark
them) whenever it is woken, after waiting ``coalesce_window`` (0 by default: a burst coalesces
by itself, since the events that arrive while one batch runs are all taken by the next), and
every ``poll_interval`` regardless, which picks up retries whose time has come and events
stored before a restart. A failing ``process()`` is logged and
tried again on the next round: the thread never dies of one bad batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from syncengine.hooks.schedule import CronSchedule

log = logging.getLogger(__name__)

MAX_BATCHES_PER_ROUND = 1000
"""Bound on back-to-back batches before the worker looks at its stop flag and wake-ups."""


class Worker:
    """Calls ``process()`` (returns how many events it took) until none are due."""

    def __init__(
        self,
        process: Callable[[], int],
        *,
        coalesce_window: float,
        poll_interval: float,
        name: str = "hook-worker",
    ) -> None:
        self._process = process
        self._window = coalesce_window
        self._poll = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.rounds = 0
        self._first = False

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._first = True  # work off whatever a previous process left, at once
        self._wake.set()
        self._thread.start()

    def wake(self) -> None:
        """An event was stored: work soon (after the coalesce window)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self._poll)
            if self._stop.is_set():
                return
            if woken and self._window > 0 and not self._first:
                self._stop.wait(self._window)  # let the rest of a burst arrive
            self._first = False
            self._wake.clear()
            self.rounds += 1
            for _ in range(MAX_BATCHES_PER_ROUND):
                if self._stop.is_set():
                    return
                try:
                    taken = self._process()
                except Exception:
                    log.exception("hook worker: processing a batch failed; trying again later")
                    break
                if taken == 0:
                    break


class Scheduler:
    """Runs ``job()`` at each firing time of a cron expression (local time), one at a time."""

    def __init__(
        self,
        schedule: CronSchedule,
        job: Callable[[], None],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now().astimezone(),
        name: str = "scheduler",
    ) -> None:
        self.schedule = schedule
        self._job = job
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.next_run: datetime | None = None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.next_run = self.schedule.next_after(self._clock())
            if self.next_run is None:
                log.warning("schedule %r never fires; the scheduler stops",
                            self.schedule.expression)  # fmt: skip
                return
            log.info("next scheduled sync at %s", self.next_run.isoformat(timespec="minutes"))
            while not self._stop.is_set():
                left = (self.next_run - self._clock()).total_seconds()
                if left <= 0:
                    break
                self._stop.wait(min(left, 60.0))  # re-check the clock: it may jump
            if self._stop.is_set():
                return
            try:
                self._job()
            except Exception:
                log.exception("scheduled sync failed")
