"""The case store: customers, identities, cases, contacts, messages, processed events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
    )
    op.create_index("ix_customers_tenant", "customers", ["tenant"])

    op.create_table(
        "customer_identities",
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"],
            name="fk_customer_identities_customer_id_customers",
        ),
        sa.PrimaryKeyConstraint("tenant", "kind", "value", name="pk_customer_identities"),
    )
    op.create_index(
        "ix_customer_identities_customer_id", "customer_identities", ["customer_id"]
    )

    op.create_table(
        "cases",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("customer_id", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("assigned_agent_id", sa.String(255), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_cases_customer_id_customers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
    )
    op.create_index("ix_cases_tenant_created", "cases", ["tenant", "created_at", "id"])
    op.create_index(
        "ix_cases_tenant_status_created", "cases", ["tenant", "status", "created_at"]
    )
    op.create_index("ix_cases_customer_status", "cases", ["customer_id", "status"])

    op.create_table(
        "contacts",
        sa.Column("contact_id", sa.String(255), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("assigned_at", UTC, nullable=True),
        sa.Column("ended_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_contacts_case_id_cases"),
        sa.PrimaryKeyConstraint("contact_id", name="pk_contacts"),
    )
    op.create_index("ix_contacts_tenant", "contacts", ["tenant"])
    op.create_index("ix_contacts_case_created", "contacts", ["case_id", "created_at"])

    op.create_table(
        "messages",
        sa.Column("message_id", sa.String(510), nullable=False),
        sa.Column("contact_id", sa.String(255), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("author", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("sent_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.contact_id"], name="fk_messages_contact_id_contacts"
        ),
        sa.PrimaryKeyConstraint("message_id", name="pk_messages"),
    )
    op.create_index("ix_messages_tenant", "messages", ["tenant"])
    op.create_index(
        "ix_messages_contact_sent", "messages", ["contact_id", "sent_at", "message_id"]
    )

    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("processed_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("event_id", "consumer", name="pk_processed_events"),
    )


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_index("ix_messages_contact_sent", table_name="messages")
    op.drop_index("ix_messages_tenant", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_contacts_case_created", table_name="contacts")
    op.drop_index("ix_contacts_tenant", table_name="contacts")
    op.drop_table("contacts")
    op.drop_index("ix_cases_customer_status", table_name="cases")
    op.drop_index("ix_cases_tenant_status_created", table_name="cases")
    op.drop_index("ix_cases_tenant_created", table_name="cases")
    op.drop_table("cases")
    op.drop_index("ix_customer_identities_customer_id", table_name="customer_identities")
    op.drop_table("customer_identities")
    op.drop_index("ix_customers_tenant", table_name="customers")
    op.drop_table("customers")
