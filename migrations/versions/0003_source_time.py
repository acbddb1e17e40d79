"""Snapshots record when their HR data was exported (``source_time``).

Revision ID: 0003_source_time
Revises: 0002_review
Create Date: 2026-11-30

A hook-originated fact (a hire, a termination) is weighed against the HR export by time: an
export made before the fact cannot overrule it. ``source_time`` is the export file's
modification time, or the read time of a live source (SQL, LDAP, HTTP); NULL for snapshots
made before this revision (their ``created_at`` is used).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_source_time"
down_revision: str | None = "0002_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("source_time", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("source_time")
