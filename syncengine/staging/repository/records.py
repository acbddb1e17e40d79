"""The plain records the repository hands out (never ORM objects); process liveness for locks."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar

from syncengine.domain import Department

log = logging.getLogger(__name__)

DEFAULT_BATCH = 2000
T = TypeVar("T")

# Keys whose values must never be stored in the audit log, whatever a caller passes.
SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|auth|credential", re.IGNORECASE)
REDACTED = "***"


def utcnow() -> datetime:
    return datetime.now(UTC)


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def rows_digest(label: str, rows: Iterable[Iterable[Any]]) -> str:
    """sha256 of rows of plain values (each value by its ``repr``, so None, "" and "None"
    differ), in the order given: the same rows in the same order, the same digest."""
    digest = hashlib.sha256(label.encode("utf-8"))
    for row in rows:
        digest.update(("\x1e" + "\x1f".join(map(repr, row))).encode("utf-8"))
    return digest.hexdigest()


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    id: int
    kind: str
    actor: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    summary: dict[str, Any] | None
    config_fingerprint: str | None


@dataclass(frozen=True)
class SnapshotInfo:
    id: int
    run_id: int | None
    created_at: datetime
    completed_at: datetime | None
    source: str
    status: str
    counts: dict[str, Any]
    error: str | None
    is_current: bool
    source_time: datetime | None = None

    @property
    def as_of(self) -> datetime:
        """When the HR data of this snapshot was exported (else when it was read)."""
        return self.source_time or self.created_at


@dataclass(frozen=True)
class StoredDepartment:
    """A snapshot department with its parent's HR id (present when HR has a department table)."""

    department: Department
    parent_hr_id: str | None = None


@dataclass(frozen=True)
class SnapshotDiff:
    """Employee ids new, changed (content hash differs) and gone between two snapshots."""

    new: tuple[str, ...]
    changed: tuple[str, ...]
    gone: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        return {"new": len(self.new), "changed": len(self.changed), "gone": len(self.gone)}


@dataclass(frozen=True)
class NewAction:
    """One action of a plan as the service hands it over for saving.

    ``action_key`` is the plan's stable identity of the action (unique in the plan);
    ``depends_on`` lists the ``seq`` numbers of the actions it must wait for.
    """

    seq: int
    action_key: str
    kind: str
    target: str
    employee_id: str | None = None
    depends_on: tuple[int, ...] = ()


@dataclass(frozen=True)
class ActionRecord:
    plan_id: int
    seq: int
    action_key: str
    kind: str
    target: str
    employee_id: str | None
    depends_on: tuple[int, ...]
    status: str
    attempts: int
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class PlanHeader:
    """A saved plan without its document: what an apply checks (status, fingerprints)."""

    id: int
    created_at: datetime
    run_id: int | None
    checksum: str
    config_fingerprint: str | None
    state_fingerprint: str | None
    blocked: bool
    block_reasons: tuple[str, ...]
    status: str


@dataclass(frozen=True)
class PlanRecord(PlanHeader):
    """A saved plan with its document (the plan file's text)."""

    document: str


@dataclass(frozen=True)
class AuditEntry:
    """One audit row. ``at`` defaults to the time of writing; ``id`` is set when read back."""

    result: str
    at: datetime | None = None
    run_id: int | None = None
    actor: str | None = None
    plan_id: int | None = None
    action_key: str | None = None
    kind: str | None = None
    target: str | None = None
    employee_id: str | None = None
    email: str | None = None
    diffs: dict[str, Any] | None = None
    errcode: str | int | None = None
    errmsg: str | None = None
    attempt: int | None = None
    attempts: int | None = None
    duration_ms: int | None = None
    call: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class HookEvent:
    id: int
    delivery_id: str
    received_at: datetime
    kind: str
    employee_id: str | None
    payload: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    applied_at: datetime | None
    run_id: int | None


@dataclass(frozen=True)
class EventStored:
    """``store_event`` result: the event is new and now stored."""

    event: HookEvent
    replay: bool = field(default=False, init=False)


@dataclass(frozen=True)
class EventReplay:
    """``store_event`` result: this delivery id was stored before; nothing was written."""

    event: HookEvent
    replay: bool = field(default=True, init=False)


@dataclass(frozen=True)
class SignatureReplay:
    """``store_event`` result: this signed request (its signature) was honoured before, under
    another delivery id; nothing was written."""

    replay: bool = field(default=True, init=False)


@dataclass(frozen=True)
class EventQueueStats:
    depth: int  # events received and not yet applied or given up
    oldest_received_at: datetime | None


@dataclass(frozen=True)
class LockInfo:
    name: str
    pid: int
    hostname: str
    command: str
    acquired_at: datetime
    heartbeat_at: datetime

    def describe(self) -> str:
        return (
            f"pid {self.pid} on host {self.hostname} (command: {self.command or '?'}), "
            f"since {self.acquired_at.isoformat(timespec='seconds')}, "
            f"last heartbeat {self.heartbeat_at.isoformat(timespec='seconds')}"
        )


# --- process liveness (for locks left by dead processes) ----------------------------------


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def process_started_at(pid: int) -> datetime | None:
    """When the process started (Linux ``/proc``), or None when unknown.

    A pid is reused after its process dies; in containers the same small pid comes back on
    every run. A process that started after the lock was taken cannot be the holder.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
        with open("/proc/stat", encoding="ascii", errors="replace") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        ticks = int(stat.rpartition(")")[2].split()[19])  # field 22: starttime
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return datetime.fromtimestamp(btime + ticks / hz, UTC)


def holder_is_dead(lock: LockInfo, hostname: str) -> bool:
    """True when the lock's holder is known dead: same host, and no such process, or the pid
    now belongs to a process that started after the lock was taken."""
    if lock.hostname != hostname:
        return False
    if not pid_alive(lock.pid):
        return True
    started = process_started_at(lock.pid)
    return started is not None and started > lock.acquired_at + timedelta(seconds=2)
