"""The mail outbox: escalation mails written with the change that calls for them, sent after the
commit.

Revision ID: 0004_mail_outbox
Revises: 0003_kb_reports
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_mail_outbox"
down_revision: str | None = "0003_kb_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mail_outbox",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("not_before", UTC, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("sent_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_mail_outbox"),
    )
    op.create_index("ix_mail_outbox_sent_at", "mail_outbox", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_mail_outbox_sent_at", table_name="mail_outbox")
    op.drop_table("mail_outbox")
