"""The audit log, read back: what happened to whom, when and why.

A module of its own so that ``syncengine audit`` imports the repository and nothing of the
apply path (executor, enforcement, handover, providers).
"""

from __future__ import annotations

from datetime import datetime

from syncengine.service.engine import Engine
from syncengine.staging.repository import AuditEntry


def query_audit(
    engine: Engine,
    *,
    run_id: int | None = None,
    employee_id: str | None = None,
    email: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditEntry]:
    """Audit rows matching every given filter, oldest first (``limit``: the newest N)."""
    return engine.repo.query_audit(
        run_id=run_id, employee_id=employee_id, email=email, since=since, limit=limit
    )
