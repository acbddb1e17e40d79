"""Worker leases: which ``serve`` process does this tenant's work now (issue 15).

Several ``serve`` processes (on one host or many) share one PostgreSQL staging database; each
tenant's work must run on exactly one of them at a time, and the work of a worker that died
must be picked up by another. A lease row per kind of work says who holds it and until when:

* :meth:`take_lease` locks the row with ``SELECT ... FOR UPDATE SKIP LOCKED`` (a worker that
  finds it locked by another worker's take moves on at once instead of queueing behind it),
  then takes it when it is free, expired or already ours. Taking over an expired lease returns
  the previous holder, so the caller can clear what that holder left (its run locks) and
  resume its interrupted apply.
* :meth:`renew_lease` (the heartbeat) pushes the expiry on; False when the lease is no longer
  ours. :meth:`release_lease` gives it up.
* :meth:`claim_slot`: a scheduled run is claimed once (the first insert of its row wins).

On SQLite (one process) the same calls work: ``FOR UPDATE`` is not rendered there, and every
transaction takes the write lock at ``BEGIN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from syncengine.staging.models import WorkerLease
from syncengine.staging.repository.core import RepositoryCore

SLOT_PREFIX = "slot:"
SLOT_KEEP = timedelta(days=30)
"""Claimed slots older than this are purged when a new one is claimed."""
NEVER = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LeaseTaken:
    """A lease this worker holds now; ``previous``: the holder whose expired lease it took
    over (None when the lease was free or already ours)."""

    name: str
    holder: str
    expires_at: datetime
    previous: str | None = None


class LeasesRepository(RepositoryCore):
    """Worker leases and scheduled-slot claims (see the module docstring)."""

    def take_lease(self, name: str, holder: str, ttl: float) -> LeaseTaken | None:
        """Hold ``name`` for ``ttl`` seconds from now, or None when another live worker holds
        it (or is taking it at this very moment)."""
        now = self.now()
        expires = now + timedelta(seconds=ttl)
        try:
            with self._tx("taking a worker lease") as conn:
                row = conn.execute(
                    select(WorkerLease.holder, WorkerLease.expires_at)
                    .where(WorkerLease.name == name)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is None:
                    # free, or locked by another worker's take (skipped): try to insert; a
                    # conflict means someone else has it.
                    values = {"holder": holder, "acquired_at": now, "expires_at": expires}
                    conn.execute(insert(WorkerLease).values(name=name, **values))
                    return LeaseTaken(name, holder, expires)
                previous, until = row
                if previous != holder and until > now:
                    return None
                conn.execute(
                    update(WorkerLease)
                    .where(WorkerLease.name == name)
                    .values(holder=holder, acquired_at=now, expires_at=expires)
                )
                return LeaseTaken(name, holder, expires, None if previous == holder else previous)
        except IntegrityError:
            return None

    def renew_lease(self, name: str, holder: str, ttl: float) -> bool:
        """The heartbeat: push our lease's expiry on; False when it is no longer ours."""
        expires = self.now() + timedelta(seconds=ttl)
        with self._tx("renewing a worker lease") as conn:
            result = conn.execute(
                update(WorkerLease)
                .where(WorkerLease.name == name, WorkerLease.holder == holder)
                .values(expires_at=expires)
            )
        return bool(result.rowcount == 1)

    def release_lease(self, name: str, holder: str) -> bool:
        """Give our lease up; False when it was not ours (taken over after expiring)."""
        with self._tx("releasing a worker lease") as conn:
            result = conn.execute(
                delete(WorkerLease).where(WorkerLease.name == name, WorkerLease.holder == holder)
            )
        return bool(result.rowcount == 1)

    def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        """(holder, expires at) of a lease, or None when nobody holds it."""
        with self._tx("reading a worker lease") as conn:
            row = conn.execute(
                select(WorkerLease.holder, WorkerLease.expires_at).where(WorkerLease.name == name)
            ).first()
        return (row[0], row[1]) if row else None

    def claim_slot(self, slot: str, holder: str) -> bool:
        """Claim a scheduled run (``slot``: its firing time) once among every worker: True
        for the first caller only. Slots older than :data:`SLOT_KEEP` are purged."""
        now = self.now()
        try:
            with self._tx("claiming a scheduled run") as conn:
                values = {"holder": holder, "acquired_at": now, "expires_at": NEVER}
                conn.execute(insert(WorkerLease).values(name=SLOT_PREFIX + slot, **values))
        except IntegrityError:
            return False
        with self._tx("purging old scheduled-run claims") as conn:
            conn.execute(
                delete(WorkerLease).where(
                    WorkerLease.name.startswith(SLOT_PREFIX),
                    WorkerLease.acquired_at < now - SLOT_KEEP,
                )
            )
        return True
