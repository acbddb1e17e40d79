"""HR snapshots: people, departments and quarantined rows of one ingest; comparisons."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Text,
    and_,
    cast,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from syncengine.domain import Department, Person, RowProblem
from syncengine.errors import StagingError
from syncengine.staging import codec
from syncengine.staging.models import (
    Snapshot,
    SnapshotDepartment,
    SnapshotPerson,
    SnapshotProblem,
)
from syncengine.staging.repository.core import RepositoryCore
from syncengine.staging.repository.records import (
    SnapshotDiff,
    SnapshotInfo,
    StoredDepartment,
    chunks,
    first_line,
    rows_digest,
)
from syncengine.statuses import (
    SnapshotStatus,
)

log = logging.getLogger(__name__)

ROWS_FROM = "rows_from_snapshot"
"""The ``counts`` key of a snapshot that shares another snapshot's rows: that one's id (see
:meth:`SnapshotsRepository.share_snapshot_rows`)."""


class SnapshotsRepository(RepositoryCore):
    """HR snapshots: people, departments and quarantined rows of one ingest; comparisons."""

    # --- snapshots ----------------------------------------------------------------------

    def begin_snapshot(
        self, run_id: int | None, source: str, *, source_time: datetime | None = None
    ) -> int:
        """Open a snapshot in status ``loading``; it is not current until completed.
        ``source_time``: when HR exported the data (default: now, as for a live source)."""
        now = self.now()
        with self._tx("starting a snapshot") as conn:
            snap_id = conn.execute(
                insert(Snapshot)
                .values(
                    run_id=run_id,
                    created_at=now,
                    source_time=source_time or now,
                    source=source,
                    status=SnapshotStatus.LOADING.value,
                    is_current=False,
                )
                .returning(Snapshot.id)
            ).scalar_one()
        return int(snap_id)

    def _require_loading(self, conn: Connection, snapshot_id: int) -> int:
        """Raise unless the snapshot is loading; the id its rows are stored under."""
        row = conn.execute(
            select(Snapshot.status, Snapshot.counts).where(Snapshot.id == snapshot_id)
        ).first()
        if row is None:
            raise StagingError(f"snapshot {snapshot_id} does not exist")
        status, counts = row
        if status != SnapshotStatus.LOADING.value:
            raise StagingError(
                f"snapshot {snapshot_id} is {status}; only a loading snapshot takes records",
                hint="start a new snapshot with begin_snapshot()",
            )
        return self._owner_of(snapshot_id, counts)

    def _bulk_insert(
        self, what: str, snapshot_id: int, table: Any, rows: Iterable[dict[str, Any]]
    ) -> int:
        total = 0
        try:
            with self._tx(what) as conn:
                if self._require_loading(conn, snapshot_id) != snapshot_id:
                    raise StagingError(
                        f"snapshot {snapshot_id} shares another snapshot's rows; it takes no "
                        "records of its own",
                        hint="start a new snapshot with begin_snapshot()",
                    )
                for chunk in chunks(rows, self._batch):
                    conn.execute(insert(table), chunk)
                    total += len(chunk)
        except IntegrityError as exc:
            raise StagingError(
                f"{what} for snapshot {snapshot_id} failed: a duplicate key ({first_line(exc)})",
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

    def share_snapshot_rows(self, source_id: int, snapshot_id: int) -> int:
        """Give the loading snapshot ``snapshot_id`` the people, departments and problems of
        snapshot ``source_id`` by reference, without copying a row: the ingest of an
        unchanged source. Its header records which snapshot owns the rows (``counts`` key
        :data:`ROWS_FROM`, never a chain: the owner of ``source_id``'s rows), and every
        reader of a snapshot's rows below reads the owner's, so the snapshot reads exactly
        like a copy; :meth:`prune_snapshot_rows` keeps an owner's rows while a snapshot it
        keeps refers to them. Returns the owner's id."""
        with self._tx("sharing a snapshot's rows") as conn:
            self._require_loading(conn, snapshot_id)
            owner = self._owners(conn, [source_id]).get(source_id)
            if owner is None:
                raise StagingError(f"snapshot {source_id} does not exist")
            if conn.execute(
                select(SnapshotPerson.employee_id)
                .where(SnapshotPerson.snapshot_id == snapshot_id)
                .limit(1)
            ).first():
                raise StagingError(
                    f"snapshot {snapshot_id} has people of its own; it cannot share another's",
                    hint="start a new snapshot with begin_snapshot()",
                )
            conn.execute(
                update(Snapshot).where(Snapshot.id == snapshot_id).values(counts={ROWS_FROM: owner})
            )
        return owner

    @staticmethod
    def _owner_of(snapshot_id: int, counts: Mapping[str, Any] | None) -> int:
        owner = (counts or {}).get(ROWS_FROM)
        return int(owner) if isinstance(owner, int) else snapshot_id

    def _owners(self, conn: Connection, snapshot_ids: Collection[int]) -> dict[int, int]:
        """Snapshot id -> the id of the snapshot whose rows it reads (itself, or the one it
        shares them with, see :meth:`share_snapshot_rows`); unknown ids are left out."""
        out: dict[int, int] = {}
        for chunk in chunks(sorted(set(snapshot_ids)), 500):
            rows = conn.execute(select(Snapshot.id, Snapshot.counts).where(Snapshot.id.in_(chunk)))
            out.update((i, self._owner_of(i, counts)) for i, counts in rows)
        return out

    def _rows_of(self, conn: Connection, snapshot_id: int) -> int:
        """The id under which ``snapshot_id``'s rows are stored (itself for an unknown id,
        which then simply has none)."""
        return self._owners(conn, [snapshot_id]).get(snapshot_id, snapshot_id)

    def complete_snapshot(self, snapshot_id: int, counts: Mapping[str, Any]) -> SnapshotInfo:
        """Mark the snapshot complete and make it the current one, in one transaction."""
        with self._tx("completing a snapshot") as conn:
            owner = self._require_loading(conn, snapshot_id)
            # The reference to shared rows is the header's own (see share_snapshot_rows), never
            # one carried over in ``counts`` from the snapshot the caller took them from.
            stored = {k: v for k, v in counts.items() if k != ROWS_FROM}
            if owner != snapshot_id:
                stored[ROWS_FROM] = owner
            conn.execute(
                update(Snapshot)
                .where(Snapshot.id == snapshot_id)
                .values(
                    status=SnapshotStatus.COMPLETE.value,
                    completed_at=self.now(),
                    counts=stored,
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
        with self._tx("loading people") as conn:
            stmt = (
                select(SnapshotPerson.data)
                .where(SnapshotPerson.snapshot_id == self._rows_of(conn, snapshot_id))
                .order_by(SnapshotPerson.employee_id)
            )
            if employee_ids is None:
                return [codec.person_from_dict(d) for d in conn.execute(stmt).scalars()]
            people: list[Person] = []
            for chunk in chunks(sorted(set(employee_ids)), 500):
                result = conn.execute(stmt.where(SnapshotPerson.employee_id.in_(chunk)))
                people.extend(codec.person_from_dict(d) for d in result.scalars())
        return people

    def load_people_bulk(self, snapshot_id: int) -> list[Person]:
        """:meth:`load_people` of a whole snapshot, for the planner: the records are read as
        their stored JSON text (one cast, any dialect) and decoded by
        :func:`syncengine.staging.codec.people_from_json_texts`. Same people, same order."""
        with self._tx("loading people") as conn:
            stmt = (
                select(cast(SnapshotPerson.data, Text))
                .where(SnapshotPerson.snapshot_id == self._rows_of(conn, snapshot_id))
                .order_by(SnapshotPerson.employee_id)
            )
            return codec.people_from_json_texts(conn.execute(stmt).scalars())

    def snapshot_digest(self, snapshot_id: int) -> str:
        """sha256 of the snapshot's stored content: every person's employee id and content
        hash (the hash of the whole stored record) and every department row, in key order.
        Two snapshots with the same digest load as the same people and departments; read
        without decoding a record (a few milliseconds for 10,000 people)."""
        with self._tx("digesting a snapshot") as conn:
            snapshot_id = self._rows_of(conn, snapshot_id)
            people = conn.execute(
                select(SnapshotPerson.employee_id, SnapshotPerson.content_hash)
                .where(SnapshotPerson.snapshot_id == snapshot_id)
                .order_by(SnapshotPerson.employee_id)
            )
            digest = rows_digest("people", people)
            departments = conn.execute(
                select(
                    SnapshotDepartment.path,
                    SnapshotDepartment.hr_id,
                    SnapshotDepartment.parent_hr_id,
                    SnapshotDepartment.name,
                    SnapshotDepartment.content_hash,
                )
                .where(SnapshotDepartment.snapshot_id == snapshot_id)
                .order_by(SnapshotDepartment.path)
            )
            return rows_digest(digest, departments)

    def earlier_complete_snapshots(self, current_id: int, *, scan: int, keep: int) -> list[int]:
        """The ids of the complete snapshots before ``current_id`` among the newest ``scan``
        snapshots, newest first, at most ``keep`` (the window the planner looks back over)."""
        with self._tx("listing earlier snapshots") as conn:
            rows = conn.execute(
                select(Snapshot.id, Snapshot.status).order_by(Snapshot.id.desc()).limit(scan)
            )
            ids = [i for i, status in rows if i < current_id and status == "complete"]
        return ids[:keep]

    def department_keys(self, snapshot_ids: Collection[int]) -> set[tuple[str, str]]:
        """Every distinct (path, HR id or "") of the departments of these snapshots."""
        if not snapshot_ids:
            return set()
        with self._tx("listing earlier departments") as conn:
            owners = set(self._owners(conn, snapshot_ids).values())
            stmt = (
                select(SnapshotDepartment.path, SnapshotDepartment.hr_id)
                .where(SnapshotDepartment.snapshot_id.in_(sorted(owners)))
                .distinct()
            )
            return {(path, hr_id or "") for path, hr_id in conn.execute(stmt)}

    def load_department_rows(self, snapshot_id: int) -> list[StoredDepartment]:
        """The snapshot's departments with their parents' HR ids, ordered by path."""
        with self._tx("loading departments") as conn:
            snapshot_id = self._rows_of(conn, snapshot_id)
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
            snapshot_id = self._rows_of(conn, snapshot_id)
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
            snapshot_id = self._rows_of(conn, snapshot_id)
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
            new_id = self._rows_of(conn, new_id)
            if prev_id is None:
                ids = conn.execute(
                    select(new.employee_id)
                    .where(new.snapshot_id == new_id)
                    .order_by(new.employee_id)
                ).scalars()
                return SnapshotDiff(tuple(ids), (), ())
            prev_id = self._rows_of(conn, prev_id)
            if prev_id == new_id:  # the same rows
                return SnapshotDiff((), (), ())

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

    def prune_snapshot_rows(self, keep: int) -> int:
        """Delete the people, departments and problems of every snapshot older than the
        newest ``keep`` complete ones (never the current one's); their header rows stay, with
        their counts and times, for the shrink brake's baseline and the history. Returns how
        many snapshots lost their rows (0 when there was nothing left to prune).

        Every reader of older snapshots' rows looks at most a few snapshots back (moves,
        former employees, leavers' names): ``keep`` must cover that window, which
        :data:`syncengine.config.MIN_KEEP_SNAPSHOTS` states and a test checks."""
        if keep < 1:
            raise ValueError("keep at least one snapshot")
        with self._tx("pruning old snapshots' rows") as conn:
            cutoff = conn.execute(
                select(Snapshot.id)
                .where(Snapshot.status == SnapshotStatus.COMPLETE.value)
                .order_by(Snapshot.id.desc())
                .offset(keep - 1)
                .limit(1)
            ).scalar()
            if cutoff is None:
                return 0
            # Kept: the rows of the newest ``keep`` and of the current snapshot, and the rows
            # any of those (or a newer, still loading one) shares (see share_snapshot_rows).
            kept = conn.execute(
                select(Snapshot.id, Snapshot.counts).where(
                    or_(Snapshot.id >= cutoff, Snapshot.is_current.is_(True))
                )
            )
            shared = sorted({o for i, c in kept if (o := self._owner_of(i, c)) < cutoff})
            pruned: set[int] = set()
            for table in (SnapshotPerson, SnapshotDepartment, SnapshotProblem):
                old = table.snapshot_id < cutoff
                if shared:
                    old = and_(old, table.snapshot_id.not_in(shared))
                found = set(conn.execute(select(table.snapshot_id).where(old).distinct()).scalars())
                if found:  # a quiet night finds none: the snapshot it passes by shares its rows
                    conn.execute(delete(table).where(old))
                    pruned.update(found)
        if pruned:
            log.info("removed the rows of %d snapshot(s) older than #%d (their counts stay)",
                     len(pruned), cutoff)  # fmt: skip
        return len(pruned)
