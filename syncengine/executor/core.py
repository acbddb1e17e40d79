"""The executor: dependency order, concurrency, checkpoints, retries and audit rows.

The run's state is a :class:`~syncengine.executor.board.Board`; worker threads run the
actions from it (:class:`~syncengine.executor.steps.ActionSteps`), and on a provider whose
single-call writes can go through libcurl's multi interface (Gen 2 on libcurl) one lane
thread (:mod:`syncengine.executor.lane`) sends those writes, all in flight at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from syncengine.callpolicy import CallPolicy
from syncengine.executor.board import Board, Handoff
from syncengine.executor.handlers import HANDLERS
from syncengine.executor.lane import DirectWrites, Lane
from syncengine.executor.model import (
    FINAL,
    ActionOutcome,
    DepartmentExists,
    ExecutionResult,
    ExecutionSink,
    ExecutorSettings,
    NoPasswordDelivery,
    PasswordSink,
)
from syncengine.executor.steps import ActionSteps, _Held
from syncengine.plan import Action, Plan
from syncengine.providers.base import MailboxProvider

log = logging.getLogger(__name__)

LANE_FROM = 48
"""Calls at once from which the lane sends the single-call writes by default. Below it the
worker threads are not GIL-bound and answer a little sooner (bench/apply.py, 10,000 creates
at 20 ms, same runs: at c=16 and c=32 the threads reach 0.94 and 0.92 of the ideal between
the first and the last create, the lane 0.90-0.92 and 0.87, at half the CPU; at c=64 the
threads 0.62, the lane 0.86)."""

PREPARERS_PER_SLOTS = 2
"""One preparing worker beyond the call slots per this many slots (see Executor._workers)."""


class Executor(ActionSteps):
    """Runs the actions of one plan; see the package docstring for the guarantees."""

    def __init__(
        self,
        provider: MailboxProvider,
        sink: ExecutionSink,
        *,
        passwords: PasswordSink | None = None,
        settings: ExecutorSettings | None = None,
        department_exists: DepartmentExists | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        calls: CallPolicy | None = None,
        progress: Callable[[int, int], None] | None = None,
        stop: threading.Event | None = None,
        guard: Callable[[Action], str | None] | None = None,
        lane: bool | None = None,
    ) -> None:
        """``lane``: send single-call writes on one thread through the provider's multi
        poster when it has one; None: from :data:`LANE_FROM` calls at once; False: every
        action on the worker threads."""
        self.provider = provider
        self._guard = guard
        self.sink = sink
        self.passwords = passwords or NoPasswordDelivery()
        self.settings = settings or ExecutorSettings()
        s = self.settings
        self._department_exists = department_exists or self._departments_from_state
        self._sleep = sleep
        self._clock = clock
        # Pacing is the provider's (it paces every request it sends with the process's call
        # policy); the executor shares the policy's run budget and retry counters.
        self._retry = s.retry_policy()
        self.calls = calls or CallPolicy(self._retry, sleep=sleep, clock=clock)
        self._progress = progress
        self._stop = stop or threading.Event()
        self._created_departments: set[str] = set()  # made by this run (visibility waits)
        self._created_lock = threading.Lock()
        # ``concurrency`` is the number of Exmail calls at once: each call takes a slot. More
        # workers than slots prepare actions (start checkpoint, password) while the calls run,
        # so that a slot freed by a finished call is taken by a prepared action at once.
        self._slots = threading.Semaphore(max(1, s.concurrency))
        if lane is None:
            lane = s.concurrency >= LANE_FROM
        self.direct_writes = provider if lane and isinstance(provider, DirectWrites) else None

    # --- scheduling ---------------------------------------------------------------------

    def run(self, plan: Plan, statuses: Mapping[str, str] | None = None) -> ExecutionResult:
        """Apply ``plan``. ``statuses`` are the stored checkpoints by action key (absent =
        pending): ``done`` actions are not run again, ``running`` ones are re-checked against
        the live state first, ``failed``/``skipped`` ones stay as they are (and so do their
        dependants)."""
        started = self._clock()
        poster = self.direct_writes.multi_poster() if self.direct_writes else None
        board = Board(
            plan,
            dict(statuses or {}),
            self.sink,
            stop=self._stop,
            lane_takes=(lambda a: HANDLERS[a.kind].single(a)) if poster else None,
            progress=self._progress,
        )
        threads = [
            threading.Thread(target=self._work, args=(board,), name=f"apply-{i}", daemon=True)
            for i in range(max(1, min(self._workers(), len(board.todo))))
        ]
        if poster is not None:
            lane = Lane(self, board, poster)
            threads.append(threading.Thread(target=lane.run, name="apply-lane", daemon=True))
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException:
            board.interrupt()
            for t in threads:
                t.join()
            raise
        left = bool(board.ready or board.lane_ready)
        interrupted = left and (board.error is not None or self._stop.is_set())
        if board.error is not None:
            raise board.error
        if self._stop.is_set() and any(s not in FINAL for s in board.status.values()):
            interrupted = True
        return ExecutionResult(
            outcomes=tuple(board.outcomes),
            already_done=board.already_done,
            seconds=self._clock() - started,
            interrupted=interrupted,
        )

    def _work(self, board: Board) -> None:
        """A worker thread. It queues an action's outcome instead of waiting for it
        (``held``), takes the next action and waits once: for that action's start
        checkpoint, committed with (or after) the held outcome. It settles the held action
        then, before the next call; with nothing ready to take, it waits for the held
        outcome alone."""
        held: _Held | None = None

        def settle_held() -> None:
            nonlocal held
            if held is None:
                return
            h, held = held, None
            try:
                outcome = self._complete(h)
            except BaseException as exc:
                board.failed(exc)
                raise
            board.settled(h.action, outcome)

        while True:
            got = board.take(wait=held is None)
            if got is None and held is None:
                board.leave()
                return
            try:
                if got is None:
                    settle_held()
                    continue
                result: ActionOutcome | _Held
                if isinstance(got, Handoff):  # a lane action, its first call answered
                    settle_held()
                    result = self._carry_on(got.run, got.started, got.attempts)
                    a = got.run.action
                else:
                    a, resuming = got
                    result = self._execute(a, resuming, after_start=settle_held)
            except BaseException as exc:  # the sink failed: stop starting new work
                if got is None:
                    return  # the held outcome's failure, reported by settle_held
                if held is not None:
                    try:
                        settle_held()
                    except BaseException:
                        log.debug("the held outcome failed too", exc_info=True)
                board.failed(exc)
                return
            if isinstance(result, _Held):
                held = result
            else:
                board.settled(a, result)

    def _workers(self) -> int:
        """Worker threads: the call slots plus preparers, so that while ``concurrency`` calls
        are in flight the next actions' start checkpoints commit (one action's intent is
        still durable before its own call, its outcome after)."""
        c = self.settings.concurrency
        return c + (c + PREPARERS_PER_SLOTS - 1) // PREPARERS_PER_SLOTS
