"""Group commit: the writes of many threads in one transaction, each caller told its own fate.

An apply at concurrency 32 makes thousands of small writes a second (a checkpoint before each
call, audit rows, the link and the final checkpoint after it). One transaction each costs a
``BEGIN IMMEDIATE``, a commit and the lock hand-over between threads for every row. The
:class:`GroupWriter` owns one thread: callers hand it a write (a function of the repository,
run in that thread), it gathers whatever is queued when it comes round (nothing waits on a
timer: while one batch commits, the next one fills up), runs the lot in ONE transaction with
the repository's methods joining it, commits, and only then resolves each caller's future.

So "durable when it returns" still holds for a caller that waits (``call``): its row is
committed before it goes on, exactly as with its own transaction. When a batch fails (an
address linked twice, the database went away), it is rolled back and every write of it is
run again alone in its own transaction, so each caller gets its own error and nobody else's.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from syncengine.errors import StagingError
from syncengine.staging.repository.core import RepositoryCore

log = logging.getLogger(__name__)

T = TypeVar("T")

_WHAT = "writing checkpoints, audit rows and links"
_Item = tuple[Callable[[], Any], "Future[Any]"]


class GroupWriter:
    """One writer thread over ``repo``; see the module docstring."""

    def __init__(self, repo: RepositoryCore, *, max_batch: int = 512) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._repo = repo
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self.batches = 0
        self.writes = 0
        self._conn: Connection | None = None  # used by the writer thread only
        self._thread: threading.Thread | None = None  # running while writes come (see _loop)

    def submit(self, write: Callable[[], T]) -> Future[T]:
        """Queue ``write`` (it calls repository methods); the future resolves after commit."""
        fut: Future[T] = Future()
        with self._close_lock:
            if self._closed:
                raise StagingError("the staging writer is closed; no more writes are taken")
            self._queue.put((write, fut))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="staging-writer", daemon=True
                )
                self._thread.start()
        return fut

    def call(self, write: Callable[[], T]) -> T:
        """``write``, committed (with whatever else was queued) before this returns."""
        return self.submit(write).result()

    def close(self) -> None:
        """Write everything queued so far, then stop the thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
            thread = self._thread
        if thread is not None:
            thread.join()
        log.debug("group writer: %d writes in %d batches", self.writes, self.batches)

    def __enter__(self) -> GroupWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the writer thread --------------------------------------------------------------

    def _loop(self) -> None:
        """Batches while writes come. The connection goes back to the pool after
        ``HOLD_SECONDS`` without a write, and the thread ends after ``IDLE_SECONDS`` (the next
        write starts another), so a writer nobody closed holds neither."""
        self._batches()
        if self._closed:  # no thread comes after this one (an idle one dropped it already)
            self._drop_connection()

    HOLD_SECONDS = 0.05
    IDLE_SECONDS = 2.0

    def _next(self) -> _Item | None:
        """The next queued item; None to stop (closed, or idle with nothing queued)."""
        try:
            return self._queue.get(timeout=self.HOLD_SECONDS)
        except queue.Empty:
            self._drop_connection()
        while True:
            try:
                return self._queue.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._close_lock:  # submit() starts a new thread once this one is gone
                    if self._queue.empty():
                        self._thread = None
                        return None

    def _connection(self) -> Connection | None:
        """The connection the batches run on, opened once (None: the pool's, per batch)."""
        if self._conn is None:
            try:
                self._conn = self._repo.engine.connect()
            except SQLAlchemyError:
                return None  # each batch then reports the failure to its callers
        return self._conn

    def _batches(self) -> None:
        stopping = False
        while not stopping:
            first = self._next()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        results: list[Any] = []
        try:
            with self._repo.joined(_WHAT, self._connection()):
                for write, _fut in batch:
                    results.append(write())
        except BaseException as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.debug("a batch of %d writes failed (%s); writing them one by one", len(batch),
                      exc)  # fmt: skip
            self._drop_connection()
            for write, fut in batch:  # rolled back: each alone, each told its own outcome
                try:
                    with self._repo.joined(_WHAT, self._connection()):
                        result = write()
                except BaseException as one:
                    fut.set_exception(one)
                    self._drop_connection()
                else:
                    fut.set_result(result)
            return
        self.batches += 1
        self.writes += len(batch)
        for (_write, fut), result in zip(batch, results, strict=True):
            fut.set_result(result)

    def _drop_connection(self) -> None:
        """After a failure, start again on a fresh connection (this one may be broken)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except SQLAlchemyError:
                log.debug("closing the writer's connection failed", exc_info=True)
            self._conn = None
