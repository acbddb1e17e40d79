"""Database administration: schema status, migrations and run locks."""

from __future__ import annotations

import logging
import socket

from syncengine.config import Config
from syncengine.errors import (
    LockHeldError,
)
from syncengine.service.engine import Engine
from syncengine.staging import db as staging_db
from syncengine.staging.repository import (
    LockInfo,
    holder_is_dead,
)

log = logging.getLogger(__name__)


def db_current(config: Config) -> staging_db.SchemaStatus:
    """Where the configured database stands: its revision and the code's head."""
    engine = staging_db.make_engine(config.database_url)
    try:
        return staging_db.schema_status(engine)
    finally:
        engine.dispose()


def db_upgrade(config: Config) -> tuple[str | None, str | None]:
    """Migrate the configured database to the code's head: (revision before, after)."""
    return staging_db.upgrade(config.database_url)


def lock_holder(engine: Engine, name: str) -> LockInfo | None:
    """Who holds the named run lock (``apply``, ``sync``), or None."""
    return engine.repo.get_lock(name)


def db_unlock(engine: Engine, name: str) -> LockInfo | None:
    """Clear a run lock whose holder cannot be checked from here (another host that died).

    A lock held by a live process on this host is refused: stop that process instead. A dead
    holder on this host needs no unlock (the next run takes it over), but clearing it is
    harmless. The release is a compare-and-set on the holder that was shown, so a lock someone
    else took meanwhile is left alone. Returns the holder that was cleared, None if not held.
    """
    repo = engine.repo
    holder = repo.get_lock(name)
    if holder is None:
        return None
    here = socket.gethostname()
    if holder.hostname == here and not holder_is_dead(holder, here):
        raise LockHeldError(
            f"the lock {name!r} is held by a process that is alive on this host: "
            f"{holder.describe()}",
            hint="let it finish, or stop that process; its lock is then taken over",
        )
    if not repo.release_lock(name, pid=holder.pid, hostname=holder.hostname):
        raise LockHeldError(
            f"the lock {name!r} changed hands while it was being cleared",
            hint=f"look again: syncengine db unlock {name}",
        )
    log.warning("run lock %r cleared by hand; it was held by %s", name, holder.describe())
    return holder
