"""Used signatures: hook requests and SSO portal links are honoured once (issue 11).

Revision ID: 0004_serve
Revises: 0003_source_time
Create Date: 2026-11-30

A digest of each honoured signed request (a hook's signature, a portal link's ``sig``), kept
until the signature's timestamp would be refused anyway. Use ``op.*`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_serve"
down_revision: str | None = "0003_source_time"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "used_signatures",
        sa.Column("digest", sa.String(length=96), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_used_signatures")),
    )
    op.create_index(op.f("ix_used_signatures_expires_at"), "used_signatures", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_used_signatures_expires_at"), table_name="used_signatures")
    op.drop_table("used_signatures")
