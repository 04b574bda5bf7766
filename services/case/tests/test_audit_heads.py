"""A batch extends many audit chains from heads read at once, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from switchboard.case import audit
from switchboard.case.adapters import database
from switchboard.case.adapters.orm import AuditEntry
from switchboard.case.migrate import migrate
from switchboard.core.hash_chain import GENESIS, check_chain


async def test_heads_read_at_once_extend_each_chain_exactly(database_url: str) -> None:
    """Each chain's head is its last entry, whatever its length, a chain of another kind with
    the same id is not it, and an entity without entries starts from the genesis hash; chains
    extended from those heads verify."""
    await migrate(database_url)
    engine = database.create_engine(database_url)
    sessions = database.sessionmaker(engine)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    lengths = {"case-a": 3, "case-b": 1}
    try:
        async with sessions.begin() as session:
            for entity_id, n in lengths.items():
                for i in range(n):
                    await audit.append(
                        session, "t", audit.CASE, entity_id, "system", "noted", {"i": i}, at
                    )
            # Longer, and of another kind: not the head of case "case-b".
            for i in range(5):
                await audit.append(
                    session, "t", audit.CUSTOMER, "case-b", "system", "noted", {"i": i}, at
                )
        async with sessions.begin() as session:
            last = {
                (e.entity_id, e.seq): e.hash
                for e in await session.scalars(
                    select(AuditEntry).where(AuditEntry.entity == "case")
                )
            }
            await audit.preload_heads(session, audit.CASE, {"case-a", "case-b", "case-c"})
            heads = session.info["audit_heads"]
            assert heads[(audit.CASE, "case-a")] == (3, last[("case-a", 3)])
            assert heads[(audit.CASE, "case-b")] == (1, last[("case-b", 1)])
            assert heads[(audit.CASE, "case-c")] == (0, GENESIS)
            for entity_id in ("case-a", "case-b", "case-c"):
                await audit.append(
                    session, "t", audit.CASE, entity_id, "system", "noted", {"i": "next"}, at
                )
        async with sessions() as session:
            for entity_id, n in {**lengths, "case-c": 0}.items():
                chain = list(
                    await session.scalars(
                        select(AuditEntry)
                        .where(AuditEntry.entity == audit.CASE, AuditEntry.entity_id == entity_id)
                        .order_by(AuditEntry.seq)
                    )
                )
                assert len(chain) == n + 1
                assert check_chain(chain) is None
    finally:
        await engine.dispose()
