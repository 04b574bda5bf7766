"""The customer portal: sign-in codes by case reference, and the drafts of new requests that were
shown suggested articles (for the deflection report).

Revision ID: 0009_portal_codes_deflection
Revises: 0008_kb_authoring
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_portal_codes_deflection"
down_revision: str | None = "0008_kb_authoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "portal_codes",
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("reference", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(32), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "reference", name="pk_portal_codes"),
    )
    op.create_table(
        "portal_suggestion_drafts",
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("draft_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(32), nullable=False),
        sa.Column("shown_at", UTC, nullable=False),
        sa.Column("opened", sa.Integer(), nullable=False),
        sa.Column("opened_at", UTC, nullable=True),
        sa.Column("submitted_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("tenant", "draft_id", name="pk_portal_suggestion_drafts"),
    )
    op.create_index(
        "ix_portal_suggestion_drafts_tenant_shown",
        "portal_suggestion_drafts",
        ["tenant", "shown_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_portal_suggestion_drafts_tenant_shown", "portal_suggestion_drafts")
    op.drop_table("portal_suggestion_drafts")
    op.drop_table("portal_codes")
