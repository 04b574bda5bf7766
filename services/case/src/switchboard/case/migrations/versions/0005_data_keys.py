"""Personal data at rest: the data keys, and identities kept as a blind index beside the sealed
value.

Existing rows are sealed by the service itself when it starts (keyring.backfill: it needs the
master key, which a migration does not have): identities get their blind index and sealed value,
names, subjects, notes and messages are sealed; audit entries keep what their hashes cover.

Revision ID: 0005_data_keys
Revises: 0004_mail_outbox
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_data_keys"
down_revision: str | None = "0004_mail_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("customer_id", sa.String(32), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("wrapped_by", sa.String(32), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("erased_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_data_keys"),
        sa.UniqueConstraint("id", name="uq_data_keys_id"),
    )
    op.create_index("uq_data_keys_owner", "data_keys", ["tenant", "customer_id"], unique=True)
    op.add_column("customer_identities", sa.Column("sealed", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("customer_identities", "sealed")
    op.drop_index("uq_data_keys_owner", table_name="data_keys")
    op.drop_table("data_keys")
