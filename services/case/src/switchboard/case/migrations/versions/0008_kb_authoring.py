"""Knowledge-base authoring: a category per version, the reviewer's comment when a version is
sent back, the case an article was drafted from, and the files attached to articles.

Revision ID: 0008_kb_authoring
Revises: 0007_qa_forms_disputes
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_kb_authoring"
down_revision: str | None = "0007_qa_forms_disputes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("kb_article_versions") as batch:
        batch.add_column(sa.Column("category", sa.String(64), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("review_comment", sa.Text(), nullable=False, server_default="")
        )
    with op.batch_alter_table("kb_articles") as batch:
        batch.add_column(
            sa.Column("source_case_id", sa.String(32), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("source_case_reference", sa.String(16), nullable=False, server_default="")
        )
    op.create_table(
        "kb_attachments",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("article_id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bucket", sa.String(64), nullable=False),
        sa.Column("object_name", sa.String(255), nullable=False),
        sa.Column("added_by", sa.String(255), nullable=False),
        sa.Column("added_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kb_attachments"),
        sa.ForeignKeyConstraint(
            ["article_id"], ["kb_articles.id"], name="fk_kb_attachments_article_id_kb_articles"
        ),
    )
    op.create_index("ix_kb_attachments_article", "kb_attachments", ["article_id"])


def downgrade() -> None:
    op.drop_index("ix_kb_attachments_article", table_name="kb_attachments")
    op.drop_table("kb_attachments")
    with op.batch_alter_table("kb_articles") as batch:
        batch.drop_column("source_case_reference")
        batch.drop_column("source_case_id")
    with op.batch_alter_table("kb_article_versions") as batch:
        batch.drop_column("review_comment")
        batch.drop_column("category")
