"""Objects in the JetStream object stores: which each contact's events named, and which an
erasure still has to delete.

Revision ID: 0006_object_erasure
Revises: 0005_data_keys
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_object_erasure"
down_revision: str | None = "0005_data_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "contact_objects",
        sa.Column("contact_id", sa.String(255), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("object_name", sa.String(1024), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "bucket", "object_name", name="pk_contact_objects"),
    )
    op.create_index("ix_contact_objects_object", "contact_objects", ["bucket", "object_name"])
    op.create_table(
        "object_erasures",
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("object_name", sa.String(1024), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("not_before", UTC, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "object_name", name="pk_object_erasures"),
    )
    op.create_index("ix_object_erasures_created_at", "object_erasures", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_object_erasures_created_at", table_name="object_erasures")
    op.drop_table("object_erasures")
    op.drop_index("ix_contact_objects_object", table_name="contact_objects")
    op.drop_table("contact_objects")
