"""The initial staging schema: everything issues 3 to 6 keep.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Runs, HR snapshots (people, departments, quarantined rows), identity links, plans and their
checkpointed actions, the audit log, received hook events, the run lock and small watch
cursors. Released migrations are never edited: change the schema with a new revision. Use
``op.*`` only (never the models), and ``op.batch_alter_table`` for changes SQLite cannot ALTER.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    """BIGINT ids; INTEGER on SQLite, where only INTEGER PRIMARY KEY auto-increments."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> sa.DateTime:
    """Timestamps: timestamptz on PostgreSQL; on SQLite the code stores UTC."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", _id(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("config_fingerprint", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_started_at"), "runs", ["started_at"])

    op.create_table(
        "snapshots",
        sa.Column("id", _id(), nullable=False),
        sa.Column("run_id", _id(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_snapshots_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    op.create_index(op.f("ix_snapshots_is_current"), "snapshots", ["is_current"])

    op.create_table(
        "snapshot_people",
        sa.Column("snapshot_id", _id(), nullable=False),
        sa.Column("employee_id", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_snapshot_people_snapshot_id_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "employee_id", name=op.f("pk_snapshot_people")),
    )

    op.create_table(
        "snapshot_departments",
        sa.Column("snapshot_id", _id(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("hr_id", sa.String(length=128), nullable=True),
        sa.Column("parent_hr_id", sa.String(length=128), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_snapshot_departments_snapshot_id_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "path", name=op.f("pk_snapshot_departments")),
    )

    op.create_table(
        "snapshot_problems",
        sa.Column("id", _id(), nullable=False),
        sa.Column("snapshot_id", _id(), nullable=False),
        sa.Column("row", sa.Integer(), nullable=True),
        sa.Column("field", sa.String(length=255), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("employee_id", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_snapshot_problems_snapshot_id_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot_problems")),
    )
    op.create_index(op.f("ix_snapshot_problems_snapshot_id"), "snapshot_problems", ["snapshot_id"])

    op.create_table(
        "identity_links",
        sa.Column("employee_id", sa.String(length=128), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("first_seen", _ts(), nullable=False),
        sa.Column("disabled_since", sa.Date(), nullable=True),
        sa.Column("generated", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("employee_id", name=op.f("pk_identity_links")),
        sa.UniqueConstraint("email", name=op.f("uq_identity_links_email")),
    )

    op.create_table(
        "plans",
        sa.Column("id", _id(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("run_id", _id(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("config_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("state_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.Column("block_reasons", sa.JSON(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_plans_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("checksum", name=op.f("uq_plans_checksum")),
    )

    op.create_table(
        "plan_actions",
        sa.Column("plan_id", _id(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("action_key", sa.String(length=1024), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("employee_id", sa.String(length=128), nullable=True),
        sa.Column("depends_on", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_plan_actions_plan_id_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plan_id", "seq", name=op.f("pk_plan_actions")),
        sa.UniqueConstraint(
            "plan_id", "action_key", name=op.f("uq_plan_actions_plan_id_action_key")
        ),
    )
    op.create_index(op.f("ix_plan_actions_plan_id_status"), "plan_actions", ["plan_id", "status"])

    op.create_table(
        "audit_log",
        sa.Column("id", _id(), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("run_id", _id(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("plan_id", _id(), nullable=True),
        sa.Column("action_key", sa.String(length=1024), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("target", sa.String(length=1024), nullable=True),
        sa.Column("employee_id", sa.String(length=128), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("diffs", sa.JSON(), nullable=True),
        sa.Column("result", sa.String(length=32), nullable=False),
        sa.Column("errcode", sa.String(length=32), nullable=True),
        sa.Column("errmsg", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("call", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_audit_log_plan_id_plans"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_audit_log_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_email"), "audit_log", ["email"])
    op.create_index(op.f("ix_audit_log_employee_id"), "audit_log", ["employee_id"])
    op.create_index(op.f("ix_audit_log_run_id"), "audit_log", ["run_id"])

    op.create_table(
        "hook_events",
        sa.Column("id", _id(), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("employee_id", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", _ts(), nullable=True),
        sa.Column("applied_at", _ts(), nullable=True),
        sa.Column("run_id", _id(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_hook_events_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_events")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_hook_events_delivery_id")),
    )
    op.create_index(
        op.f("ix_hook_events_status_next_attempt_at"),
        "hook_events",
        ["status", "next_attempt_at"],
    )

    op.create_table(
        "run_lock",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("acquired_at", _ts(), nullable=False),
        sa.Column("heartbeat_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_run_lock")),
    )

    op.create_table(
        "watch_state",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_watch_state")),
    )


def downgrade() -> None:
    # Children before parents; indexes go with their tables.
    for table in (
        "watch_state",
        "run_lock",
        "hook_events",
        "audit_log",
        "plan_actions",
        "plans",
        "identity_links",
        "snapshot_problems",
        "snapshot_departments",
        "snapshot_people",
        "snapshots",
        "runs",
    ):
        op.drop_table(table)
