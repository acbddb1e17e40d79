"""The audit log: one row per API call attempt and per action outcome."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    insert,
    select,
)

from syncengine.domain import normalise_email
from syncengine.staging.models import (
    AuditEntryRow,
)
from syncengine.staging.repository.bulk import BulkStatement
from syncengine.staging.repository.core import RepositoryCore
from syncengine.staging.repository.records import (
    REDACTED,
    SECRET_KEY,
    AuditEntry,
    chunks,
)

log = logging.getLogger(__name__)


_AUDIT_COLUMNS = ("at", "run_id", "actor", "plan_id", "action_key", "kind", "target",
                  "employee_id", "email", "diffs", "result", "errcode", "errmsg", "attempt",
                  "attempts", "duration_ms", "call")  # fmt: skip
_INSERT_AUDIT = BulkStatement(insert(AuditEntryRow), _AUDIT_COLUMNS)
"""Built once: an apply appends audit rows in every group-commit batch, thousands of times."""


@functools.lru_cache(maxsize=4096)
def _secret_key(name: str) -> bool:
    """Whether a diffs key names a secret (the same few field names come back in every row)."""
    return SECRET_KEY.search(name) is not None


class AuditRepository(RepositoryCore):
    """The audit log: one row per API call attempt and per action outcome."""

    # --- audit log ----------------------------------------------------------------------

    @staticmethod
    def _redact(value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            return value  # the usual leaf, without the ABC checks below
        if isinstance(value, Mapping):
            redact = AuditRepository._redact
            return {
                name: REDACTED if _secret_key(name) else redact(v)
                for name, v in ((str(k), v) for k, v in value.items())
            }
        if isinstance(value, list | tuple):
            return [AuditRepository._redact(v) for v in value]
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
            for chunk in chunks(entries, self._batch):
                rows = [self._audit_row(e, now) for e in chunk]
                # The usual batch: every row stamped now, the time converted once.
                shared = {"at": now} if all(e.at is None for e in chunk) else None
                _INSERT_AUDIT.run(conn, rows, shared)
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

    def former_addresses(self) -> dict[str, frozenset[str]]:
        """Employee id -> the addresses an applied address change swapped away from primary.

        Read from the audit log's outcome rows of ``swap_primary`` actions that are done (the
        action's target is the old primary address); the planner keeps them as aliases.
        """
        stmt = select(AuditEntryRow.employee_id, AuditEntryRow.target).where(
            AuditEntryRow.kind == "swap_primary",
            AuditEntryRow.result == "done",
            AuditEntryRow.call.is_(None),
            AuditEntryRow.employee_id.is_not(None),
            AuditEntryRow.target.is_not(None),
        )
        found: dict[str, set[str]] = {}
        with self._tx("reading former addresses") as conn:
            for eid, target in conn.execute(stmt):
                found.setdefault(str(eid), set()).add(normalise_email(str(target)))
        return {eid: frozenset(addrs) for eid, addrs in found.items()}
