"""Case lifecycle: references, types, priorities, notes, the audit trail, SLA timers, scheduled
runs, customer merges, the event outbox, and the contact facts the KPIs are computed from.

Revision ID: 0002_case_lifecycle
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_case_lifecycle"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)
# The same alphabet as switchboard.case.domain.reference (no 0/O, 1/I look-alikes).
_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def _backfill_references() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, tenant FROM cases")).fetchall()
    taken: set[tuple[str, str]] = set()
    for case_id, tenant in rows:
        while True:
            ref = "C-" + "".join(secrets.choice(_ALPHABET) for _ in range(6))
            if (tenant, ref) not in taken:
                break
        taken.add((tenant, ref))
        conn.execute(
            sa.text("UPDATE cases SET reference = :ref WHERE id = :id"), {"ref": ref, "id": case_id}
        )


def upgrade() -> None:
    # Plain ADD COLUMN (native on SQLite too) rather than batch mode: rebuilding `cases` on SQLite
    # would drop a table that contacts reference, which foreign keys forbid inside a transaction.
    op.add_column("customers", sa.Column("merged_into", sa.String(32), nullable=True))

    op.add_column("cases", sa.Column("reference", sa.String(16), server_default="", nullable=False))
    op.add_column("cases", sa.Column("case_type", sa.Integer(), server_default="1", nullable=False))
    op.add_column("cases", sa.Column("priority", sa.Integer(), server_default="2", nullable=False))
    op.add_column("cases", sa.Column("queue", sa.String(255), server_default="", nullable=False))
    op.add_column("cases", sa.Column("template", sa.String(127), server_default="", nullable=False))
    op.add_column("cases", sa.Column("status_changed_at", UTC, nullable=True))
    op.add_column("cases", sa.Column("first_response_at", UTC, nullable=True))
    op.add_column("cases", sa.Column("resolved_at", UTC, nullable=True))
    op.add_column("cases", sa.Column("closed_at", UTC, nullable=True))
    op.add_column(
        "cases", sa.Column("reopened_count", sa.Integer(), server_default="0", nullable=False)
    )
    _backfill_references()
    op.create_index("uq_cases_tenant_reference", "cases", ["tenant", "reference"], unique=True)

    for column in (
        sa.Column("customer_id", sa.String(32), nullable=True),
        sa.Column("conversation_id", sa.String(255), server_default="", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("queued_at", UTC, nullable=True),
        sa.Column("offered_at", UTC, nullable=True),
        sa.Column("abandoned_at", UTC, nullable=True),
        sa.Column("end_reason", sa.Integer(), server_default="0", nullable=False),
        sa.Column("wrap_up_code", sa.String(255), server_default="", nullable=False),
        sa.Column("wait_ms", sa.BigInteger(), nullable=True),
        sa.Column("talk_ms", sa.BigInteger(), nullable=True),
        sa.Column("hold_ms", sa.BigInteger(), nullable=True),
        sa.Column("wrap_up_ms", sa.BigInteger(), nullable=True),
        sa.Column("first_agent_response_at", UTC, nullable=True),
        sa.Column("transfers", sa.Integer(), server_default="0", nullable=False),
    ):
        op.add_column("contacts", column)
    op.create_index("ix_contacts_customer_id", "contacts", ["customer_id"])
    op.execute(
        "UPDATE contacts SET customer_id = "
        "(SELECT cases.customer_id FROM cases WHERE cases.id = contacts.case_id)"
    )

    op.create_table(
        "contact_holds",
        sa.Column("contact_id", sa.String(255), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("agent_id", sa.String(255), nullable=False),
        sa.Column("ended_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.contact_id"], name="fk_contact_holds_contact_id_contacts"
        ),
        sa.PrimaryKeyConstraint("contact_id", "started_at", name="pk_contact_holds"),
    )

    op.create_table(
        "case_notes",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_case_notes_case_id_cases"),
        sa.PrimaryKeyConstraint("id", name="pk_case_notes"),
    )
    op.create_index("ix_case_notes_case_created", "case_notes", ["case_id", "created_at"])

    op.create_table(
        "audit_entries",
        sa.Column("entity", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("entity", "entity_id", "seq", name="pk_audit_entries"),
    )
    op.create_index("ix_audit_entries_tenant_at", "audit_entries", ["tenant", "at"])

    op.create_table(
        "sla_timers",
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("policy", sa.String(127), nullable=False),
        sa.Column("target_s", sa.Integer(), nullable=False),
        sa.Column("elapsed_s", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("running_since", UTC, nullable=True),
        sa.Column("completed_at", UTC, nullable=True),
        sa.Column("breached_at", UTC, nullable=True),
        sa.Column("fired", sa.JSON(), nullable=False),
        sa.Column("escalated_threshold", sa.Integer(), nullable=True),
        sa.Column("next_repeat_at", UTC, nullable=True),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_sla_timers_case_id_cases"),
        sa.PrimaryKeyConstraint("case_id", "metric", name="pk_sla_timers"),
    )
    op.create_index("ix_sla_timers_state", "sla_timers", ["state"])

    op.create_table(
        "scheduled_runs",
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("task", sa.String(127), nullable=False),
        sa.Column("due_at", UTC, nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "task", "due_at", name="pk_scheduled_runs"),
    )

    op.create_table(
        "outbox",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("type_name", sa.String(127), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_created_at", "outbox", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_created_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("scheduled_runs")
    op.drop_index("ix_sla_timers_state", table_name="sla_timers")
    op.drop_table("sla_timers")
    op.drop_index("ix_audit_entries_tenant_at", table_name="audit_entries")
    op.drop_table("audit_entries")
    op.drop_index("ix_case_notes_case_created", table_name="case_notes")
    op.drop_table("case_notes")
    op.drop_table("contact_holds")
    op.drop_index("ix_contacts_customer_id", table_name="contacts")
    for column in (
        "transfers",
        "first_agent_response_at",
        "wrap_up_ms",
        "hold_ms",
        "talk_ms",
        "wait_ms",
        "wrap_up_code",
        "end_reason",
        "abandoned_at",
        "offered_at",
        "queued_at",
        "priority",
        "conversation_id",
        "customer_id",
    ):
        op.drop_column("contacts", column)
    op.drop_index("uq_cases_tenant_reference", table_name="cases")
    for column in (
        "reopened_count",
        "closed_at",
        "resolved_at",
        "first_response_at",
        "status_changed_at",
        "template",
        "queue",
        "priority",
        "case_type",
        "reference",
    ):
        op.drop_column("cases", column)
    op.drop_column("customers", "merged_into")
