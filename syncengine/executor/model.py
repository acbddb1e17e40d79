"""What the executor works with: settings, the records it reports, its ports (the sink and
the password channel), the live-object comparisons and one action's running state."""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from syncengine.callpolicy import RetryPolicy
from syncengine.domain import Mailbox, UserUpdate, normalise_email, normalise_path
from syncengine.errors import (
    ProviderError,
    RetriableProviderError,
    SyncEngineError,
)
from syncengine.plan import Action, ActionKind, ChangeValue, GroupRecord, LinkRecord
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
    visibility_wait: float = 30.0
    visibility_backoff: float = 0.25

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

    def start_action_later(self, action: Action, *, resuming: bool) -> Future[int]:
        """:meth:`start_action`, queued: the future resolves (with the count) once the
        checkpoint is committed; the executor makes no call for the action before that."""
        ...

    def finish_action(
        self,
        action: Action,
        status: Status,
        error: str | None,
        *,
        link: LinkChange | None = None,
    ) -> None:
        """``running → done / failed``, or ``pending/running → skipped``, in one transaction
        with the audit rows handed over for the action and the ``link`` change (a done action's
        identity-link bookkeeping): all of it or none."""
        ...

    def finish_action_later(
        self,
        action: Action,
        status: Status,
        error: str | None,
        *,
        link: LinkChange | None = None,
    ) -> Future[None]:
        """:meth:`finish_action`, queued instead of waited for: the future resolves once it
        is committed (or with the write's error). Writes are committed in the order they are
        queued, so a :meth:`start_action` the same thread calls afterwards returns only once
        this future has resolved: the executor settles the action then, and the outcome and
        the next action's intent share one transaction."""
        ...

    def audit(self, records: Sequence[AuditRecord]) -> None:
        """Audit rows of one action: durable with its outcome checkpoint, at the latest."""
        ...

    def already_audited_done(self, action: Action) -> bool:
        """Whether an outcome row ``done`` exists for this action of this plan: a run killed
        between writing it and the ``done`` checkpoint must not audit the action twice."""
        ...

    def store_group(self, group: GroupRecord) -> None:
        """Record an owned mail group as the action left it (the ledger row)."""
        ...

    def remove_group(self, address: str) -> None: ...


@dataclass(frozen=True)
class LinkChange:
    """What a done action changes in the identity links: ``store`` an employee's link (upsert,
    ``first_seen`` kept when it exists) or ``remove`` one (by employee id)."""

    store: LinkRecord | None = None
    remove: str | None = None


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


class _RandomBytes:
    """Uniform draws below ``n`` (``n`` ≤ 256) from the OS's CSPRNG, read in one block: a
    byte is kept when it falls below the largest multiple of ``n`` (rejection, no modulo
    bias) and the block is read again when used up. ``secrets.choice`` reads the OS once per
    draw: 31 reads for a 16-character password."""

    def __init__(self, size: int = 64, source: Callable[[int], bytes] = secrets.token_bytes):
        self._size = size
        self._source = source
        self._block = b""
        self._at = 0

    def below(self, n: int) -> int:
        if not 0 < n <= 256:
            raise ValueError(f"below({n}): n must be between 1 and 256")
        limit = 256 - 256 % n
        while True:
            if self._at >= len(self._block):
                self._block, self._at = self._source(self._size), 0
            byte = self._block[self._at]
            self._at += 1
            if byte < limit:
                return byte % n


def generate_password(length: int = 16) -> str:
    """A strong random password: upper, lower, digit and symbol, from the OS's CSPRNG."""
    length = max(MIN_PASSWORD_LENGTH, min(MAX_PASSWORD_LENGTH, length))
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, PASSWORD_SYMBOLS]
    alphabet = "".join(classes)
    draw = _RandomBytes()
    chars = [c[draw.below(len(c))] for c in classes]
    chars += [alphabet[draw.below(len(alphabet))] for _ in range(length - len(chars))]
    # Fisher-Yates with the same draws, so the class positions are not predictable either.
    for i in range(len(chars) - 1, 0, -1):
        j = draw.below(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


# --- the executor --------------------------------------------------------------------------


class Mismatch(SyncEngineError):
    """The live object exists but is not what the action asked for: fail, do not guess."""


@dataclass
class ActionRun:
    """One action's state while it executes (one worker thread owns it)."""

    action: Action
    check_first: bool
    records: list[AuditRecord] = field(default_factory=list)
    calls: int = 0
    tries: int = 0  # attempts of the action (each may add a look before the write)
    password: PasswordDelivery | None = None
    maybe_written: bool = False  # a write failed retriably: it may have taken effect
    note: str = ""
    answered: ProviderError | None = None  # the first call's error, made on the lane


def is_retriable(exc: BaseException) -> bool:
    """Only a :class:`RetriableProviderError` may succeed when tried again."""
    return isinstance(exc, RetriableProviderError)


def norm_paths(paths: Sequence[str]) -> frozenset[str]:
    return frozenset(p for p in (normalise_path(x) for x in paths) if p)


def norm_emails(values: Sequence[str]) -> frozenset[str]:
    return frozenset(normalise_email(v) for v in values)


def mailbox_differences(live: Mailbox, wanted: Mailbox) -> dict[str, tuple[Any, Any]]:
    """Fields where the live mailbox differs from the one asked for: ``{field: (live,
    wanted)}``. Lists compare as sets (Exmail does not keep their order)."""
    diffs: dict[str, tuple[Any, Any]] = {}
    for name in ("name", "ext_id", "position", "tel", "mobile", "gender", "enabled"):
        a, b = getattr(live, name), getattr(wanted, name)
        if a != b:
            diffs[name] = (a, b)
    if norm_paths(live.departments) != norm_paths(wanted.departments):
        diffs["departments"] = (sorted(live.departments), sorted(wanted.departments))
    if norm_emails(live.aliases) != norm_emails(wanted.aliases):
        diffs["aliases"] = (sorted(live.aliases), sorted(wanted.aliases))
    return diffs


def update_differences(live: Mailbox, update: UserUpdate) -> dict[str, tuple[Any, Any]]:
    """The fields of ``update`` the live mailbox does not have yet."""
    diffs: dict[str, tuple[Any, Any]] = {}
    for name in ("name", "gender", "position", "tel", "mobile", "ext_id", "enabled"):
        want = getattr(update, name)
        if want is not None and getattr(live, name) != want:
            diffs[name] = (getattr(live, name), want)
    if update.departments is not None and norm_paths(live.departments) != norm_paths(
        update.departments
    ):
        diffs["departments"] = (sorted(live.departments), sorted(update.departments))
    if update.aliases is not None and norm_emails(live.aliases) != norm_emails(update.aliases):
        diffs["aliases"] = (sorted(live.aliases), sorted(update.aliases))
    return diffs


def describe(diffs: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k}: is {a!r}, asked {b!r}" for k, (a, b) in sorted(diffs.items()))


def json_value(v: ChangeValue) -> Any:
    return list(v) if isinstance(v, tuple) else v


def action_diffs(action: Action) -> dict[str, Any]:
    """The action's field diffs for the audit log: ``{field: {"old": x, "new": y}}``."""
    return {
        k: {"old": json_value(old), "new": json_value(new)}
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


WRITE_KINDS = frozenset(ActionKind) - {ActionKind.LINK, ActionKind.UNLINK}


def need(value: T | None, action: Action, name: str) -> T:
    if value is None:
        raise Mismatch(
            f"the plan's {action.kind.value} action has no {name}",
            where=action.key,
            hint="the plan file is malformed; make a new plan",
        )
    return value
