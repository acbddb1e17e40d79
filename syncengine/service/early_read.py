"""The live directory, read in a thread of its own while the night does other work.

A Gen 2 read is three calls (gettoken, department/list, user/list) whose answers take Exmail
longer to make than to decode; nothing a night does before its plan changes the directory,
except finishing an interrupted apply. So ``sync`` starts the read before its ingest, and the
CLI starts it earlier still, before the staging database's libraries are even imported: the
wait on Exmail overlaps the imports and the ingest. A night that resumes an interrupted apply
throws the early read away and reads again after its writes (:mod:`syncengine.service.nightly`).

Kept apart from :mod:`syncengine.service.noop_proof` so that starting a read imports only the
provider, not the staging layer or the planner.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from syncengine.errors import ConfigError
from syncengine.service.sync_checks import report_path, sync_secrets

if TYPE_CHECKING:
    from syncengine.callpolicy import CallCounts
    from syncengine.domain import MailboxState
    from syncengine.service.engine import Engine


class EarlyRead:
    """The live directory, read in a thread of its own (its result and its error are handed
    to the caller's thread by :meth:`result`). For Gen 2 only: a Gen 1 read is a call per
    member, which a night whose source then fails should not have spent.

    The provider is built in the caller's thread, so the reading thread imports nothing
    (two threads importing at once could meet in a circular import); ``calls_before`` is
    the engine's call count before the read's first call, for the night's report.

    ``start=False`` (``apply PLANFILE``): the thread waits until :meth:`start` says whether
    to read at all (only once the file is known to be a saved plan to apply)."""

    def __init__(self, engine: Engine, *, start: bool = True) -> None:
        self._engine = engine
        self.calls_before: CallCounts = engine.calls.stats.snapshot()
        self._read: tuple[MailboxState, float] | None = None
        self._error: BaseException | None = None
        self._events: queue.SimpleQueue[tuple[int, int | None]] = queue.SimpleQueue()
        self._read_it = start
        self._go = threading.Event()
        if start:
            self._go.set()
        try:
            engine.provider  # noqa: B018  (built here; see the class docstring)
        except Exception:
            pass
        self._thread = threading.Thread(target=self._run, name="read-state", daemon=True)
        self._thread.start()

    @property
    def was_read(self) -> bool:
        """Whether the read was (or is being) made."""
        return self._read_it

    def start(self, read: bool) -> None:
        """Read now (``read``), or end without a call."""
        self._read_it = read
        self._go.set()

    def _run(self) -> None:
        self._go.wait()
        if not self._read_it:
            return
        started = time.perf_counter()
        try:
            state = self._engine.provider.read_state(
                progress=lambda done, total: self._events.put((done, total))
            )
        except BaseException as exc:  # handed to the caller's thread by result()
            self._error = exc
            return
        self._read = (state, time.perf_counter() - started)

    def result(
        self, progress: Callable[[str, int, int | None], None] | None = None
    ) -> tuple[MailboxState, float]:
        """The state and the read's seconds (its error raised here); its progress is passed
        on from the caller's thread."""
        self._go.set()
        while True:
            self._thread.join(0.1)
            while not self._events.empty():
                done, total = self._events.get()
                if progress is not None:
                    progress("reading mailboxes", done, total)
            if not self._thread.is_alive():
                break
        if self._error is not None:
            raise self._error
        assert self._read is not None, "the state was not read"
        return self._read

    def close(self) -> None:
        """Wait for the read to end (or never begin) when the caller stops before using it."""
        self._go.set()
        self._thread.join()


def early_read_for_sync(
    engine: Engine, *, dry_run: bool, notify: bool | None, report: str | None
) -> EarlyRead | None:
    """The early read a ``sync`` of ``engine`` can start now, or None: Gen 2 only, and only
    when what the night checks before any work passes (the ``--report`` placeholders, every
    secret it needs), so that a night refused for those has still made no call to Exmail."""
    config = engine.config
    if config.exmail.api != "v2":
        return None
    try:
        if report is not None:
            report_path(report, when=engine.local_now(), run_id=0)
        config.require_secrets(*sync_secrets((not dry_run) if notify is None else notify))
    except ConfigError:
        return None  # the night reports it, before any work
    return EarlyRead(engine)
