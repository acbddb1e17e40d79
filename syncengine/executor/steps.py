"""The steps of one action: start checkpoint, writes with retries and look-before-redo,
outcome (the :class:`~syncengine.executor.core.Executor`'s, as a mixin)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from syncengine.callpolicy import CallPolicy, RetryPolicy, action_scope
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
    WRITE_KINDS,
    ActionOutcome,
    ActionRun,
    AuditRecord,
    DepartmentExists,
    ExecutionSink,
    ExecutorSettings,
    LinkChange,
    Mismatch,
    PasswordSink,
    Status,
    T,
    action_diffs,
    action_email,
    is_retriable,
)
from syncengine.plan import Action, ActionKind
from syncengine.providers.base import MailboxProvider

if TYPE_CHECKING:
    from syncengine.executor.lane import DirectWrites

log = logging.getLogger("syncengine.executor.core")


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


def failure_fields(exc: ProviderError) -> tuple[str, str | None, str]:
    """An attempt row's result, errcode and message for a call that failed with ``exc``."""
    if exc.errcode is not None:
        errcode: str | None = str(exc.errcode)
    elif exc.http_status is not None:
        errcode = f"http {exc.http_status}"
    else:
        errcode = None
    return ("retry" if exc.retriable else "error"), errcode, str(exc)


def call_record(
    run: ActionRun, name: str, result: str, errcode: str | None, errmsg: str | None,
    seconds: float,
) -> AuditRecord:  # fmt: skip
    """The attempt row of the call ``run.calls`` of an action."""
    a = run.action
    return AuditRecord(
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
        duration_ms=int(seconds * 1000),
    )


class ActionSteps:
    """One action's steps; the executor supplies the attributes below."""

    provider: MailboxProvider
    sink: ExecutionSink
    passwords: PasswordSink
    settings: ExecutorSettings
    calls: CallPolicy
    _guard: Callable[[Action], str | None] | None
    _department_exists: DepartmentExists
    _sleep: Callable[[float], None]
    _clock: Callable[[], float]
    _retry: RetryPolicy
    _stop: threading.Event
    _created_departments: set[str]
    _created_lock: threading.Lock
    _slots: threading.Semaphore
    direct_writes: DirectWrites | None  # the provider, when the lane may send its writes

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
        return self._carry_on(run, started, attempts)

    def _carry_on(self, run: ActionRun, started: float, attempts: int) -> _Held:
        """An action whose start checkpoint is committed: its writes, with retries (the
        first call's answer may be in already: ``run.answered``), then its outcome queued."""
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
        return self._conclude(run, status, detail, started, attempts)

    def _conclude(
        self, run: ActionRun, status: Status, detail: str, started: float, attempts: int
    ) -> _Held:
        """The end of an action's writes: its password voided when certainly unused, its
        bookkeeping (new department, group ledger), and its outcome queued."""
        action = run.action
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
        if run.answered is not None:  # this call was made on the lane; its row is in
            answered, run.answered = run.answered, None
            raise answered
        run.calls += 1
        result, errcode, errmsg = "ok", None, None
        self._slots.acquire()  # at most ``concurrency`` calls at once
        t0 = self._clock()
        try:
            return fn()
        except ProviderError as exc:
            result, errcode, errmsg = failure_fields(exc)
            raise
        finally:
            self._slots.release()
            run.records.append(call_record(run, name, result, errcode, errmsg, self._clock() - t0))

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
