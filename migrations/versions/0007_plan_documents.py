"""A plan's document in a table of its own (issue 14).

Revision ID: 0007_plan_documents
Revises: 0006_groups
Create Date: 2026-12-01

The plan file's text (14 MB for 10,000 creates) moves from ``plans.document`` to
``plan_documents`` (one row per plan, deleted with it). On SQLite an UPDATE rewrites the whole
row, overflow pages included: every change of a plan's status (twice per apply) wrote the
document again, and reading a plan's status read it. The plan row is now small; the document
is written once, when the plan is saved, and read only by what needs it. ``sha256`` is the
hash of the document's UTF-8 text (the plan file's bytes): ``apply PLANFILE`` finds the stored
plan a file is the copy of without decoding it (plans saved before this revision have none).
Use ``op.*`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_plan_documents"
down_revision: str | None = "0006_groups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plan_documents",
        sa.Column("plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_plan_documents_plan_id_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_plan_documents")),
    )
    op.create_index(op.f("ix_plan_documents_sha256"), "plan_documents", ["sha256"])
    op.execute("INSERT INTO plan_documents (plan_id, document) SELECT id, document FROM plans")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("document")


def downgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("document", sa.Text(), nullable=True))
    op.execute(
        "UPDATE plans SET document = (SELECT d.document FROM plan_documents d "
        "WHERE d.plan_id = plans.id)"
    )
    op.execute("UPDATE plans SET document = '' WHERE document IS NULL")
    with op.batch_alter_table("plans") as batch:
        batch.alter_column("document", existing_type=sa.Text(), nullable=False)
    op.drop_index(op.f("ix_plan_documents_sha256"), table_name="plan_documents")
    op.drop_table("plan_documents")
