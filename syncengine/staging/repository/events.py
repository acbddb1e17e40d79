"""HR hook events (a durable queue), the new-mail watch cursors and used signatures."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from syncengine.errors import StagingError
from syncengine.staging.models import (
    HookEventRow,
    UsedSignature,
    WatchState,
)
from syncengine.staging.repository.core import RepositoryCore
from syncengine.staging.repository.records import (
    EventQueueStats,
    EventReplay,
    EventStored,
    HookEvent,
    SignatureReplay,
    chunks,
)
from syncengine.statuses import (
    EventStatus,
)

log = logging.getLogger(__name__)


class EventsRepository(RepositoryCore):
    """HR hook events (a durable queue), the new-mail watch cursors and used signatures."""

    _signatures_purged_at: datetime | None = None

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
        values: dict[str, Any] = {
            "delivery_id": delivery_id,
            "received_at": self.now(),
            "kind": kind,
            "employee_id": employee_id,
            "payload": dict(payload),
            "status": EventStatus.RECEIVED.value,
            "attempts": 0,
        }
        try:
            with self._tx("storing a hook event") as conn:
                if signature is not None:
                    self._use_signature(conn, *signature)
                event_id = conn.execute(
                    insert(HookEventRow).values(**values).returning(HookEventRow.id)
                ).scalar_one()
        except IntegrityError:
            seen = self.get_event_by_delivery(delivery_id)
            if seen is not None:
                return EventReplay(seen)
            if signature is not None:
                return SignatureReplay()
            raise StagingError(f"storing hook event {delivery_id!r} failed") from None
        # What was just written, without reading it back (one query less per hook request).
        return EventStored(HookEvent(id=int(event_id), last_error=None, next_attempt_at=None,
                                     applied_at=None, run_id=None, **values))  # fmt: skip

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
            for chunk in chunks(sorted(set(employee_ids)), 500):
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

    def events_since(self, received_after: datetime) -> list[HookEvent]:
        """Every event not failed that was received after ``received_after`` or is still
        waiting, oldest first: the hook facts an HR export of that age cannot overrule."""
        with self._tx("reading recent hook events") as conn:
            stmt = select(HookEventRow.__table__).where(
                HookEventRow.employee_id.is_not(None),
                HookEventRow.status != EventStatus.FAILED.value,
                or_(
                    HookEventRow.received_at > received_after,
                    HookEventRow.status == EventStatus.RECEIVED.value,
                ),
            )
            return sorted((self._event(r) for r in conn.execute(stmt).mappings()),
                          key=lambda e: e.id)  # fmt: skip

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
            for chunk in chunks(sorted(set(event_ids)), 500):
                result = conn.execute(
                    update(HookEventRow).where(HookEventRow.id.in_(chunk)).values(**values)
                )
                total += int(result.rowcount)
        return total

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
