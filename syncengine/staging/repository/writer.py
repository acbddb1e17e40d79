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

A write of a :class:`Merged` kind (``submit_merged``) goes further: every write of that kind
in one batch is handed to the kind's ``run_many`` as one list, so a batch of 30 checkpoints is
one ``executemany`` instead of 30 statements (the statement, not the row, is what costs on
the writer thread). The merged writes run at the place of the first of them in the batch, so
writes of different kinds queued without waiting for each other may run in another order
than they were queued; a caller that needs an order waits (``call``) between its writes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from syncengine.errors import StagingError
from syncengine.staging.repository.core import RepositoryCore

log = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")

_WHAT = "writing checkpoints, audit rows and links"


class Merged(Generic[A, R]):
    """A kind of write whose calls queued together run as one: ``run_many`` gets their
    arguments (queue order) and returns one result for each, in the same order."""

    def __init__(self, name: str, run_many: Callable[[list[A]], Sequence[R]]) -> None:
        self.name = name
        self.run_many = run_many

    def __repr__(self) -> str:
        return f"Merged({self.name!r})"


class _MergedCall:
    __slots__ = ("arg", "kind")

    def __init__(self, kind: Merged[Any, Any], arg: Any) -> None:
        self.kind = kind
        self.arg = arg


_Item = tuple["Callable[[], Any] | _MergedCall", "Future[Any]"]


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
        self._put(write, fut)
        return fut

    def submit_merged(self, kind: Merged[A, R], arg: A) -> Future[R]:
        """Queue one write of ``kind``; those queued together run as one ``run_many`` call.
        The future resolves, with this argument's result, after commit."""
        fut: Future[R] = Future()
        self._put(_MergedCall(kind, arg), fut)
        return fut

    def call_merged(self, kind: Merged[A, R], arg: A) -> R:
        """:meth:`submit_merged`, committed before this returns."""
        return self.submit_merged(kind, arg).result()

    def _put(self, write: Callable[[], Any] | _MergedCall, fut: Future[Any]) -> None:
        with self._close_lock:
            if self._closed:
                raise StagingError("the staging writer is closed; no more writes are taken")
            self._queue.put((write, fut))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="staging-writer", daemon=True
                )
                self._thread.start()

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

    @staticmethod
    def _write_all(batch: list[_Item]) -> list[Any]:
        """Run a batch's writes (in the open transaction); one result per item. The writes
        of one merged kind run together, where the first of them stands in the queue."""
        results: list[Any] = [None] * len(batch)
        steps: list[int | Merged[Any, Any]] = []
        groups: dict[Merged[Any, Any], list[int]] = {}
        for i, (write, _fut) in enumerate(batch):
            if isinstance(write, _MergedCall):
                if write.kind not in groups:
                    groups[write.kind] = []
                    steps.append(write.kind)
                groups[write.kind].append(i)
            else:
                steps.append(i)
        for step in steps:
            if isinstance(step, int):
                write = batch[step][0]
                assert not isinstance(write, _MergedCall)
                results[step] = write()
                continue
            where = groups[step]
            args = []
            for i in where:
                call = batch[i][0]
                assert isinstance(call, _MergedCall)
                args.append(call.arg)
            out = step.run_many(args)
            if len(out) != len(args):
                raise StagingError(
                    f"{step.name}: {len(out)} result(s) for {len(args)} write(s)"
                )  # a programming error, reported to every caller of the batch
            for i, result in zip(where, out, strict=True):
                results[i] = result
        return results

    def _run(self, batch: list[_Item]) -> None:
        results: list[Any] = []
        try:
            with self._repo.joined(_WHAT, self._connection()):
                results = self._write_all(batch)
        except BaseException as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.debug("a batch of %d writes failed (%s); writing them one by one", len(batch),
                      exc)  # fmt: skip
            self._drop_connection()
            for item in batch:  # rolled back: each alone, each told its own outcome
                fut = item[1]
                try:
                    with self._repo.joined(_WHAT, self._connection()):
                        result = self._write_all([item])[0]
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
