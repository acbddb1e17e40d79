"""Worker leases: several ``serve`` processes share a tenant's work (issue 15).

Revision ID: 0005_leases
Revises: 0004_serve
Create Date: 2026-11-30

One row per lease: ``run`` (the tenant's work: only its holder works off hook events or runs
a sync, renewed by a heartbeat; an expired one is taken over) and ``slot:<time>`` (a scheduled
run claimed once). Use ``op.*`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_leases"
down_revision: str | None = "0004_serve"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_leases",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_leases")),
    )


def downgrade() -> None:
    op.drop_table("worker_leases")
