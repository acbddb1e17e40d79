"""Plan approvals: who approved or rejected which plan, when, with what comment (issue 12).

Revision ID: 0002_review
Revises: 0001
Create Date: 2026-11-30

``content_key`` identifies what a plan does (its actions and the fingerprints of the state and
config it was made against, without its time), so an approval also covers the same plan made
again by the nightly run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_review"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "plan_approvals",
        sa.Column("id", _id(), nullable=False),
        sa.Column("plan_id", _id(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("content_key", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=32), nullable=False),
        sa.Column("approver", sa.String(length=255), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_plan_approvals_plan_id_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_approvals")),
    )
    op.create_index(
        op.f("ix_plan_approvals_content_key"), "plan_approvals", ["content_key"], unique=False
    )
    op.create_index(op.f("ix_plan_approvals_plan_id"), "plan_approvals", ["plan_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_plan_approvals_plan_id"), table_name="plan_approvals")
    op.drop_index(op.f("ix_plan_approvals_content_key"), table_name="plan_approvals")
    op.drop_table("plan_approvals")
