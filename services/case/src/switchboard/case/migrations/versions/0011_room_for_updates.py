"""Room on each page of cases and contacts for their rows' later versions (PostgreSQL).

A contact's row is updated as it goes through its life (queued, offered, assigned, answered,
ended), and its case's with it, mostly within minutes of being written. PostgreSQL writes each
update as a new version of the row; when the page has room for it and no indexed column
changed, the version stays on its page and no index is touched (a heap-only tuple update).
Pages filled to 70% leave that room; full pages make every update a new index entry in each of
the table's indexes. SQLite updates rows in place: nothing to do there.

Revision ID: 0011_room_for_updates
Revises: 0010_agent_state_changes
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011_room_for_updates"
down_revision: str | None = "0010_agent_state_changes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 70
TABLES = ("cases", "contacts")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            # Pages written from now on; a table's existing pages keep their fill until rewritten.
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
