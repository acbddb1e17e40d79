"""The run's board: which actions are ready, running, settled, and who takes what next.

The worker threads and the lane (:mod:`syncengine.executor.lane`, one thread driving the
single-call writes through libcurl's multi interface) take actions from it under one lock:
a worker takes the ready actions that are not the lane's and the lane's actions it handed on
(a first call that did not simply succeed: retries, checks, waits); the lane takes the
single-call writes. An action's dependants become ready only when its outcome is committed
(:meth:`Board.settled`), whoever ran it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from syncengine.executor.model import (
    FINAL,
    ActionOutcome,
    ActionRun,
    AuditRecord,
    ExecutionSink,
    Status,
    action_diffs,
    action_email,
)
from syncengine.plan import Action, Plan


@dataclass(frozen=True)
class Handoff:
    """A lane action whose start checkpoint is committed and whose first call is answered,
    for a worker to carry on (:meth:`~syncengine.executor.steps.ActionSteps._carry_on`)."""

    run: ActionRun
    started: float
    attempts: int


class Board:
    """The run's scheduling state; every method that reads or changes it takes ``lock``."""

    def __init__(
        self,
        plan: Plan,
        statuses: Mapping[str, str],
        sink: ExecutionSink,
        *,
        stop: threading.Event,
        lane_takes: Callable[[Action], bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.sink = sink
        self.stop = stop
        self._lane_takes = lane_takes
        self._progress = progress
        self.status: dict[str, Status] = {
            a.key: Status(statuses.get(a.key, Status.PENDING.value)) for a in plan.actions
        }
        self.already_done = sum(1 for s in self.status.values() if s is Status.DONE)
        self.by_key = {a.key: a for a in plan.actions}
        self.dependants: dict[str, list[str]] = {a.key: [] for a in plan.actions}
        for a in plan.actions:
            for d in a.depends_on:
                self.dependants.setdefault(d, []).append(a.key)
        self.waiting: dict[str, int] = {}
        self.outcomes: list[ActionOutcome] = []
        self.todo = [a for a in plan.actions if self.status[a.key] not in FINAL]
        self.total = len(self.todo)
        self.finished = 0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)  # the workers wait on it
        self.lane_cond = threading.Condition(self.lock)  # the lane waits on it
        self.ready: deque[Action] = deque()  # the workers'
        self.lane_ready: deque[Action] = deque()  # the lane's
        self.handed: deque[Handoff] = deque()  # lane actions for a worker to carry on
        self.running = 0
        self.error: BaseException | None = None
        self.halt = False  # the caller's thread was interrupted (Ctrl-C): start nothing more
        for a in self.todo:
            if self._blocked_by(a) is not None:
                continue  # skipped below, in plan order
            self.waiting[a.key] = sum(
                1 for d in a.depends_on if self.status.get(d) is not Status.DONE
            )
            if self.waiting[a.key] == 0:
                self._ready(a)
        for a in self.todo:  # dependants of actions a previous run failed or skipped
            cause = self._blocked_by(a)
            if cause is not None:
                self._skip(a, cause)

    # --- under the lock -----------------------------------------------------------------

    def stopping(self) -> bool:
        return self.error is not None or self.halt or self.stop.is_set()

    def idle(self) -> bool:
        """Nothing running and nothing left to take: every thread may end."""
        return self.running == 0 and not (self.ready or self.lane_ready or self.handed)

    def _ready(self, a: Action) -> None:
        lane = (
            self._lane_takes is not None
            and self.status[a.key] is Status.PENDING  # a resumed one is checked first
            and self._lane_takes(a)
        )
        (self.lane_ready if lane else self.ready).append(a)

    def _blocked_by(self, a: Action) -> str | None:
        for d in a.depends_on:
            if self.status.get(d) in (Status.FAILED, Status.SKIPPED):
                return d
        return None

    def _tick(self) -> None:
        self.finished += 1
        if self._progress is not None:
            self._progress(self.finished, self.total)

    def _skip(self, a: Action, because: str) -> None:
        """Skip ``a`` and, transitively, what depends on it."""
        stack = [(a, because)]
        while stack:
            item, cause = stack.pop()
            if self.status[item.key] in FINAL:
                continue
            reason = f"skipped: it depends on {cause}, which " + (
                "failed" if self.status[cause] is Status.FAILED else "was skipped"
            )
            self.sink.audit(
                [
                    AuditRecord(
                        action_key=item.key,
                        kind=item.kind.value,
                        target=item.target,
                        employee_id=item.employee_id,
                        email=action_email(item),
                        result=Status.SKIPPED.value,
                        errmsg=reason,
                        attempts=0,
                        diffs=action_diffs(item),
                    )
                ]
            )
            self.sink.finish_action(item, Status.SKIPPED, reason)
            self.status[item.key] = Status.SKIPPED
            self.outcomes.append(
                ActionOutcome(
                    item.key, item.kind.value, item.target, item.employee_id, Status.SKIPPED,
                    reason,
                )
            )  # fmt: skip
            self._tick()
            for child in self.dependants.get(item.key, ()):
                if child in self.by_key:
                    stack.append((self.by_key[child], item.key))

    def _settle(self, a: Action, outcome: ActionOutcome) -> None:
        self.outcomes.append(outcome)
        self.status[a.key] = outcome.status
        self._tick()
        if outcome.status is Status.DONE:
            for child in self.dependants.get(a.key, ()):
                if child in self.waiting and self.status[child] is not Status.SKIPPED:
                    self.waiting[child] -= 1
                    if self.waiting[child] == 0:
                        self._ready(self.by_key[child])
        else:
            for child in self.dependants.get(a.key, ()):
                if child in self.by_key:
                    self._skip(self.by_key[child], a.key)

    def _wake(self, ready_before: int, lane_before: int) -> None:
        if len(self.ready) > ready_before:
            self.cond.notify(len(self.ready) - ready_before)
        if len(self.lane_ready) > lane_before or self.running == 0:
            self.lane_cond.notify_all()
        if self.running == 0:  # all done, or a stop with nothing left running
            self.cond.notify_all()

    # --- taking actions -----------------------------------------------------------------

    def take(self, wait: bool = True) -> tuple[Action, bool] | Handoff | None:
        """A worker's next action (marked running), a lane action to carry on, or None when
        this worker is done (or, with ``wait`` false, when nothing is ready right now)."""
        with self.cond:
            while True:
                if self.handed:  # started already: carried on even after a stop
                    return self.handed.popleft()
                if self.stopping():
                    return None
                if self.ready:
                    a = self.ready.popleft()
                    if self.status[a.key] in FINAL:
                        continue  # skipped since it became ready
                    resuming = self.status[a.key] is Status.RUNNING
                    self.status[a.key] = Status.RUNNING
                    self.running += 1
                    return a, resuming
                if self.idle() or not wait:
                    return None
                self.cond.wait()  # for what the running actions make ready

    def take_lane(self, most: int) -> list[Action]:
        """Up to ``most`` of the lane's ready actions, marked running (none after a stop)."""
        taken: list[Action] = []
        with self.lock:
            while len(taken) < most and self.lane_ready and not self.stopping():
                a = self.lane_ready.popleft()
                if self.status[a.key] in FINAL:
                    continue
                self.status[a.key] = Status.RUNNING
                self.running += 1
                taken.append(a)
        return taken

    def lane_wait(self, timeout: float | None) -> bool:
        """Wait for lane work; False when the lane is done (nothing of its own ready and
        nothing running, or a stop)."""
        with self.lane_cond:
            if self.lane_ready and not self.stopping():
                return True
            if self.idle() or self.stopping():
                return False
            self.lane_cond.wait(timeout)
            return True

    def give_back(self, a: Action) -> None:
        """A lane action not started after all (the guard refuses it, or it is not one
        request): the workers' to run, from the start."""
        with self.cond:
            self.status[a.key] = Status.PENDING
            self.running -= 1
            self.ready.append(a)
            self.cond.notify()

    def hand_on(self, handoff: Handoff) -> bool:
        """Queue a lane action for a worker to carry on; False after a stop (the workers
        may be gone: the lane carries it on itself)."""
        with self.cond:
            if self.stopping():
                return False
            self.handed.append(handoff)
            self.cond.notify()
            return True

    def leave(self) -> None:
        """A worker ends: the others may be done too, or must stop."""
        with self.cond:
            self.cond.notify_all()

    # --- actions ending -----------------------------------------------------------------

    def settled(self, a: Action, outcome: ActionOutcome) -> None:
        """``a`` is over and its outcome committed: count it, wake whom it concerns."""
        with self.lock:
            self.running -= 1
            ready_before, lane_before = len(self.ready), len(self.lane_ready)
            self._settle(a, outcome)
            self._wake(ready_before, lane_before)

    def failed(self, exc: BaseException) -> None:
        """The sink failed: stop starting new work (the action stays ``running``)."""
        with self.lock:
            self.running -= 1
            if self.error is None:
                self.error = exc
            self.cond.notify_all()
            self.lane_cond.notify_all()

    def crash(self, exc: BaseException) -> None:
        """The lane itself failed: stop everything (its actions stay ``running``)."""
        with self.lock:
            if self.error is None:
                self.error = exc
            self.cond.notify_all()
            self.lane_cond.notify_all()

    def interrupt(self) -> None:
        with self.lock:
            self.halt = True
            self.cond.notify_all()
            self.lane_cond.notify_all()
