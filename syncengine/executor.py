"""Applies a :class:`~syncengine.plan.Plan` through a ``MailboxProvider``, safely.

Not pure (it calls Exmail, threads and sleeps), but it knows no database, no HTTP and no
concrete provider: it takes a :class:`~syncengine.providers.base.MailboxProvider`, an
:class:`ExecutionSink` (checkpoints, audit rows, identity links) and a :class:`PasswordSink`
(the channel that hands initial passwords over), all passed in by ``service.py``.

What it guarantees, and why each piece is there:

* **Order.** An action runs only when every action in its ``depends_on`` is done. A failed
  action fails nothing else but its dependants, which are marked ``skipped`` with the reason;
  independent actions go on. Up to ``concurrency`` actions run at once (a thread pool).
* **Pace.** Not here: the provider paces every request it sends with the process's one
  :class:`~syncengine.callpolicy.CallPolicy`, so reads and writes share one cap.
* **Retries.** Only :class:`~syncengine.errors.RetriableProviderError` is retried, with
  exponential backoff and jitter (:class:`~syncengine.callpolicy.RetryPolicy`), at most
  ``max_attempts`` tries of the write and at most ``max_retry_seconds`` of backoff per action,
  within the run's retry budget. ``sleep`` and ``clock`` are injectable so tests
  never wait for real backoff.
* **Never twice.** A retriable error on a write means "it may have happened". Before trying the
  write again the executor looks at the live object (``get_user``, the department listing) and
  counts the action done when it already is what was asked. A create answered "already exists"
  is done only when the existing object matches the request, else the action fails and says
  which fields differ. An action a killed run left ``running`` is checked the same way before
  it is redone (``swap_primary`` done twice would undo itself).
* **Checkpoints.** Every action goes ``pending → running → done / failed / skipped`` through
  the sink, and ``running`` is recorded before the first call is made, so a resumed run knows
  which actions to re-check.
* **Passwords.** Generated here with :mod:`secrets` for each created mailbox, handed to the
  :class:`PasswordSink` *before* the create call (so a run killed right after the call has not
  lost the only copy), sent to the provider, and then dropped. Never in an audit row, a log
  line, an exception message or the result.
* **Audit.** One :class:`AuditRecord` per API call (the attempt: call, result, errcode and text,
  duration) and one per action outcome (diffs old → new, attempts, total duration). The
  attempt rows of an action are handed to the sink together with its outcome row, just before
  the outcome checkpoint, so each finished action appears exactly once as done or failed.
* **Guard.** When a ``guard`` is given (:mod:`syncengine.guard`, the current policy), each
  action is re-checked right before its first call; one it forbids makes no call, gets one
  ``refused`` audit row and fails (so its dependants are skipped).
"""

from __future__ import annotations

import logging
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from syncengine.callpolicy import CallPolicy, RetryPolicy, action_scope
from syncengine.domain import Mailbox, UserUpdate, normalise_email, normalise_path
from syncengine.errors import (
    AlreadyExistsError,
    NotFoundError,
    ProviderError,
    RetriableProviderError,
    SyncEngineError,
)
from syncengine.plan import Action, ActionKind, ChangeValue, LinkRecord, Plan
from syncengine.providers.base import MailboxProvider
from syncengine.statuses import ActionStatus

log = logging.getLogger(__name__)

T = TypeVar("T")

PASSWORD_SYMBOLS = "!@#$%^&*-_=+?"
"""Symbols every Exmail generation accepts in a password (printable ASCII, no quotes/spaces)."""
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 32  # Exmail accepts 6-32 characters


Status = ActionStatus
"""An action's checkpoint status: the same enum the staging table stores."""


FINAL = frozenset({Status.DONE, Status.FAILED, Status.SKIPPED})


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutorSettings:
    """How hard and how patiently to drive the provider (the ``[apply]`` config table)."""

    concurrency: int = 4
    rate_per_second: float = 0.0  # 0 = no client-side limit
    burst: int = 0  # bucket size; 0 = max(1, concurrency)
    max_attempts: int = 8
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.5
    max_retry_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.rate_per_second < 0 or self.max_retry_seconds < 0:
            raise ValueError("rate_per_second and max_retry_seconds must not be negative")

    def retry_policy(self) -> RetryPolicy:
        """How each action is retried (the same type every outgoing call uses)."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            jitter=self.jitter,
            max_retry_seconds=self.max_retry_seconds,
        )


# --- what the executor reports and records -------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    """One audit row as the executor sees it; the sink adds run, actor, plan and time.

    ``call`` is set on attempt rows (the provider method); ``attempt`` is the number of the
    call within the action in this run; outcome rows carry ``attempts`` (calls made) instead.
    Never holds a password or a token.
    """

    action_key: str
    kind: str
    target: str
    employee_id: str
    email: str | None
    result: str
    call: str | None = None
    attempt: int | None = None
    attempts: int | None = None
    errcode: str | None = None
    errmsg: str | None = None
    duration_ms: int | None = None
    diffs: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ActionOutcome:
    """The end of one action in this run."""

    key: str
    kind: str
    target: str
    employee_id: str
    status: Status
    detail: str = ""
    attempts: int = 0
    calls: int = 0
    duration_ms: int = 0


@dataclass(frozen=True)
class ExecutionResult:
    """Everything that happened to the plan's actions in this run."""

    outcomes: tuple[ActionOutcome, ...]
    already_done: int
    seconds: float
    interrupted: bool = False

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in (Status.DONE, Status.FAILED, Status.SKIPPED)}
        for o in self.outcomes:
            out[o.status.value] += 1
        out["already_done"] = self.already_done
        return out

    @property
    def failures(self) -> tuple[ActionOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status is not Status.DONE)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted

    @property
    def calls(self) -> int:
        return sum(o.calls for o in self.outcomes)


# --- the ports ------------------------------------------------------------------------------


class ExecutionSink(Protocol):
    """Where checkpoints, audit rows and identity links go (the staging database).

    Every method must be durable when it returns. A failure here (the database went away)
    stops the run: the executor lets it propagate and the action stays ``running``.
    """

    def start_action(self, action: Action, *, resuming: bool) -> int:
        """``pending → running`` (also ``running → running`` when resuming); returns how many
        times the action has been started, this time included."""
        ...

    def finish_action(self, action: Action, status: Status, error: str | None) -> None:
        """``running → done / failed``, or ``pending/running → skipped``."""
        ...

    def audit(self, records: Sequence[AuditRecord]) -> None:
        """Append audit rows (one transaction)."""
        ...

    def already_audited_done(self, action: Action) -> bool:
        """Whether an outcome row ``done`` exists for this action of this plan: a run killed
        between writing it and the ``done`` checkpoint must not audit the action twice."""
        ...

    def store_link(self, link: LinkRecord) -> None:
        """Upsert the employee's link (``first_seen`` kept when it exists)."""
        ...

    def remove_link(self, employee_id: str) -> None: ...


@dataclass(frozen=True)
class PasswordDelivery:
    """A generated initial password on its way to the admin. ``__repr__`` hides it."""

    employee_id: str
    email: str
    password: str = field(repr=False)
    change_at_login: bool = True


class PasswordSink(Protocol):
    """The channel named in the config (``[passwords] delivery``)."""

    def deliver(self, delivery: PasswordDelivery) -> None:
        """Hand the password over durably; called BEFORE the create call."""
        ...

    def void(self, employee_id: str, email: str, reason: str) -> None:
        """The last password handed over for this address is not in use (the create failed,
        or the mailbox turned out to exist already)."""
        ...


class NoPasswordDelivery:
    """``delivery = "none"``: the admin sets the password in the console; nothing is kept."""

    def deliver(self, delivery: PasswordDelivery) -> None:
        return None

    def void(self, employee_id: str, email: str, reason: str) -> None:
        return None


DepartmentExists = Callable[[str], bool]
"""``department_exists(path)`` against the live directory (service passes a cheap one)."""


# --- passwords -----------------------------------------------------------------------------


def generate_password(length: int = 16) -> str:
    """A strong random password: upper, lower, digit and symbol, ``secrets`` only."""
    length = max(MIN_PASSWORD_LENGTH, min(MAX_PASSWORD_LENGTH, length))
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, PASSWORD_SYMBOLS]
    alphabet = "".join(classes)
    chars = [secrets.choice(c) for c in classes]
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    # Fisher-Yates with secrets, so the class positions are not predictable either.
    for i in range(len(chars) - 1, 0, -1):
        j = secrets.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


# --- the executor --------------------------------------------------------------------------


class _Mismatch(SyncEngineError):
    """The live object exists but is not what the action asked for: fail, do not guess."""


@dataclass
class _Run:
    """One action's state while it executes (one worker thread owns it)."""

    action: Action
    check_first: bool
    records: list[AuditRecord] = field(default_factory=list)
    calls: int = 0
    tries: int = 0  # attempts of the action (each may add a look before the write)
    password: PasswordDelivery | None = None
    maybe_written: bool = False  # a write failed retriably: it may have taken effect
    note: str = ""


def is_retriable(exc: BaseException) -> bool:
    """Only a :class:`RetriableProviderError` may succeed when tried again."""
    return isinstance(exc, RetriableProviderError)


def _norm_paths(paths: Sequence[str]) -> frozenset[str]:
    return frozenset(p for p in (normalise_path(x) for x in paths) if p)


def _norm_emails(values: Sequence[str]) -> frozenset[str]:
    return frozenset(normalise_email(v) for v in values)


def mailbox_differences(live: Mailbox, wanted: Mailbox) -> dict[str, tuple[Any, Any]]:
    """Fields where the live mailbox differs from the one asked for: ``{field: (live,
    wanted)}``. Lists compare as sets (Exmail does not keep their order)."""
    diffs: dict[str, tuple[Any, Any]] = {}
    for name in ("name", "ext_id", "position", "tel", "mobile", "gender", "enabled"):
        a, b = getattr(live, name), getattr(wanted, name)
        if a != b:
            diffs[name] = (a, b)
    if _norm_paths(live.departments) != _norm_paths(wanted.departments):
        diffs["departments"] = (sorted(live.departments), sorted(wanted.departments))
    if _norm_emails(live.aliases) != _norm_emails(wanted.aliases):
        diffs["aliases"] = (sorted(live.aliases), sorted(wanted.aliases))
    return diffs


def update_differences(live: Mailbox, update: UserUpdate) -> dict[str, tuple[Any, Any]]:
    """The fields of ``update`` the live mailbox does not have yet."""
    diffs: dict[str, tuple[Any, Any]] = {}
    for name in ("name", "gender", "position", "tel", "mobile", "ext_id", "enabled"):
        want = getattr(update, name)
        if want is not None and getattr(live, name) != want:
            diffs[name] = (getattr(live, name), want)
    if update.departments is not None and _norm_paths(live.departments) != _norm_paths(
        update.departments
    ):
        diffs["departments"] = (sorted(live.departments), sorted(update.departments))
    if update.aliases is not None and _norm_emails(live.aliases) != _norm_emails(update.aliases):
        diffs["aliases"] = (sorted(live.aliases), sorted(update.aliases))
    return diffs


def _describe(diffs: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k}: is {a!r}, asked {b!r}" for k, (a, b) in sorted(diffs.items()))


def _json_value(v: ChangeValue) -> Any:
    return list(v) if isinstance(v, tuple) else v


def action_diffs(action: Action) -> dict[str, Any]:
    """The action's field diffs for the audit log: ``{field: {"old": x, "new": y}}``."""
    return {
        k: {"old": _json_value(old), "new": _json_value(new)}
        for k, (old, new) in sorted(action.changes.items())
    }


def action_email(action: Action) -> str | None:
    """The address an action is about (None for department actions)."""
    if action.kind in (
        ActionKind.CREATE_DEPARTMENT,
        ActionKind.MOVE_DEPARTMENT,
        ActionKind.DELETE_DEPARTMENT,
    ):
        return None
    if action.kind is ActionKind.CREATE_USER and action.mailbox is not None:
        return action.mailbox.email
    if action.kind in (ActionKind.LINK, ActionKind.UNLINK):
        return action.link.email if action.link else (action.target or None)
    return action.target or None


_WRITE_KINDS = frozenset(ActionKind) - {ActionKind.LINK, ActionKind.UNLINK}


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
        self.calls = calls or CallPolicy(s.retry_policy(), sleep=sleep, clock=clock)
        self._retry = s.retry_policy()
        self._progress = progress
        self._stop = stop or threading.Event()

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

        interrupted = False
        error: BaseException | None = None
        with ThreadPoolExecutor(
            max_workers=self.settings.concurrency, thread_name_prefix="apply"
        ) as pool:
            running: dict[Future[ActionOutcome], Action] = {}
            while ready or running:
                while (
                    ready
                    and len(running) < self.settings.concurrency
                    and error is None
                    and not self._stop.is_set()
                ):
                    a = ready.popleft()
                    if status[a.key] in FINAL:
                        continue  # skipped since it became ready
                    resuming = status[a.key] is Status.RUNNING
                    status[a.key] = Status.RUNNING
                    running[pool.submit(self._execute, a, resuming)] = a
                if not running:
                    interrupted = bool(ready)
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    a = running.pop(fut)
                    try:
                        outcome = fut.result()
                    except BaseException as exc:  # the sink failed: stop starting new work
                        if error is None:
                            error = exc
                        continue
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

    # --- one action ---------------------------------------------------------------------

    def _execute(self, action: Action, resuming: bool) -> ActionOutcome:
        started = self._clock()
        attempts = self.sink.start_action(action, resuming=resuming)
        refused = self._guard(action) if self._guard is not None else None
        if refused is not None:
            return self._refuse(action, refused, attempts)
        run = _Run(action, check_first=resuming and action.kind in _WRITE_KINDS)
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
        except (ProviderError, _Mismatch) as exc:
            status = Status.FAILED
            detail = str(exc)
        if status is Status.FAILED and run.password is not None and not run.maybe_written:
            # The create certainly did not happen: the password handed over is not in use.
            self.passwords.void(action.employee_id, run.password.email, detail)
        if status is Status.DONE:
            try:
                self._after_success(action)
            except SyncEngineError as exc:
                status = Status.FAILED
                detail = (
                    f"the change was made in Exmail, but storing the identity link failed: {exc}"
                )
        run.password = None  # forget it as soon as possible
        elapsed = int((self._clock() - started) * 1000)
        last = run.records[-1] if run.records else None
        run.records.append(
            AuditRecord(
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
        )
        self.sink.audit(run.records)
        self.sink.finish_action(action, status, detail if status is Status.FAILED else None)
        return ActionOutcome(
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

    def _apply_with_retries(self, run: _Run) -> None:
        retrying = self._retry.retrying(
            is_retriable,
            sleep=self._sleep,
            budget=self.calls.budget,
            on_retry=lambda _exc: self.calls.stats.retry(run.action.kind.value),
        )
        for attempt in retrying:
            with attempt, action_scope():
                self._attempt(run)

    def _call(self, run: _Run, name: str, fn: Callable[[], T]) -> T:
        """One provider call: timed, and recorded as an attempt row (the provider paces it)."""
        run.calls += 1
        a = run.action
        t0 = self._clock()
        result, errcode, errmsg = "ok", None, None
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

    def _attempt(self, run: _Run) -> None:
        run.tries += 1
        a = run.action
        if a.kind not in _WRITE_KINDS:
            return
        if run.check_first:
            if self._satisfied(run):
                run.note = run.note or "already in the wanted state (checked after an "
                "interrupted or failed call)"
                return
            run.check_first = False
        try:
            self._write(run)
        except RetriableProviderError:
            run.check_first = True  # the write may have happened: look before redoing it
            run.maybe_written = True
            raise
        except AlreadyExistsError as exc:
            creates = (ActionKind.CREATE_USER, ActionKind.CREATE_DEPARTMENT)
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
            deletes = (ActionKind.DELETE_USER, ActionKind.DELETE_DEPARTMENT)
            if a.kind in deletes and self._satisfied(run):
                run.note = "already gone"
                return
            raise

    def _write(self, run: _Run) -> None:
        HANDLERS[run.action.kind].write(self, run)

    def _satisfied(self, run: _Run) -> bool:
        """Whether the live directory already is what the action asks. Raises _Mismatch for
        a create whose object exists but differs (never overwrite what someone else made)."""
        return HANDLERS[run.action.kind].satisfied(self, run)

    def _exists(self, run: _Run, path: str) -> bool:
        return self._call(run, "department_exists", lambda: self._department_exists(path))

    def _live(self, run: _Run, email: str) -> Mailbox | None:
        return self._call(run, "get_user", lambda: self.provider.get_user(email))

    def _after_success(self, action: Action) -> None:
        """The identity-link bookkeeping the action's kind asks for."""
        if action.kind in (ActionKind.DELETE_USER, ActionKind.UNLINK):
            if action.employee_id:
                self.sink.remove_link(action.employee_id)
            return
        if action.link is not None:
            self.sink.store_link(action.link)

    def _departments_from_state(self, path: str) -> bool:
        wanted = normalise_path(path)
        return any(normalise_path(p.path) == wanted for p in self.provider.read_state().parties)


def _need(value: T | None, action: Action, name: str) -> T:
    if value is None:
        raise _Mismatch(
            f"the plan's {action.kind.value} action has no {name}",
            where=action.key,
            hint="the plan file is malformed; make a new plan",
        )
    return value


# --- what each action kind does, and how to tell it is done -----------------------------------
# One handler per kind (octoDNS's ``_apply_<Change>``): the write and the look-before-redo
# check of a kind sit side by side, and nothing else branches on the kind.


class _Handler:
    """The write an action kind makes, and the check that it already took effect."""

    def write(self, ex: Executor, run: _Run) -> None:
        raise NotImplementedError

    def satisfied(self, ex: Executor, run: _Run) -> bool:
        raise NotImplementedError


class _NoCall(_Handler):
    """``link`` / ``unlink``: bookkeeping only, no Exmail call."""

    def write(self, ex: Executor, run: _Run) -> None:
        return None

    def satisfied(self, ex: Executor, run: _Run) -> bool:
        return True


class _CreateDepartment(_Handler):
    def write(self, ex: Executor, run: _Run) -> None:
        a = run.action
        ex._call(run, "create_department", lambda: ex.provider.create_department(a.target))

    def satisfied(self, ex: Executor, run: _Run) -> bool:
        return ex._exists(run, run.action.target)


class _MoveDepartment(_Handler):
    def write(self, ex: Executor, run: _Run) -> None:
        a = run.action
        new_path = _need(a.new_path, a, "new_path")
        ex._call(run, "move_department", lambda: ex.provider.move_department(a.target, new_path))

    def satisfied(self, ex: Executor, run: _Run) -> bool:
        a = run.action
        new_path = _need(a.new_path, a, "new_path")
        return ex._exists(run, new_path) and not ex._exists(run, a.target)


class _DeleteDepartment(_Handler):
    def write(self, ex: Executor, run: _Run) -> None:
        a = run.action
        ex._call(run, "delete_department", lambda: ex.provider.delete_department(a.target))

    def satisfied(self, ex: Executor, run: _Run) -> bool:
        return not ex._exists(run, run.action.target)


class _CreateUser(_Handler):
    def write(self, ex: Executor, run: _Run) -> None:
        a = run.action
        mailbox = _need(a.mailbox, a, "mailbox")
        if run.password is None:
            policy = a.password
            delivery = PasswordDelivery(
                employee_id=a.employee_id,
                email=mailbox.email,
                password=generate_password(policy.length if policy else 16),
                change_at_login=policy.change_at_login if policy else True,
            )
            ex.passwords.deliver(delivery)  # before the call: never lose the only copy
            run.password = delivery
        pw = run.password
        ex._call(
            run,
            "create_user",
            lambda: ex.provider.create_user(
                mailbox, password=pw.password, change_password_at_login=pw.change_at_login
            ),
        )

    def satisfied(self, ex: Executor, run: _Run) -> bool:
        a = run.action
        wanted = _need(a.mailbox, a, "mailbox")
        live = ex._live(run, wanted.email)
        if live is None:
            return False
        diffs = mailbox_differences(live, wanted)
        if diffs:
            raise _Mismatch(
                f"mailbox {wanted.email} exists but is not the one asked for ({_describe(diffs)})",
                where=f"employee {a.employee_id}" if a.employee_id else a.key,
                hint="someone else made or changed it; plan again after checking it "
                "in the admin console",
            )
        return True


class _UpdateUser(_Handler):
    """``update_user``, ``add_alias``, ``enable_user``, ``disable_user``: one user/update."""

    def write(self, ex: Executor, run: _Run) -> None:
        a = run.action
        update = _need(a.update, a, "update")
        ex._call(run, "update_user", lambda: ex.provider.update_user(a.target, update))

    def satisfied(self, ex: Executor, run: _Run) -> bool:
        a = run.action
        update = _need(a.update, a, "update")
        live = ex._live(run, a.target)
        return live is not None and not update_differences(live, update)


class _SwapPrimary(_Handler):
    def write(self, ex: Executor, run: _Run) -> None:
        a = run.action
        alias = _need(a.alias, a, "alias")
        ex._call(run, "swap_alias", lambda: ex.provider.swap_alias(a.target, alias))

    def satisfied(self, ex: Executor, run: _Run) -> bool:
        a = run.action
        live = ex._live(run, _need(a.alias, a, "alias"))
        return live is not None and normalise_email(a.target) in _norm_emails(live.aliases)


class _DeleteUser(_Handler):
    def write(self, ex: Executor, run: _Run) -> None:
        a = run.action
        ex._call(run, "delete_user", lambda: ex.provider.delete_user(a.target))

    def satisfied(self, ex: Executor, run: _Run) -> bool:
        return ex._live(run, run.action.target) is None


HANDLERS: dict[ActionKind, _Handler] = {
    ActionKind.CREATE_DEPARTMENT: _CreateDepartment(),
    ActionKind.MOVE_DEPARTMENT: _MoveDepartment(),
    ActionKind.DELETE_DEPARTMENT: _DeleteDepartment(),
    ActionKind.CREATE_USER: _CreateUser(),
    ActionKind.UPDATE_USER: _UpdateUser(),
    ActionKind.ADD_ALIAS: _UpdateUser(),
    ActionKind.ENABLE_USER: _UpdateUser(),
    ActionKind.DISABLE_USER: _UpdateUser(),
    ActionKind.SWAP_PRIMARY: _SwapPrimary(),
    ActionKind.DELETE_USER: _DeleteUser(),
    ActionKind.LINK: _NoCall(),
    ActionKind.UNLINK: _NoCall(),
}
"""Every action kind's handler (a test checks that none is missing)."""
