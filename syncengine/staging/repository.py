"""Reading and writing the staging database: plain data in, plain data out.

No business rules live here: the repository stores what the service hands it and answers
questions about it. Inputs and outputs are :mod:`syncengine.domain` types (Person, Department,
IdentityLink, RowProblem) and the small frozen records below, never ORM objects, so callers
cannot lazily load or accidentally write anything.

Every public method is its own transaction and commits before it returns. That is the point
for checkpoints (an action marked running is on disk before the API call is made) and keeps
a long run from holding locks. Bulk loads (100,000 people) use Core ``insert()`` with
executemany in chunks, and snapshot comparisons are done in SQL.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import aliased

from syncengine.domain import Department, IdentityLink, Person, RowProblem, normalise_email
from syncengine.errors import LockHeldError, StagingError
from syncengine.staging import codec
from syncengine.staging.db import display_url
from syncengine.staging.models import (
    ActionStatus,
    AuditEntryRow,
    EventStatus,
    HookEventRow,
    IdentityLinkRow,
    PlanAction,
    PlanRow,
    PlanStatus,
    Run,
    RunKind,
    RunLockRow,
    RunStatus,
    Snapshot,
    SnapshotDepartment,
    SnapshotPerson,
    SnapshotProblem,
    SnapshotStatus,
    UsedSignature,
    WatchState,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH = 2000
T = TypeVar("T")

# Keys whose values must never be stored in the audit log, whatever a caller passes.
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|auth|credential", re.IGNORECASE)
REDACTED = "***"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _first_line(exc: BaseException) -> str:
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
class PlanRecord:
    id: int
    created_at: datetime
    run_id: int | None
    checksum: str
    config_fingerprint: str | None
    state_fingerprint: str | None
    blocked: bool
    block_reasons: tuple[str, ...]
    document: str
    status: str


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


# --- the repository -----------------------------------------------------------------------


class Repository:
    """All reads and writes of the staging database, one transaction per call."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._batch = batch_size

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        return self._clock()

    @contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        """A transaction; driver failures become StagingError naming the operation."""
        try:
            with self._engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise StagingError(
                f"{what} failed: {_first_line(exc)}",
                where=display_url(self._engine.url),
                hint="check that the database is reachable and not locked by another program",
            ) from None

    # --- runs ---------------------------------------------------------------------------

    def start_run(self, kind: str, actor: str, *, config_fingerprint: str | None = None) -> int:
        kind = RunKind(kind).value
        with self._tx("starting a run") as conn:
            run_id = conn.execute(
                insert(Run)
                .values(
                    kind=kind,
                    actor=actor,
                    started_at=self.now(),
                    status=RunStatus.RUNNING.value,
                    config_fingerprint=config_fingerprint,
                )
                .returning(Run.id)
            ).scalar_one()
        return int(run_id)

    def finish_run(
        self, run_id: int, status: str, summary: Mapping[str, Any] | None = None
    ) -> None:
        status = RunStatus(status).value
        with self._tx("finishing a run") as conn:
            conn.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(
                    status=status,
                    finished_at=self.now(),
                    summary=dict(summary) if summary is not None else None,
                )
            )

    def get_run(self, run_id: int) -> RunInfo | None:
        with self._tx("reading a run") as conn:
            row = conn.execute(select(Run.__table__).where(Run.id == run_id)).mappings().first()
        return RunInfo(**row) if row else None

    def list_runs(self, limit: int = 20) -> list[RunInfo]:
        with self._tx("listing runs") as conn:
            rows = conn.execute(
                select(Run.__table__).order_by(Run.id.desc()).limit(limit)
            ).mappings()
            return [RunInfo(**r) for r in rows]

    # --- snapshots ----------------------------------------------------------------------

    def begin_snapshot(self, run_id: int | None, source: str) -> int:
        """Open a snapshot in status ``loading``; it is not current until completed."""
        with self._tx("starting a snapshot") as conn:
            snap_id = conn.execute(
                insert(Snapshot)
                .values(
                    run_id=run_id,
                    created_at=self.now(),
                    source=source,
                    status=SnapshotStatus.LOADING.value,
                    is_current=False,
                )
                .returning(Snapshot.id)
            ).scalar_one()
        return int(snap_id)

    def _require_loading(self, conn: Connection, snapshot_id: int) -> None:
        status = conn.execute(
            select(Snapshot.status).where(Snapshot.id == snapshot_id)
        ).scalar_one_or_none()
        if status is None:
            raise StagingError(f"snapshot {snapshot_id} does not exist")
        if status != SnapshotStatus.LOADING.value:
            raise StagingError(
                f"snapshot {snapshot_id} is {status}; only a loading snapshot takes records",
                hint="start a new snapshot with begin_snapshot()",
            )

    def _bulk_insert(
        self, what: str, snapshot_id: int, table: Any, rows: Iterable[dict[str, Any]]
    ) -> int:
        total = 0
        try:
            with self._tx(what) as conn:
                self._require_loading(conn, snapshot_id)
                for chunk in _chunks(rows, self._batch):
                    conn.execute(insert(table), chunk)
                    total += len(chunk)
        except IntegrityError as exc:
            raise StagingError(
                f"{what} for snapshot {snapshot_id} failed: a duplicate key ({_first_line(exc)})",
                hint="records must be unique per snapshot (employee id, department path); "
                "mapping should have quarantined the duplicate",
            ) from None
        return total

    def add_people(self, snapshot_id: int, people: Iterable[Person]) -> int:
        """Store people in bulk; returns how many. Call as often as needed while loading."""

        def rows() -> Iterator[dict[str, Any]]:
            for p in people:
                data = codec.person_to_dict(p)
                yield {
                    "snapshot_id": snapshot_id,
                    "employee_id": p.employee_id,
                    "content_hash": codec.content_hash(data),
                    "email": p.email,
                    "name": p.name,
                    "status": p.status.value,
                    "data": data,
                }

        return self._bulk_insert("storing people", snapshot_id, SnapshotPerson, rows())

    def add_departments(
        self, snapshot_id: int, departments: Iterable[Department | StoredDepartment]
    ) -> int:
        """Store departments; give StoredDepartment to record the parent's HR id."""

        def rows() -> Iterator[dict[str, Any]]:
            for item in departments:
                stored = item if isinstance(item, StoredDepartment) else StoredDepartment(item)
                dept = stored.department
                yield {
                    "snapshot_id": snapshot_id,
                    "path": dept.path,
                    "hr_id": dept.hr_id,
                    "parent_hr_id": stored.parent_hr_id,
                    "name": dept.name,
                    "content_hash": codec.department_hash(dept, stored.parent_hr_id),
                }

        return self._bulk_insert("storing departments", snapshot_id, SnapshotDepartment, rows())

    def add_problems(self, snapshot_id: int, problems: Iterable[RowProblem]) -> int:
        rows = (
            {
                "snapshot_id": snapshot_id,
                "row": p.row,
                "field": p.field,
                "value": p.value,
                "reason": p.reason,
                "employee_id": p.employee_id,
            }
            for p in problems
        )
        return self._bulk_insert("storing problems", snapshot_id, SnapshotProblem, rows)

    def complete_snapshot(self, snapshot_id: int, counts: Mapping[str, Any]) -> SnapshotInfo:
        """Mark the snapshot complete and make it the current one, in one transaction."""
        with self._tx("completing a snapshot") as conn:
            self._require_loading(conn, snapshot_id)
            conn.execute(
                update(Snapshot)
                .where(Snapshot.id == snapshot_id)
                .values(
                    status=SnapshotStatus.COMPLETE.value,
                    completed_at=self.now(),
                    counts=dict(counts),
                )
            )
            # One statement flips the flag: the old current one off, this one on.
            conn.execute(
                update(Snapshot)
                .where(or_(Snapshot.is_current.is_(True), Snapshot.id == snapshot_id))
                .values(is_current=Snapshot.id == snapshot_id)
            )
        info = self.get_snapshot(snapshot_id)
        assert info is not None
        return info

    def fail_snapshot(self, snapshot_id: int, reason: str) -> None:
        """Mark a loading snapshot failed; the current snapshot stays current.

        Its people and departments are deleted (they are an unusable partial copy); its
        problems are kept, since they may explain the failure.
        """
        with self._tx("failing a snapshot") as conn:
            result = conn.execute(
                update(Snapshot)
                .where(Snapshot.id == snapshot_id, Snapshot.status == SnapshotStatus.LOADING.value)
                .values(
                    status=SnapshotStatus.FAILED.value,
                    completed_at=self.now(),
                    error=reason,
                    is_current=False,
                )
            )
            if result.rowcount != 1:
                raise StagingError(
                    f"snapshot {snapshot_id} is not loading; only a loading snapshot can fail",
                    hint="a complete snapshot stays as it is",
                )
            conn.execute(delete(SnapshotPerson).where(SnapshotPerson.snapshot_id == snapshot_id))
            conn.execute(
                delete(SnapshotDepartment).where(SnapshotDepartment.snapshot_id == snapshot_id)
            )

    @staticmethod
    def _snapshot_info(row: Mapping[Any, Any]) -> SnapshotInfo:
        data = dict(row)
        data["counts"] = data["counts"] or {}
        return SnapshotInfo(**data)

    def get_snapshot(self, snapshot_id: int) -> SnapshotInfo | None:
        with self._tx("reading a snapshot") as conn:
            row = (
                conn.execute(select(Snapshot.__table__).where(Snapshot.id == snapshot_id))
                .mappings()
                .first()
            )
        return self._snapshot_info(row) if row else None

    def current_snapshot(self) -> SnapshotInfo | None:
        """The last good (complete) snapshot, or None before the first successful ingest."""
        with self._tx("reading the current snapshot") as conn:
            row = (
                conn.execute(
                    select(Snapshot.__table__)
                    .where(Snapshot.is_current.is_(True))
                    .order_by(Snapshot.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return self._snapshot_info(row) if row else None

    def list_snapshots(self, limit: int = 20, *, since_id: int | None = None) -> list[SnapshotInfo]:
        """The newest snapshots first; with ``since_id``, only that one and later ones."""
        query = select(Snapshot.__table__).order_by(Snapshot.id.desc()).limit(limit)
        if since_id is not None:
            query = query.where(Snapshot.id >= since_id)
        with self._tx("listing snapshots") as conn:
            rows = conn.execute(query).mappings()
            return [self._snapshot_info(r) for r in rows]

    def load_people(
        self, snapshot_id: int, employee_ids: Collection[str] | None = None
    ) -> list[Person]:
        """The snapshot's people ordered by employee id; optionally only the named ones."""
        stmt = (
            select(SnapshotPerson.data)
            .where(SnapshotPerson.snapshot_id == snapshot_id)
            .order_by(SnapshotPerson.employee_id)
        )
        with self._tx("loading people") as conn:
            if employee_ids is None:
                return [codec.person_from_dict(d) for d in conn.execute(stmt).scalars()]
            people: list[Person] = []
            for chunk in _chunks(sorted(set(employee_ids)), 500):
                result = conn.execute(stmt.where(SnapshotPerson.employee_id.in_(chunk)))
                people.extend(codec.person_from_dict(d) for d in result.scalars())
        return people

    def load_department_rows(self, snapshot_id: int) -> list[StoredDepartment]:
        """The snapshot's departments with their parents' HR ids, ordered by path."""
        with self._tx("loading departments") as conn:
            rows = conn.execute(
                select(
                    SnapshotDepartment.path,
                    SnapshotDepartment.hr_id,
                    SnapshotDepartment.parent_hr_id,
                )
                .where(SnapshotDepartment.snapshot_id == snapshot_id)
                .order_by(SnapshotDepartment.path)
            )
            return [
                StoredDepartment(Department(path, hr_id), parent) for path, hr_id, parent in rows
            ]

    def load_departments(self, snapshot_id: int) -> list[Department]:
        return [d.department for d in self.load_department_rows(snapshot_id)]

    def load_problems(self, snapshot_id: int) -> list[RowProblem]:
        with self._tx("loading problems") as conn:
            rows = conn.execute(
                select(
                    SnapshotProblem.reason,
                    SnapshotProblem.row,
                    SnapshotProblem.field,
                    SnapshotProblem.value,
                    SnapshotProblem.employee_id,
                )
                .where(SnapshotProblem.snapshot_id == snapshot_id)
                .order_by(SnapshotProblem.id)
            )
            return [RowProblem(*r) for r in rows]

    def count_people(self, snapshot_id: int) -> int:
        with self._tx("counting people") as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(SnapshotPerson)
                    .where(SnapshotPerson.snapshot_id == snapshot_id)
                ).scalar_one()
            )

    def compare(self, prev_id: int | None, new_id: int) -> SnapshotDiff:
        """Who is new, changed or gone in ``new_id`` against ``prev_id`` (None: all new)."""
        new = aliased(SnapshotPerson)
        old = aliased(SnapshotPerson)
        with self._tx("comparing snapshots") as conn:
            if prev_id is None:
                ids = conn.execute(
                    select(new.employee_id)
                    .where(new.snapshot_id == new_id)
                    .order_by(new.employee_id)
                ).scalars()
                return SnapshotDiff(tuple(ids), (), ())

            def only_in(a_id: int, b_id: int) -> tuple[str, ...]:
                a, b = aliased(SnapshotPerson), aliased(SnapshotPerson)
                stmt = (
                    select(a.employee_id)
                    .where(
                        a.snapshot_id == a_id,
                        ~exists().where(b.snapshot_id == b_id, b.employee_id == a.employee_id),
                    )
                    .order_by(a.employee_id)
                )
                return tuple(conn.execute(stmt).scalars())

            changed = conn.execute(
                select(new.employee_id)
                .join(
                    old,
                    and_(old.employee_id == new.employee_id, old.snapshot_id == prev_id),
                )
                .where(new.snapshot_id == new_id, new.content_hash != old.content_hash)
                .order_by(new.employee_id)
            ).scalars()
            return SnapshotDiff(
                new=only_in(new_id, prev_id), changed=tuple(changed), gone=only_in(prev_id, new_id)
            )

    def prune_snapshots(self, keep: int = 10) -> int:
        """Delete all but the newest ``keep`` snapshots (never the current one)."""
        with self._tx("pruning snapshots") as conn:
            ids = list(
                conn.execute(
                    select(Snapshot.id).order_by(Snapshot.id.desc()).offset(keep)
                ).scalars()
            )
            if not ids:
                return 0
            result = conn.execute(
                delete(Snapshot).where(Snapshot.id.in_(ids), Snapshot.is_current.is_(False))
            )
            return int(result.rowcount)

    # --- identity links -----------------------------------------------------------------

    def load_links(self, employee_ids: Collection[str] | None = None) -> dict[str, IdentityLink]:
        stmt = select(
            IdentityLinkRow.employee_id,
            IdentityLinkRow.email,
            IdentityLinkRow.first_seen,
            IdentityLinkRow.disabled_since,
            IdentityLinkRow.generated,
        )
        links: dict[str, IdentityLink] = {}
        with self._tx("loading identity links") as conn:
            batches = (
                [stmt]
                if employee_ids is None
                else [
                    stmt.where(IdentityLinkRow.employee_id.in_(c))
                    for c in _chunks(sorted(set(employee_ids)), 500)
                ]
            )
            for s in batches:
                for emp, email, first, disabled, generated in conn.execute(s):
                    links[emp] = IdentityLink(emp, email, first, disabled, bool(generated))
        return links

    def save_links(self, links: Iterable[IdentityLink]) -> int:
        """Insert or replace links by employee id, all in one transaction.

        Replacing is delete-then-insert, so two links may swap addresses in one call. An
        address already linked to another employee (not in this call) is refused.
        """
        items = list({link.employee_id: link for link in links}.values())
        if not items:
            return 0
        now = self.now()
        try:
            with self._tx("saving identity links") as conn:
                for chunk in _chunks(items, self._batch):
                    conn.execute(
                        delete(IdentityLinkRow).where(
                            IdentityLinkRow.employee_id.in_([link.employee_id for link in chunk])
                        )
                    )
                for chunk in _chunks(items, self._batch):
                    conn.execute(
                        insert(IdentityLinkRow),
                        [
                            {
                                "employee_id": link.employee_id,
                                "email": link.email,
                                "first_seen": link.first_seen,
                                "disabled_since": link.disabled_since,
                                "generated": link.generated,
                                "updated_at": now,
                            }
                            for link in chunk
                        ],
                    )
        except IntegrityError as exc:
            raise StagingError(
                f"saving identity links failed: an address is linked to two employees "
                f"({_first_line(exc)})",
                hint="each mailbox address belongs to one employee; nothing was saved",
            ) from None
        return len(items)

    def delete_link(self, employee_id: str) -> bool:
        with self._tx("deleting an identity link") as conn:
            result = conn.execute(
                delete(IdentityLinkRow).where(IdentityLinkRow.employee_id == employee_id)
            )
            return bool(result.rowcount)

    # --- plans and actions --------------------------------------------------------------

    @staticmethod
    def _plan(row: Mapping[Any, Any]) -> PlanRecord:
        data = dict(row)
        data["block_reasons"] = tuple(data["block_reasons"] or ())
        return PlanRecord(**data)

    @staticmethod
    def _action(row: Mapping[Any, Any]) -> ActionRecord:
        data = dict(row)
        data["depends_on"] = tuple(data["depends_on"] or ())
        return ActionRecord(**data)

    def save_plan(
        self,
        *,
        checksum: str,
        document: str,
        actions: Sequence[NewAction],
        run_id: int | None = None,
        config_fingerprint: str | None = None,
        state_fingerprint: str | None = None,
        blocked: bool = False,
        block_reasons: Sequence[str] = (),
    ) -> PlanRecord:
        """Store a plan and its actions (all pending), or return the plan already stored under
        this checksum untouched: applying the same reviewed plan again resumes it."""
        existing = self.load_plan(checksum)
        if existing is not None:
            return existing
        seqs = [a.seq for a in actions]
        if len(set(seqs)) != len(seqs):
            raise StagingError(f"plan {checksum[:12]}: two actions share a sequence number")
        try:
            with self._tx("saving a plan") as conn:
                plan_id = conn.execute(
                    insert(PlanRow)
                    .values(
                        created_at=self.now(),
                        run_id=run_id,
                        checksum=checksum,
                        config_fingerprint=config_fingerprint,
                        state_fingerprint=state_fingerprint,
                        blocked=blocked,
                        block_reasons=list(block_reasons),
                        document=document,
                        status=PlanStatus.SAVED.value,
                    )
                    .returning(PlanRow.id)
                ).scalar_one()
                for chunk in _chunks(actions, self._batch):
                    conn.execute(
                        insert(PlanAction),
                        [
                            {
                                "plan_id": plan_id,
                                "seq": a.seq,
                                "action_key": a.action_key,
                                "kind": a.kind,
                                "target": a.target,
                                "employee_id": a.employee_id,
                                "depends_on": list(a.depends_on),
                                "status": ActionStatus.PENDING.value,
                                "attempts": 0,
                            }
                            for a in chunk
                        ],
                    )
        except IntegrityError as exc:
            again = self.load_plan(checksum)
            if again is not None:  # saved concurrently by another process
                return again
            raise StagingError(
                f"saving plan {checksum[:12]} failed: {_first_line(exc)}",
                hint="action keys must be unique within a plan",
            ) from None
        saved = self.load_plan(int(plan_id))
        assert saved is not None
        return saved

    def load_plan(self, plan: int | str) -> PlanRecord | None:
        """A plan by id (int) or checksum (str)."""
        cond = PlanRow.id == plan if isinstance(plan, int) else PlanRow.checksum == plan
        with self._tx("reading a plan") as conn:
            row = conn.execute(select(PlanRow.__table__).where(cond)).mappings().first()
        return self._plan(row) if row else None

    def set_plan_status(self, plan_id: int, status: str) -> None:
        status = PlanStatus(status).value
        with self._tx("updating a plan") as conn:
            conn.execute(update(PlanRow).where(PlanRow.id == plan_id).values(status=status))

    def applied_plans(self, limit: int = 20) -> list[PlanRecord]:
        """Plans whose apply ran (status ``applied``, or ``failed`` for a partial apply) and that
        a plan run made (``run_id`` set), newest first."""
        statuses = [PlanStatus.APPLIED.value, PlanStatus.FAILED.value]
        with self._tx("listing applied plans") as conn:
            rows = conn.execute(
                select(PlanRow.__table__)
                .where(PlanRow.status.in_(statuses), PlanRow.run_id.is_not(None))
                .order_by(PlanRow.id.desc())
                .limit(limit)
            ).mappings()
            return [self._plan(r) for r in rows]

    def unfinished_plans(self) -> list[PlanRecord]:
        """Plans being applied (status ``applying``) with actions still pending or running,
        oldest first: what ``apply --resume`` (or the next run) must finish. A plan only saved
        (status ``saved``: made for review) is never listed, so it is never applied by accident.
        """
        open_action = exists().where(
            PlanAction.plan_id == PlanRow.id,
            PlanAction.status.in_([ActionStatus.PENDING.value, ActionStatus.RUNNING.value]),
        )
        with self._tx("listing unfinished plans") as conn:
            rows = conn.execute(
                select(PlanRow.__table__)
                .where(PlanRow.status == PlanStatus.APPLYING.value, open_action)
                .order_by(PlanRow.id)
            ).mappings()
            return [self._plan(r) for r in rows]

    def load_actions(self, plan_id: int) -> list[ActionRecord]:
        with self._tx("loading plan actions") as conn:
            rows = conn.execute(
                select(PlanAction.__table__)
                .where(PlanAction.plan_id == plan_id)
                .order_by(PlanAction.seq)
            ).mappings()
            return [self._action(r) for r in rows]

    def pending_actions(self, plan_id: int) -> list[ActionRecord]:
        """Actions still to do, in order: ``pending`` ones, and ``running`` ones a killed run
        left behind (their outcome is unknown: look at the mailbox before redoing them)."""
        with self._tx("loading pending actions") as conn:
            rows = conn.execute(
                select(PlanAction.__table__)
                .where(
                    PlanAction.plan_id == plan_id,
                    PlanAction.status.in_([ActionStatus.PENDING.value, ActionStatus.RUNNING.value]),
                )
                .order_by(PlanAction.seq)
            ).mappings()
            return [self._action(r) for r in rows]

    def action_counts(self, plan_id: int) -> dict[str, int]:
        with self._tx("counting plan actions") as conn:
            rows = conn.execute(
                select(PlanAction.status, func.count())
                .where(PlanAction.plan_id == plan_id)
                .group_by(PlanAction.status)
            )
            return {status: int(n) for status, n in rows}

    def _transition(
        self,
        plan_id: int,
        seq: int,
        allowed_from: Sequence[ActionStatus],
        values: dict[str, Any],
    ) -> ActionRecord:
        with self._tx("checkpointing an action") as conn:
            result = conn.execute(
                update(PlanAction)
                .where(
                    PlanAction.plan_id == plan_id,
                    PlanAction.seq == seq,
                    PlanAction.status.in_([s.value for s in allowed_from]),
                )
                .values(**values)
            )
            row = (
                conn.execute(
                    select(PlanAction.__table__).where(
                        PlanAction.plan_id == plan_id, PlanAction.seq == seq
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise StagingError(f"plan {plan_id} has no action {seq}")
            if result.rowcount != 1:
                raise StagingError(
                    f"plan {plan_id} action {seq} ({row['kind']} {row['target']}) is "
                    f"{row['status']}; it cannot become {values['status']}",
                    hint="an action is never applied twice; plan again if it must be redone",
                )
        return self._action(row)

    def start_action(self, plan_id: int, seq: int, *, resuming: bool = False) -> ActionRecord:
        """pending → running, attempts + 1, committed before the caller makes the API call.

        Only one caller can win that transition. An action a killed run left ``running`` is
        restarted only with ``resuming=True``: the caller says it has checked the mailbox (the
        first call's effect is unknown), and ``attempts`` counts the restart.
        """
        allowed = (
            (ActionStatus.PENDING, ActionStatus.RUNNING) if resuming else (ActionStatus.PENDING,)
        )
        return self._transition(
            plan_id,
            seq,
            allowed,
            {
                "status": ActionStatus.RUNNING.value,
                "attempts": PlanAction.attempts + 1,
                "started_at": self.now(),
            },
        )

    def finish_action(
        self, plan_id: int, seq: int, status: str, error: str | None = None
    ) -> ActionRecord:
        """running → done / failed / skipped; pending → skipped (a dependency failed)."""
        target = ActionStatus(status)
        if target is ActionStatus.SKIPPED:
            allowed: tuple[ActionStatus, ...] = (ActionStatus.PENDING, ActionStatus.RUNNING)
        elif target in (ActionStatus.DONE, ActionStatus.FAILED):
            allowed = (ActionStatus.RUNNING,)
        else:
            raise StagingError(f"finish_action: {status!r} is not a final status")
        return self._transition(
            plan_id,
            seq,
            allowed,
            {"status": target.value, "error": error, "finished_at": self.now()},
        )

    def reset_actions(self, plan_id: int, statuses: Sequence[str] = ("failed", "skipped")) -> int:
        """Put failed/skipped actions back to pending so that a retry of the plan runs them."""
        wanted = [ActionStatus(s).value for s in statuses]
        if ActionStatus.DONE.value in wanted:
            raise StagingError("done actions are never reset: they would be applied twice")
        with self._tx("resetting plan actions") as conn:
            result = conn.execute(
                update(PlanAction)
                .where(PlanAction.plan_id == plan_id, PlanAction.status.in_(wanted))
                .values(status=ActionStatus.PENDING.value, finished_at=None)
            )
            return int(result.rowcount)

    # --- audit log ----------------------------------------------------------------------

    @staticmethod
    def _redact(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                str(k): REDACTED if _SECRET_KEY.search(str(k)) else Repository._redact(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [Repository._redact(v) for v in value]
        return value

    def _audit_row(self, entry: AuditEntry, now: datetime) -> dict[str, Any]:
        return {
            "at": entry.at or now,
            "run_id": entry.run_id,
            "actor": entry.actor,
            "plan_id": entry.plan_id,
            "action_key": entry.action_key,
            "kind": entry.kind,
            "target": entry.target,
            "employee_id": entry.employee_id,
            "email": normalise_email(entry.email) if entry.email else None,
            "diffs": self._redact(entry.diffs) if entry.diffs is not None else None,
            "result": entry.result,
            "errcode": str(entry.errcode) if entry.errcode is not None else None,
            "errmsg": entry.errmsg,
            "attempt": entry.attempt,
            "attempts": entry.attempts,
            "duration_ms": entry.duration_ms,
            "call": entry.call,
        }

    def append_audit(self, entry: AuditEntry) -> int:
        """Write one audit row (committed at once). Values under secret-looking keys in
        ``diffs`` (password, secret, token, auth...) are stored as ``***``."""
        with self._tx("writing the audit log") as conn:
            audit_id = conn.execute(
                insert(AuditEntryRow)
                .values(**self._audit_row(entry, self.now()))
                .returning(AuditEntryRow.id)
            ).scalar_one()
        return int(audit_id)

    def append_audit_many(self, entries: Iterable[AuditEntry]) -> int:
        now = self.now()
        total = 0
        with self._tx("writing the audit log") as conn:
            for chunk in _chunks(entries, self._batch):
                conn.execute(insert(AuditEntryRow), [self._audit_row(e, now) for e in chunk])
                total += len(chunk)
        return total

    def query_audit(
        self,
        *,
        run_id: int | None = None,
        employee_id: str | None = None,
        email: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        plan_id: int | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Audit rows matching every given filter, oldest first (``limit``: the newest N)."""
        stmt = select(AuditEntryRow.__table__)
        if run_id is not None:
            stmt = stmt.where(AuditEntryRow.run_id == run_id)
        if plan_id is not None:
            stmt = stmt.where(AuditEntryRow.plan_id == plan_id)
        if employee_id is not None:
            stmt = stmt.where(AuditEntryRow.employee_id == employee_id)
        if email is not None:
            stmt = stmt.where(AuditEntryRow.email == normalise_email(email))
        if since is not None:
            stmt = stmt.where(AuditEntryRow.at >= since)
        if until is not None:
            stmt = stmt.where(AuditEntryRow.at < until)
        if limit is not None:
            stmt = stmt.order_by(AuditEntryRow.at.desc(), AuditEntryRow.id.desc()).limit(limit)
        else:
            stmt = stmt.order_by(AuditEntryRow.at, AuditEntryRow.id)
        with self._tx("reading the audit log") as conn:
            entries = [AuditEntry(**r) for r in conn.execute(stmt).mappings()]
        if limit is not None:
            entries.reverse()
        return entries

    # --- hook events --------------------------------------------------------------------

    @staticmethod
    def _event(row: Mapping[Any, Any]) -> HookEvent:
        return HookEvent(**row)

    def _event_where(self, cond: Any) -> HookEvent | None:
        with self._tx("reading a hook event") as conn:
            row = conn.execute(select(HookEventRow.__table__).where(cond)).mappings().first()
        return self._event(row) if row else None

    def store_event(
        self,
        delivery_id: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        employee_id: str | None = None,
        signature: tuple[str, datetime] | None = None,
    ) -> EventStored | EventReplay | SignatureReplay:
        """Store a received event durably; a delivery id seen before is a replay (not stored
        again, whatever its body). ``signature`` (replay key, expiry) is recorded as used in
        the same transaction (see :meth:`claim_signature`): a key seen before is a replay too."""
        try:
            with self._tx("storing a hook event") as conn:
                if signature is not None:
                    self._use_signature(conn, *signature)
                event_id = conn.execute(
                    insert(HookEventRow)
                    .values(
                        delivery_id=delivery_id,
                        received_at=self.now(),
                        kind=kind,
                        employee_id=employee_id,
                        payload=dict(payload),
                        status=EventStatus.RECEIVED.value,
                        attempts=0,
                    )
                    .returning(HookEventRow.id)
                ).scalar_one()
        except IntegrityError:
            seen = self.get_event_by_delivery(delivery_id)
            if seen is not None:
                return EventReplay(seen)
            if signature is not None:
                return SignatureReplay()
            raise StagingError(f"storing hook event {delivery_id!r} failed") from None
        stored = self.get_event(int(event_id))
        assert stored is not None
        return EventStored(stored)

    def get_event(self, event_id: int) -> HookEvent | None:
        return self._event_where(HookEventRow.id == event_id)

    def get_event_by_delivery(self, delivery_id: str) -> HookEvent | None:
        return self._event_where(HookEventRow.delivery_id == delivery_id)

    def next_events(self, *, limit: int = 100, now: datetime | None = None) -> list[HookEvent]:
        """Received events due now (never tried, or their retry time has come), oldest first."""
        now = now or self.now()
        with self._tx("reading due hook events") as conn:
            rows = conn.execute(
                select(HookEventRow.__table__)
                .where(
                    HookEventRow.status == EventStatus.RECEIVED.value,
                    or_(
                        HookEventRow.next_attempt_at.is_(None),
                        HookEventRow.next_attempt_at <= now,
                    ),
                )
                .order_by(HookEventRow.id)
                .limit(limit)
            ).mappings()
            return [self._event(r) for r in rows]

    def _event_outcome(
        self,
        status: str,
        error: str | None,
        next_attempt_at: datetime | None,
        run_id: int | None,
    ) -> dict[str, Any]:
        """The column values that record the end of one attempt (see :meth:`mark_event`)."""
        target = EventStatus(status)
        values: dict[str, Any] = {
            "status": target.value,
            "attempts": HookEventRow.attempts + 1,
            "last_error": error,
            "next_attempt_at": next_attempt_at if target is EventStatus.RECEIVED else None,
        }
        if run_id is not None:
            values["run_id"] = run_id
        if target is EventStatus.APPLIED:
            values["applied_at"] = self.now()
        return values

    def mark_event(
        self,
        event_id: int,
        status: str,
        *,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
        run_id: int | None = None,
    ) -> HookEvent:
        """Record the end of one attempt: ``applied``; ``failed`` (given up); or ``received``
        again with ``error`` and ``next_attempt_at`` (a retry is scheduled). Attempts + 1."""
        values = self._event_outcome(status, error, next_attempt_at, run_id)
        with self._tx("updating a hook event") as conn:
            result = conn.execute(
                update(HookEventRow).where(HookEventRow.id == event_id).values(**values)
            )
            if result.rowcount != 1:
                raise StagingError(f"hook event {event_id} does not exist")
        event = self.get_event(event_id)
        assert event is not None
        return event

    def list_events(self, *, status: str | None = None, limit: int = 50) -> list[HookEvent]:
        """The newest events first, optionally of one status."""
        stmt = select(HookEventRow.__table__).order_by(HookEventRow.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(HookEventRow.status == EventStatus(status).value)
        with self._tx("listing hook events") as conn:
            return [self._event(r) for r in conn.execute(stmt).mappings()]

    def event_queue_stats(self) -> EventQueueStats:
        with self._tx("reading the hook event queue") as conn:
            depth, oldest = conn.execute(
                select(func.count(), func.min(HookEventRow.received_at)).where(
                    HookEventRow.status == EventStatus.RECEIVED.value
                )
            ).one()
        return EventQueueStats(depth=int(depth), oldest_received_at=oldest)

    def employee_events(
        self, employee_ids: Collection[str], *, received_after: datetime | None = None
    ) -> list[HookEvent]:
        """The events of these employees that are not failed, oldest first; with
        ``received_after`` only those received after it (or still waiting)."""
        out: list[HookEvent] = []
        with self._tx("reading hook events of employees") as conn:
            for chunk in _chunks(sorted(set(employee_ids)), 500):
                stmt = select(HookEventRow.__table__).where(
                    HookEventRow.employee_id.in_(chunk),
                    HookEventRow.status != EventStatus.FAILED.value,
                )
                if received_after is not None:
                    stmt = stmt.where(
                        or_(
                            HookEventRow.received_at > received_after,
                            HookEventRow.status == EventStatus.RECEIVED.value,
                        )
                    )
                out.extend(self._event(r) for r in conn.execute(stmt).mappings())
        return sorted(out, key=lambda e: e.id)

    def mark_events(
        self,
        event_ids: Collection[int],
        status: str,
        *,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
        run_id: int | None = None,
    ) -> int:
        """:meth:`mark_event` for many events in one transaction (a coalesced burst)."""
        values = self._event_outcome(status, error, next_attempt_at, run_id)
        total = 0
        with self._tx("updating hook events") as conn:
            for chunk in _chunks(sorted(set(event_ids)), 500):
                result = conn.execute(
                    update(HookEventRow).where(HookEventRow.id.in_(chunk)).values(**values)
                )
                total += int(result.rowcount)
        return total

    # --- run lock -----------------------------------------------------------------------

    def get_lock(self, name: str) -> LockInfo | None:
        with self._tx("reading the run lock") as conn:
            row = (
                conn.execute(select(RunLockRow.__table__).where(RunLockRow.name == name))
                .mappings()
                .first()
            )
        return LockInfo(**row) if row else None

    def acquire_lock(
        self,
        name: str,
        *,
        command: str = "",
        pid: int | None = None,
        hostname: str | None = None,
        stale_after: timedelta | None = None,
    ) -> LockInfo:
        """Take the named run lock or raise LockHeldError naming the holder.

        Works the same on SQLite and PostgreSQL: inserting the lock's primary-key row either
        succeeds (we hold it) or conflicts. On conflict the holder is read; a lock whose holder
        is known dead (same host, process gone or pid reused), or whose heartbeat is older
        than ``stale_after``, is taken over with a compare-and-set update, so of two processes
        racing for a dead lock exactly one wins.
        """
        pid = os.getpid() if pid is None else pid
        hostname = socket.gethostname() if hostname is None else hostname
        for _ in range(5):
            now = self.now()
            mine = LockInfo(name, pid, hostname, command, acquired_at=now, heartbeat_at=now)
            values = {
                "pid": pid,
                "hostname": hostname,
                "command": command,
                "acquired_at": now,
                "heartbeat_at": now,
            }
            try:
                with self._tx("taking the run lock") as conn:
                    conn.execute(insert(RunLockRow).values(name=name, **values))
                return mine
            except IntegrityError:
                pass
            holder = self.get_lock(name)
            if holder is None:
                continue  # released in between: try again
            stale = stale_after is not None and holder.heartbeat_at < now - stale_after
            if not (holder_is_dead(holder, hostname) or stale):
                hint = "wait for it to finish; a lock left by a dead process on this host is "
                hint += "taken over automatically"
                if holder.hostname != hostname:
                    hint += (
                        f"; if host {holder.hostname} is gone for good, clear it with "
                        f"'syncengine db unlock {name} --yes'"
                    )
                raise LockHeldError(
                    f"another run holds the lock {name!r}: {holder.describe()}", hint=hint
                )
            with self._tx("taking over the run lock") as conn:
                result = conn.execute(
                    update(RunLockRow)
                    .where(
                        RunLockRow.name == name,
                        RunLockRow.pid == holder.pid,
                        RunLockRow.hostname == holder.hostname,
                        RunLockRow.acquired_at == holder.acquired_at,
                    )
                    .values(**values)
                )
            if result.rowcount == 1:
                log.warning("took over run lock %r left by %s", name, holder.describe())
                return mine
        raise LockHeldError(
            f"could not take the lock {name!r}: other processes kept taking it",
            hint="retry in a moment",
        )

    @contextmanager
    def locked(
        self, name: str, *, command: str = "", stale_after: timedelta | None = None
    ) -> Iterator[LockInfo]:
        """Hold the named lock for the ``with`` block (this process), released on exit."""
        info = self.acquire_lock(name, command=command, stale_after=stale_after)
        try:
            yield info
        finally:
            self.release_lock(name, pid=info.pid, hostname=info.hostname)

    def heartbeat(self, name: str, *, pid: int | None = None, hostname: str | None = None) -> bool:
        """Refresh our lock's heartbeat; False when we no longer hold it (stop working)."""
        pid = os.getpid() if pid is None else pid
        hostname = socket.gethostname() if hostname is None else hostname
        with self._tx("refreshing the run lock") as conn:
            result = conn.execute(
                update(RunLockRow)
                .where(
                    RunLockRow.name == name, RunLockRow.pid == pid, RunLockRow.hostname == hostname
                )
                .values(heartbeat_at=self.now())
            )
            return result.rowcount == 1

    def release_lock(
        self, name: str, *, pid: int | None = None, hostname: str | None = None
    ) -> bool:
        """Release our lock; False when it was not ours (already taken over)."""
        pid = os.getpid() if pid is None else pid
        hostname = socket.gethostname() if hostname is None else hostname
        with self._tx("releasing the run lock") as conn:
            result = conn.execute(
                delete(RunLockRow).where(
                    RunLockRow.name == name, RunLockRow.pid == pid, RunLockRow.hostname == hostname
                )
            )
            return result.rowcount == 1

    # --- watch cursors ------------------------------------------------------------------

    def get_cursor(self, name: str) -> str | None:
        with self._tx("reading a cursor") as conn:
            value = conn.execute(
                select(WatchState.value).where(WatchState.name == name)
            ).scalar_one_or_none()
        return value

    def set_cursor(self, name: str, value: str) -> None:
        """Insert or update a cursor (update first: the common case after the first run)."""
        now = self.now()
        with self._tx("saving a cursor") as conn:
            result = conn.execute(
                update(WatchState)
                .where(WatchState.name == name)
                .values(value=value, updated_at=now)
            )
            if result.rowcount == 0:
                conn.execute(insert(WatchState).values(name=name, value=value, updated_at=now))

    # --- used signatures ------------------------------------------------------------------

    def claim_signature(self, digest: str, expires_at: datetime) -> bool:
        """Record a signed request as honoured; False when it was honoured before (a replay).

        Rows whose signature can no longer pass its timestamp check are purged on the way, so
        the table holds at most one tolerance window's worth of requests."""
        try:
            with self._tx("recording a used signature") as conn:
                self._use_signature(conn, digest, expires_at)
        except IntegrityError:
            return False
        return True

    _signatures_purged_at: datetime | None = None

    def _use_signature(self, conn: Connection, digest: str, expires_at: datetime) -> None:
        """Insert the key (IntegrityError when it is there); at most once a minute, purge the
        keys whose signatures have expired."""
        now = self.now()
        last = self._signatures_purged_at
        if last is None or now - last > timedelta(minutes=1):
            conn.execute(delete(UsedSignature).where(UsedSignature.expires_at < now))
            self._signatures_purged_at = now
        row = {"digest": digest, "used_at": now, "expires_at": expires_at}
        conn.execute(insert(UsedSignature).values(**row))

    def release_signature(self, digest: str) -> None:
        """Forget a claim whose request could not be carried out, so it may be sent again."""
        with self._tx("releasing a used signature") as conn:
            conn.execute(delete(UsedSignature).where(UsedSignature.digest == digest))
