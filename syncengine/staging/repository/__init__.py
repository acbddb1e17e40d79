"""Reading and writing the staging database: plain data in, plain data out.

No business rules live here: the repository stores what the service hands it and answers
questions about it. Inputs and outputs are :mod:`syncengine.domain` types (Person, Department,
IdentityLink, RowProblem) and the small frozen records of :mod:`.records`, never ORM objects,
so callers cannot lazily load or accidentally write anything.

Every public method is its own transaction and commits before it returns. That is the point
for checkpoints (an action marked running is on disk before the API call is made) and keeps
a long run from holding locks. Bulk loads (100,000 people) use Core ``insert()`` with
executemany in chunks, and snapshot comparisons are done in SQL.

The code is split by aggregate, one module each, over one core (engine, transaction, clock):
``runs`` (runs and run locks), ``snapshots``, ``links``, ``plans`` (plans and action
checkpoints), ``audit``, ``events`` (hook events, watch cursors and used signatures),
``groups`` (owned mail groups), ``leases`` (which ``serve`` worker does the work now).
:class:`Repository` is their union: a use case that spans aggregates (an apply writes
checkpoints, audit rows and links) holds one object and one connection pool.
"""

from __future__ import annotations

from syncengine.staging.repository.audit import AuditRepository
from syncengine.staging.repository.events import EventsRepository
from syncengine.staging.repository.groups import GroupsRepository
from syncengine.staging.repository.leases import LeasesRepository, LeaseTaken
from syncengine.staging.repository.links import LinksRepository
from syncengine.staging.repository.plans import PlansRepository, document_sha256
from syncengine.staging.repository.records import (
    DEFAULT_BATCH,
    REDACTED,
    ActionRecord,
    AuditEntry,
    EventQueueStats,
    EventReplay,
    EventStored,
    HookEvent,
    LockInfo,
    NewAction,
    PlanHeader,
    PlanRecord,
    RunInfo,
    SignatureReplay,
    SnapshotDiff,
    SnapshotInfo,
    StoredDepartment,
    holder_is_dead,
    pid_alive,
    process_started_at,
    utcnow,
)
from syncengine.staging.repository.runs import RunsRepository
from syncengine.staging.repository.snapshots import SnapshotsRepository
from syncengine.staging.repository.writer import GroupWriter, Merged


class Repository(
    RunsRepository,
    SnapshotsRepository,
    LinksRepository,
    PlansRepository,
    AuditRepository,
    EventsRepository,
    GroupsRepository,
    LeasesRepository,
):
    """All reads and writes of the staging database, one transaction per call."""


__all__ = [
    "DEFAULT_BATCH",
    "REDACTED",
    "ActionRecord",
    "AuditEntry",
    "EventQueueStats",
    "EventReplay",
    "EventStored",
    "GroupWriter",
    "HookEvent",
    "LeaseTaken",
    "LockInfo",
    "Merged",
    "NewAction",
    "PlanHeader",
    "PlanRecord",
    "Repository",
    "RunInfo",
    "SignatureReplay",
    "SnapshotDiff",
    "SnapshotInfo",
    "StoredDepartment",
    "document_sha256",
    "holder_is_dead",
    "pid_alive",
    "process_started_at",
    "utcnow",
]
