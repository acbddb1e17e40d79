"""The executor: dependency order, concurrency, checkpoints, retries and audit rows."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from syncengine.callpolicy import CallPolicy, action_scope
from syncengine.domain import Mailbox, normalise_path
from syncengine.errors import (
    AlreadyExistsError,
    NotFoundError,
    ProviderError,
    RetriableProviderError,
    SyncEngineError,
)
from syncengine.executor.handlers import HANDLERS
from syncengine.executor.model import (
    FINAL,
    WRITE_KINDS,
    ActionOutcome,
    ActionRun,
    AuditRecord,
    DepartmentExists,
    ExecutionResult,
    ExecutionSink,
    ExecutorSettings,
    LinkChange,
    Mismatch,
    NoPasswordDelivery,
    PasswordSink,
    Status,
    T,
    action_diffs,
    action_email,
    is_retriable,
)
from syncengine.plan import Action, ActionKind, Plan
from syncengine.providers.base import MailboxProvider

log = logging.getLogger(__name__)

PREPARERS_PER_SLOTS = 2
"""One preparing worker beyond the call slots per this many slots (see Executor._workers)."""


@dataclass(frozen=True)
class _Held:
    """An action whose outcome write is queued, not yet known to be committed."""

    outcome: ActionOutcome
    done: Future[None]
    run: ActionRun
    started: float
    link: LinkChange | None

    @property
    def action(self) -> Action:
        return self.run.action


class Executor:
    """Runs the actions of one plan; see the module docstring for the guarantees."""

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
    ) -> None:
        self.provider = provider
        self._guard = guard
        self.sink = sink
        self.passwords: PasswordSink = passwords or NoPasswordDelivery()
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

    # --- scheduling ---------------------------------------------------------------------

    def run(self, plan: Plan, statuses: Mapping[str, str] | None = None) -> ExecutionResult:
        """Apply ``plan``. ``statuses`` are the stored checkpoints by action key (absent =
        pending): ``done`` actions are not run again, ``running`` ones are re-checked against
        the live state first, ``failed``/``skipped`` ones stay as they are (and so do their
        dependants)."""
        started = self._clock()
        statuses = dict(statuses or {})
        status: dict[str, Status] = {
            a.key: Status(statuses.get(a.key, Status.PENDING.value)) for a in plan.actions
        }
        already_done = sum(1 for s in status.values() if s is Status.DONE)
        by_key = {a.key: a for a in plan.actions}
        dependants: dict[str, list[str]] = {a.key: [] for a in plan.actions}
        waiting: dict[str, int] = {}
        for a in plan.actions:
            for d in a.depends_on:
                dependants.setdefault(d, []).append(a.key)
        outcomes: list[ActionOutcome] = []
        todo = [a for a in plan.actions if status[a.key] not in FINAL]
        total = len(todo)

        def blocked_by(a: Action) -> str | None:
            for d in a.depends_on:
                if status.get(d) in (Status.FAILED, Status.SKIPPED):
                    return d
            return None

        finished = 0

        def tick() -> None:
            nonlocal finished
            finished += 1
            if self._progress is not None:
                self._progress(finished, total)

        ready: deque[Action] = deque()
        for a in todo:
            if blocked_by(a) is not None:
                continue  # skipped below, in plan order
            waiting[a.key] = sum(1 for d in a.depends_on if status.get(d) is not Status.DONE)
            if waiting[a.key] == 0:
                ready.append(a)

        def skip(a: Action, because: str) -> None:
            """Skip ``a`` and, transitively, what depends on it."""
            stack = [(a, because)]
            while stack:
                item, cause = stack.pop()
                if status[item.key] in FINAL:
                    continue
                reason = f"skipped: it depends on {cause}, which " + (
                    "failed" if status[cause] is Status.FAILED else "was skipped"
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
                status[item.key] = Status.SKIPPED
                outcomes.append(
                    ActionOutcome(
                        item.key,
                        item.kind.value,
                        item.target,
                        item.employee_id,
                        Status.SKIPPED,
                        reason,
                    )
                )
                tick()
                for child in dependants.get(item.key, ()):
                    if child in by_key:
                        stack.append((by_key[child], item.key))

        for a in todo:  # dependants of actions a previous run failed or skipped
            cause = blocked_by(a)
            if cause is not None:
                skip(a, cause)

        # The workers schedule themselves: each takes the next ready action, runs it, records
        # its outcome and what became ready, under one lock, and goes on; nobody hands work
        # over (no thread wakes another per action unless it waits for a dependency).
        cond = threading.Condition()
        running = 0
        error: BaseException | None = None
        halt = False  # the caller's thread was interrupted (Ctrl-C): start nothing more

        def take(wait: bool = True) -> tuple[Action, bool] | None:
            """The next action to run (marked running), or None when this worker is done (or,
            with ``wait`` false, when nothing is ready right now)."""
            nonlocal running
            while True:
                if error is not None or halt or self._stop.is_set():
                    return None
                if ready:
                    a = ready.popleft()
                    if status[a.key] in FINAL:
                        continue  # skipped since it became ready
                    resuming = status[a.key] is Status.RUNNING
                    status[a.key] = Status.RUNNING
                    running += 1
                    return a, resuming
                if running == 0 or not wait:
                    return None
                cond.wait()  # for what the running actions make ready

        def settle(a: Action, outcome: ActionOutcome) -> None:
            outcomes.append(outcome)
            status[a.key] = outcome.status
            tick()
            if outcome.status is Status.DONE:
                for child in dependants.get(a.key, ()):
                    if child in waiting and status[child] is not Status.SKIPPED:
                        waiting[child] -= 1
                        if waiting[child] == 0:
                            ready.append(by_key[child])
            else:
                for child in dependants.get(a.key, ()):
                    if child in by_key:
                        skip(by_key[child], a.key)

        def settled(a: Action, outcome: ActionOutcome) -> None:
            """``a`` is over and its outcome committed: count it, wake whom it concerns."""
            nonlocal running
            with cond:
                running -= 1
                before = len(ready)
                settle(a, outcome)
                if len(ready) > before:
                    cond.notify(len(ready) - before)
                elif not ready and running == 0:
                    cond.notify_all()

        def failed(exc: BaseException) -> None:
            """The sink failed: stop starting new work (the action stays ``running``)."""
            nonlocal running, error
            with cond:
                running -= 1
                if error is None:
                    error = exc
                cond.notify_all()

        def work() -> None:
            # A worker queues an action's outcome instead of waiting for it (``held``), takes
            # the next action and waits once: for that action's start checkpoint, committed
            # with (or after) the held outcome. It settles the held action then, before the
            # next call; with nothing ready to take, it waits for the held outcome alone.
            held: _Held | None = None

            def settle_held() -> None:
                nonlocal held
                if held is None:
                    return
                h, held = held, None
                try:
                    outcome = self._complete(h)
                except BaseException as exc:
                    failed(exc)
                    raise
                settled(h.action, outcome)

            while True:
                with cond:
                    got = take(wait=held is None)
                    if got is None and held is None:
                        cond.notify_all()  # the others may be done too, or must stop
                        return
                if got is None:
                    try:
                        settle_held()
                    except BaseException:
                        return
                    continue
                a, resuming = got
                try:
                    result = self._execute(a, resuming, after_start=settle_held)
                except BaseException as exc:  # the sink failed: stop starting new work
                    if held is not None:
                        try:
                            settle_held()
                        except BaseException:
                            log.debug("the held outcome failed too", exc_info=True)
                    failed(exc)
                    return
                if isinstance(result, _Held):
                    held = result
                else:
                    settled(a, result)

        workers = [
            threading.Thread(target=work, name=f"apply-{i}", daemon=True)
            for i in range(max(1, min(self._workers(), len(todo))))
        ]
        for t in workers:
            t.start()
        try:
            for t in workers:
                t.join()
        except BaseException:
            with cond:
                halt = True
                cond.notify_all()
            for t in workers:
                t.join()
            raise
        interrupted = bool(ready) and (error is not None or self._stop.is_set())
        if error is not None:
            raise error
        if self._stop.is_set() and any(s not in FINAL for s in status.values()):
            interrupted = True
        return ExecutionResult(
            outcomes=tuple(outcomes),
            already_done=already_done,
            seconds=self._clock() - started,
            interrupted=interrupted,
        )

    def _workers(self) -> int:
        """Worker threads: the call slots plus preparers, so that while ``concurrency`` calls
        are in flight the next actions' start checkpoints commit (one action's intent is
        still durable before its own call, its outcome after)."""
        c = self.settings.concurrency
        return c + (c + PREPARERS_PER_SLOTS - 1) // PREPARERS_PER_SLOTS

    # --- one action ---------------------------------------------------------------------

    def _execute(
        self, action: Action, resuming: bool, after_start: Callable[[], None] | None = None
    ) -> ActionOutcome | _Held:
        """One action, from its start checkpoint to its outcome. ``after_start`` runs once
        the start checkpoint is committed. A done or failed action that made calls comes
        back as :class:`_Held`: its outcome queued, to be completed with :meth:`_complete`;
        the other paths (refused, done in an earlier run) return an outcome committed."""
        started = self._clock()
        refused = self._guard(action) if self._guard is not None else None
        starting = self.sink.start_action_later(action, resuming=resuming)
        run = ActionRun(action, check_first=resuming and action.kind in WRITE_KINDS)
        try:
            if refused is None and not resuming:
                # A new mailbox's password goes to its channel (a file: fsync) while the
                # start checkpoint commits: both are durable before the call, as before.
                HANDLERS[action.kind].prepare(self, run)
        finally:
            attempts = starting.result()
        if after_start is not None:
            after_start()
        if refused is not None:
            return self._refuse(action, refused, attempts)
        if resuming and self.sink.already_audited_done(action):
            # Killed between its outcome row and its checkpoint: it is done, say nothing twice.
            self.sink.finish_action(action, Status.DONE, None)
            return ActionOutcome(
                action.key,
                action.kind.value,
                action.target,
                action.employee_id,
                Status.DONE,
                "done in an earlier run",
                attempts,
            )
        status, detail = Status.DONE, ""
        try:
            self._apply_with_retries(run)
            detail = run.note
        except RetriableProviderError as exc:
            status = Status.FAILED
            detail = (
                f"gave up after {run.tries} tries ({run.calls} call(s) with the checks in "
                f"between): {exc}; the next run will check and retry"
            )
        except (ProviderError, Mismatch) as exc:
            status = Status.FAILED
            detail = str(exc)
        if status is Status.FAILED and run.password is not None and not run.maybe_written:
            # The create certainly did not happen: the password handed over is not in use.
            self.passwords.void(action.employee_id, run.password.email, detail)
        if status is Status.DONE and action.kind is ActionKind.CREATE_DEPARTMENT:
            with self._created_lock:
                self._created_departments.add(normalise_path(action.target))
        if status is Status.DONE and action.group is not None:
            try:
                self._store_group(action)
            except SyncEngineError as exc:
                status = Status.FAILED
                detail = (
                    "the change was made in Exmail, but storing the identity link or "
                    f"owned group failed: {exc}"
                )
        run.password = None  # forget it as soon as possible
        link = self._link_change(action) if status is Status.DONE else None
        elapsed, done = self._queue_outcome(run, status, detail, started, link)
        outcome = ActionOutcome(
            action.key,
            action.kind.value,
            action.target,
            action.employee_id,
            status,
            detail,
            attempts,
            run.calls,
            elapsed,
        )
        return _Held(outcome, done, run, started, link)

    def _complete(self, held: _Held) -> ActionOutcome:
        """The outcome of a held action once its write is committed. When the write failed
        and it carried a link change, nothing of it was written (one transaction): the action
        fails, saying why, and that outcome is written instead (waited for)."""
        try:
            held.done.result()
        except SyncEngineError as exc:
            if held.link is None:
                raise
            detail = (
                "the change was made in Exmail, but storing the identity link or owned group "
                f"failed: {exc}"
            )
            elapsed, done = self._queue_outcome(held.run, Status.FAILED, detail, held.started, None)
            done.result()
            o = held.outcome
            return ActionOutcome(o.key, o.kind, o.target, o.employee_id, Status.FAILED,
                                 detail, o.attempts, o.calls, elapsed)  # fmt: skip
        return held.outcome

    def _queue_outcome(
        self, run: ActionRun, status: Status, detail: str, started: float, link: LinkChange | None
    ) -> tuple[int, Future[None]]:
        """The action's attempt rows, its outcome row, its checkpoint and its link change,
        handed to the sink as one write; the action's duration in ms and the write (queued,
        committed when the future resolves)."""
        action = run.action
        elapsed = int((self._clock() - started) * 1000)
        last = next((r for r in reversed(run.records) if r.call is not None), None)
        outcome = AuditRecord(
            action_key=action.key,
            kind=action.kind.value,
            target=action.target,
            employee_id=action.employee_id,
            email=action_email(action),
            result=status.value,
            attempts=run.calls,
            errcode=last.errcode if status is Status.FAILED and last else None,
            errmsg=detail or None,
            duration_ms=elapsed,
            diffs=action_diffs(action),
        )
        self.sink.audit([*run.records, outcome])
        done = self.sink.finish_action_later(
            action, status, detail if status is Status.FAILED else None, link=link
        )
        return elapsed, done

    def _refuse(self, action: Action, reason: str, attempts: int) -> ActionOutcome:
        """The guard forbids the action: no call, one ``refused`` audit row, failed."""
        self.sink.audit(
            [
                AuditRecord(
                    action_key=action.key,
                    kind=action.kind.value,
                    target=action.target,
                    employee_id=action.employee_id,
                    email=action_email(action),
                    result="refused",
                    attempts=0,
                    errmsg=reason,
                    diffs=action_diffs(action),
                )
            ]
        )
        self.sink.finish_action(action, Status.FAILED, reason)
        return ActionOutcome(
            action.key,
            action.kind.value,
            action.target,
            action.employee_id,
            Status.FAILED,
            reason,
            attempts,
        )

    def _apply_with_retries(self, run: ActionRun) -> None:
        retrying = self._retry.retrying(
            is_retriable,
            sleep=self._sleep,
            budget=self.calls.budget,
            on_retry=lambda _exc: self.calls.stats.retry(run.action.kind.value),
        )
        for attempt in retrying:
            with attempt, action_scope():
                self._attempt(run)

    def _call(self, run: ActionRun, name: str, fn: Callable[[], T]) -> T:
        """One provider call: timed, and recorded as an attempt row (the provider paces it)."""
        run.calls += 1
        a = run.action
        result, errcode, errmsg = "ok", None, None
        self._slots.acquire()  # at most ``concurrency`` calls at once
        t0 = self._clock()
        try:
            return fn()
        except ProviderError as exc:
            result = "retry" if exc.retriable else "error"
            if exc.errcode is not None:
                errcode = str(exc.errcode)
            elif exc.http_status is not None:
                errcode = f"http {exc.http_status}"
            errmsg = str(exc)
            raise
        finally:
            self._slots.release()
            run.records.append(
                AuditRecord(
                    action_key=a.key,
                    kind=a.kind.value,
                    target=a.target,
                    employee_id=a.employee_id,
                    email=action_email(a),
                    result=result,
                    call=name,
                    attempt=run.calls,
                    errcode=errcode,
                    errmsg=errmsg,
                    duration_ms=int((self._clock() - t0) * 1000),
                )
            )

    def _attempt(self, run: ActionRun) -> None:
        run.tries += 1
        a = run.action
        if a.kind not in WRITE_KINDS:
            return
        if run.check_first:
            if self._satisfied(run):
                run.note = run.note or "already in the wanted state (checked after an "
                "interrupted or failed call)"
                return
            run.check_first = False
        try:
            self._write_when_visible(run)
        except RetriableProviderError:
            run.check_first = True  # the write may have happened: look before redoing it
            run.maybe_written = True
            raise
        except AlreadyExistsError as exc:
            creates = (
                ActionKind.CREATE_USER,
                ActionKind.CREATE_DEPARTMENT,
                ActionKind.CREATE_GROUP,
            )
            if a.kind in creates and self._satisfied(run):
                run.note = f"already existed as asked ({exc.errmsg or exc.message})"
                if run.password is not None and not run.maybe_written:
                    # Made by someone else, not by an earlier call of ours: not our password.
                    self.passwords.void(
                        a.employee_id, run.password.email, "the mailbox existed already"
                    )
                    run.password = None
                return
            raise
        except NotFoundError:
            deletes = (
                ActionKind.DELETE_USER,
                ActionKind.DELETE_DEPARTMENT,
                ActionKind.DELETE_GROUP,
            )
            if a.kind in deletes and self._satisfied(run):
                run.note = "already gone"
                return
            raise

    def _new_departments_of(self, action: Action) -> list[str]:
        """The departments (or their ancestors) of a member action that this run created."""
        if action.kind is ActionKind.CREATE_USER and action.mailbox is not None:
            paths: Sequence[str] = action.mailbox.departments
        elif action.update is not None and action.update.departments is not None:
            paths = action.update.departments
        else:
            return []
        with self._created_lock:
            created = set(self._created_departments)
        found = []
        for path in paths:
            parts = normalise_path(path).split("/")
            if any("/".join(parts[:n]) in created for n in range(1, len(parts) + 1)):
                found.append(normalise_path(path))
        return found

    def _write_when_visible(self, run: ActionRun) -> None:
        """:meth:`_write`, waiting (with backoff) while a department this run created is not
        yet visible to the member call. A "not found" certainly wrote nothing, so no check
        before the next try is needed."""
        s = self.settings
        waited, pause = 0.0, s.visibility_backoff
        while True:
            try:
                self._write(run)
                return
            except NotFoundError as exc:
                fresh = self._new_departments_of(run.action)
                if not fresh or waited >= s.visibility_wait or self._stop.is_set():
                    raise
                pause = min(pause, s.visibility_wait - waited)
                log.info("%s: %s; department(s) %s created in this run, trying again in "
                         "%.2f s", run.action.key, exc, ", ".join(fresh), pause)  # fmt: skip
                self._sleep(pause)
                waited += pause
                pause *= 2
                run.note = f"waited {waited:.2f} s for new department(s) {', '.join(fresh)}"

    def _write(self, run: ActionRun) -> None:
        HANDLERS[run.action.kind].write(self, run)

    def _satisfied(self, run: ActionRun) -> bool:
        """Whether the live directory already is what the action asks. Raises Mismatch for
        a create whose object exists but differs (never overwrite what someone else made)."""
        return HANDLERS[run.action.kind].satisfied(self, run)

    def _exists(self, run: ActionRun, path: str) -> bool:
        return self._call(run, "department_exists", lambda: self._department_exists(path))

    def _live(self, run: ActionRun, email: str) -> Mailbox | None:
        return self._call(run, "get_user", lambda: self.provider.get_user(email))

    def _store_group(self, action: Action) -> None:
        """The owned-group ledger row a done group action asks for (committed on return)."""
        assert action.group is not None
        if action.kind is ActionKind.DELETE_GROUP:
            self.sink.remove_group(action.group.address)
        else:
            self.sink.store_group(action.group)

    @staticmethod
    def _link_change(action: Action) -> LinkChange | None:
        """The identity-link bookkeeping a done action of this kind asks for (written with
        its outcome); a group action has none (its ledger row is written before)."""
        if action.group is not None:
            return None
        if action.kind in (ActionKind.DELETE_USER, ActionKind.UNLINK):
            return LinkChange(remove=action.employee_id) if action.employee_id else None
        if action.link is not None:
            return LinkChange(store=action.link)
        return None

    def _departments_from_state(self, path: str) -> bool:
        wanted = normalise_path(path)
        return any(normalise_path(p.path) == wanted for p in self.provider.read_state().parties)
