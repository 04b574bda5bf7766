"""Quality assurance: the tenants' versioned scoring forms, the form version an evaluation used,
and the dispute of an evaluation with its decision.

Revision ID: 0007_qa_forms_disputes
Revises: 0006_object_erasure
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_qa_forms_disputes"
down_revision: str | None = "0006_object_erasure"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "qa_forms",
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("form_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "form_id", "version", name="pk_qa_forms"),
    )
    with op.batch_alter_table("qa_evaluations") as batch:
        batch.add_column(
            sa.Column("form_version", sa.Integer(), nullable=False, server_default="1")
        )
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="scored")
        )
        batch.add_column(
            sa.Column("dispute_reason", sa.Text(), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("disputed_at", UTC, nullable=True))
        batch.add_column(
            sa.Column("decided_by", sa.String(255), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("decided_at", UTC, nullable=True))
        batch.add_column(
            sa.Column("decision_note", sa.Text(), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("original_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("original_fatal_errors", sa.Integer(), nullable=True))
    op.create_index(
        "ix_qa_evaluations_tenant_agent", "qa_evaluations", ["tenant", "agent_id", "scored_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_qa_evaluations_tenant_agent", table_name="qa_evaluations")
    with op.batch_alter_table("qa_evaluations") as batch:
        for column in (
            "original_fatal_errors", "original_score", "decision_note", "decided_at",
            "decided_by", "disputed_at", "dispute_reason", "status", "form_version",
        ):  # fmt: skip
            batch.drop_column(column)
    op.drop_table("qa_forms")
