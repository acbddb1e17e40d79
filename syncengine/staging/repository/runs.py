"""Runs and run locks."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from syncengine.errors import LockHeldError
from syncengine.staging.models import (
    Run,
    RunLockRow,
)
from syncengine.staging.repository.core import RepositoryCore
from syncengine.staging.repository.records import (
    LockInfo,
    RunInfo,
    holder_is_dead,
)
from syncengine.statuses import (
    RunKind,
    RunStatus,
)

log = logging.getLogger(__name__)


class RunsRepository(RepositoryCore):
    """Runs and run locks."""

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
