"""The statuses of runs, snapshots, plans, actions and hook events, as enums end to end.

PURE: the executor, the service layer and the staging tables all speak these words; the
tables store their values. (The executor's action checkpoint is :class:`ActionStatus`.)
"""

from __future__ import annotations

import enum


class RunKind(enum.StrEnum):
    INGEST = "ingest"
    PLAN = "plan"
    APPLY = "apply"
    SYNC = "sync"
    HOOK = "hook"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    PARTIAL = "partial"  # finished, some actions failed


class SnapshotStatus(enum.StrEnum):
    LOADING = "loading"
    COMPLETE = "complete"
    FAILED = "failed"


class PlanStatus(enum.StrEnum):
    SAVED = "saved"
    APPLYING = "applying"
    APPLIED = "applied"
    FAILED = "failed"  # finished with failed actions
    ABANDONED = "abandoned"  # superseded or refused (stale), never to be resumed


class ActionStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class EventStatus(enum.StrEnum):
    RECEIVED = "received"
    APPLIED = "applied"
    FAILED = "failed"
