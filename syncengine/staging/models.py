"""The staging database's tables as SQLAlchemy 2 typed declarative models.

These models are the source of truth for *the code's* view of the schema; the Alembic
migrations in ``migrations/versions`` are the source of truth for *the database*. A test runs
Alembic's autogenerate comparison at head to prove the two agree, so a model change without a
new migration fails the build. Migrations never import this module (they use ``op.*`` only),
so a released migration keeps meaning the same thing whatever the models become.

Portability rules, because the same schema runs on SQLite (default) and PostgreSQL:
- ids are BIGINT on PostgreSQL and INTEGER on SQLite (only ``INTEGER PRIMARY KEY`` is an
  auto-incrementing rowid there);
- datetimes are :class:`UTCDateTime`: timezone-aware UTC in Python on both backends;
- JSON is ``sqlalchemy.JSON`` (TEXT on SQLite, json on PostgreSQL);
- status columns are plain strings validated by the repository (the allowed values are the
  enums below), so adding a value later needs no table rebuild on SQLite;
- constraint names come from one naming convention, so later migrations can address them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Lengths generous enough for Exmail (addresses up to 254, names 64 bytes) and HR ids.
EMPLOYEE_ID_LEN = 128
EMAIL_LEN = 320
NAME_LEN = 255
SHORT_LEN = 32
HASH_LEN = 64


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zone type, so the value is converted
    to UTC and stored naive, and read back with UTC attached. Naive datetimes are refused on
    the way in: a naive value is ambiguous, and silently guessing its zone would skew
    grace periods and audit times.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: staging stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# BIGINT ids, but INTEGER on SQLite so that the primary key is the auto-incrementing rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Run(Base):
    """One invocation of the engine: who started it, when, how it ended."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(SHORT_LEN))
    actor: Mapped[str] = mapped_column(String(NAME_LEN))  # schedule, cli:<user>, hook:<id>
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(SHORT_LEN))
    summary: Mapped[dict[str, Any] | None]
    config_fingerprint: Mapped[str | None] = mapped_column(String(HASH_LEN))

    __table_args__ = (Index(None, "started_at"),)


class Snapshot(Base):
    """One ingest of the HR source. Exactly one complete snapshot is the current one."""

    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(SHORT_LEN))
    counts: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the HR data was exported (the file's mtime; a live source's read time): a hook
    # fact newer than this is not overruled by the snapshot (see syncengine.hookfacts).
    source_time: Mapped[datetime | None]

    __table_args__ = (Index(None, "is_current"),)


class SnapshotPerson(Base):
    """A Person of a snapshot: the searchable columns plus the whole record as JSON."""

    __tablename__ = "snapshot_people"

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    employee_id: Mapped[str] = mapped_column(String(EMPLOYEE_ID_LEN), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    email: Mapped[str | None] = mapped_column(String(EMAIL_LEN))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    status: Mapped[str] = mapped_column(String(SHORT_LEN))
    data: Mapped[dict[str, Any]]


class SnapshotDepartment(Base):
    """A department of a snapshot, with its HR id and its parent's when the source has them."""

    __tablename__ = "snapshot_departments"

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    hr_id: Mapped[str | None] = mapped_column(String(EMPLOYEE_ID_LEN))
    parent_hr_id: Mapped[str | None] = mapped_column(String(EMPLOYEE_ID_LEN))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    content_hash: Mapped[str] = mapped_column(String(HASH_LEN))


class SnapshotProblem(Base):
    """A quarantined source record: why it was not synced (never treated as a leaver)."""

    __tablename__ = "snapshot_problems"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"))
    row: Mapped[int | None]
    field: Mapped[str | None] = mapped_column(String(NAME_LEN))
    value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    employee_id: Mapped[str | None] = mapped_column(String(EMPLOYEE_ID_LEN))

    __table_args__ = (Index(None, "snapshot_id"),)


class IdentityLinkRow(Base):
    """HR employee id ↔ the mailbox the engine manages for them (see domain.IdentityLink)."""

    __tablename__ = "identity_links"

    employee_id: Mapped[str] = mapped_column(String(EMPLOYEE_ID_LEN), primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_LEN), unique=True)
    first_seen: Mapped[datetime]
    disabled_since: Mapped[date | None] = mapped_column(Date)
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]


class PlanRow(Base):
    """A saved plan: what proves it is the reviewed one, and where its apply stands (its
    document is in :class:`PlanDocument`)."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    checksum: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    config_fingerprint: Mapped[str | None] = mapped_column(String(HASH_LEN))
    state_fingerprint: Mapped[str | None] = mapped_column(String(HASH_LEN))
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    block_reasons: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(SHORT_LEN))


class PlanDocument(Base):
    """A saved plan's document (the plan file's text), apart from its row: on SQLite an
    UPDATE rewrites the whole row, so a status change would write the document again.
    ``sha256``: of the document's UTF-8 text, i.e. of the plan file's bytes (None for plans
    saved before migration 0007)."""

    __tablename__ = "plan_documents"

    plan_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True
    )
    document: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(HASH_LEN), index=True)


class PlanApproval(Base):
    """An approver's decision on a saved plan (issue 12); also written to the audit log."""

    __tablename__ = "plan_approvals"
    __table_args__ = (Index(None, "content_key"), Index(None, "plan_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"))
    checksum: Mapped[str] = mapped_column(String(HASH_LEN))
    content_key: Mapped[str] = mapped_column(String(HASH_LEN))
    decision: Mapped[str] = mapped_column(String(SHORT_LEN))
    approver: Mapped[str] = mapped_column(String(NAME_LEN))
    comment: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


class PlanAction(Base):
    """One action of a saved plan and its checkpointed progress."""

    __tablename__ = "plan_actions"

    plan_id: Mapped[int] = mapped_column(
        ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_key: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(SHORT_LEN))
    target: Mapped[str] = mapped_column(String(1024))
    employee_id: Mapped[str | None] = mapped_column(String(EMPLOYEE_ID_LEN))
    depends_on: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(SHORT_LEN))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("plan_id", "action_key"),
        Index(None, "plan_id", "status"),
    )


class AuditEntryRow(Base):
    """One row per action outcome and per API attempt: what happened, to whom, why."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    actor: Mapped[str | None] = mapped_column(String(NAME_LEN))
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    action_key: Mapped[str | None] = mapped_column(String(1024))
    kind: Mapped[str | None] = mapped_column(String(SHORT_LEN))
    target: Mapped[str | None] = mapped_column(String(1024))
    employee_id: Mapped[str | None] = mapped_column(String(EMPLOYEE_ID_LEN))
    email: Mapped[str | None] = mapped_column(String(EMAIL_LEN))
    diffs: Mapped[dict[str, Any] | None]
    result: Mapped[str] = mapped_column(String(SHORT_LEN))
    errcode: Mapped[str | None] = mapped_column(String(SHORT_LEN))
    errmsg: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int | None]
    attempts: Mapped[int | None]
    duration_ms: Mapped[int | None]
    call: Mapped[str | None] = mapped_column(String(NAME_LEN))

    __table_args__ = (
        Index(None, "run_id"),
        Index(None, "employee_id"),
        Index(None, "email"),
        Index(None, "at"),
    )


class HookEventRow(Base):
    """An HR push, stored durably before it is answered 202, then worked off."""

    __tablename__ = "hook_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    received_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(SHORT_LEN))
    employee_id: Mapped[str | None] = mapped_column(String(EMPLOYEE_ID_LEN))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(SHORT_LEN))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))

    __table_args__ = (Index(None, "status", "next_attempt_at"),)


class RunLockRow(Base):
    """The run lock: a row exists while a run holds the named lock."""

    __tablename__ = "run_lock"

    name: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str] = mapped_column(String(NAME_LEN))
    command: Mapped[str] = mapped_column(Text)
    acquired_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class WatchState(Base):
    """Small restart-safe cursors, e.g. the last mail-watch version seen."""

    __tablename__ = "watch_state"

    name: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


class UsedSignature(Base):
    """A signed request already honoured: a hook's signature or an SSO portal link's.

    The key is a digest of the signed material, so a captured request resent with new unsigned
    headers is still recognised. A row is only needed while the signature could still pass the
    timestamp check (``expires_at``); later rows are purged. Kept in the staging database, not
    in memory, because several ``serve`` processes share it and a restart must not reopen them.
    """

    __tablename__ = "used_signatures"

    digest: Mapped[str] = mapped_column(String(HASH_LEN + SHORT_LEN), primary_key=True)
    used_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class MailGroupRow(Base):
    """A mail group the engine created and owns (:mod:`syncengine.groups`), as it last wrote
    it: no Exmail API lists groups and Gen 1 cannot read one, so this is the engine's view of
    its own groups. ``group_key`` is stable (``dept:<HR id>``); the address never changes."""

    __tablename__ = "mail_groups"

    address: Mapped[str] = mapped_column(String(EMAIL_LEN), primary_key=True)
    group_key: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    members: Mapped[list[Any]]
    posting: Mapped[int] = mapped_column(Integer, default=0)
    allow_list: Mapped[list[Any]]
    retiring_since: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime]


class WorkerLease(Base):
    """A lease of the work of this staging database (a tenant) among ``serve`` processes.

    ``run``: whoever holds it (unexpired) is the one worker working off hook events or running
    a sync; its heartbeat pushes ``expires_at`` on, so a worker that died is detected when the
    lease expires and another takes it over (and resumes the interrupted apply).
    ``slot:<time>``: a scheduled run, claimed once by the first worker (never expires)."""

    __tablename__ = "worker_leases"

    name: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    holder: Mapped[str] = mapped_column(String(NAME_LEN))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]
