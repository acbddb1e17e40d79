"""Mail groups the engine owns (issue 15).

Revision ID: 0006_groups
Revises: 0005_leases
Create Date: 2026-11-30

One row per group the engine created: its stable key (``dept:<HR id>``), address, name, the
members and posting right (Gen 2 ``allow_type``, the allow list) it last wrote and, for a
retiring group, the day its grace period started. Use
``op.*`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_groups"
down_revision: str | None = "0005_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_groups",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("group_key", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("posting", sa.Integer(), nullable=False),
        sa.Column("allow_list", sa.JSON(), nullable=False),
        sa.Column("retiring_since", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_mail_groups")),
        sa.UniqueConstraint("group_key", name=op.f("uq_mail_groups_group_key")),
    )


def downgrade() -> None:
    op.drop_table("mail_groups")
