"""Agents' state changes as the router publishes them (AgentStateChanged), for the agent-states
report.

Revision ID: 0010_agent_state_changes
Revises: 0009_portal_codes_deflection
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_agent_state_changes"
down_revision: str | None = "0009_portal_codes_deflection"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent_state_changes",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("agent_id", sa.String(255), nullable=False),
        sa.Column("presence", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("changed_by", sa.String(255), nullable=False),
        sa.Column("changed_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_agent_state_changes"),
    )
    op.create_index(
        "ix_agent_state_changes_tenant_at", "agent_state_changes", ["tenant", "changed_at"]
    )
    op.create_index(
        "ix_agent_state_changes_tenant_agent_at",
        "agent_state_changes",
        ["tenant", "agent_id", "changed_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_agent_state_changes_tenant_agent_at", "agent_state_changes")
    op.drop_index("ix_agent_state_changes_tenant_at", "agent_state_changes")
    op.drop_table("agent_state_changes")
