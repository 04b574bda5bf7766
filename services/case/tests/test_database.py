"""The case store's SQLite engine under concurrent writers in one process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from switchboard.case.adapters import database, orm
from switchboard.case.migrate import migrate


async def test_writers_wait_their_turn_instead_of_failing_with_database_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write transaction that holds SQLite's lock longer than the busy timeout (a big batch
    under load) does not make a second writer (the outbox relay) fail: it waits its turn."""
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 100)
    url = f"sqlite:///{tmp_path}/case.db"
    await migrate(url)
    engine = database.create_engine(url)
    sessions = database.sessionmaker(engine)
    holding = asyncio.Event()
    at = datetime(2026, 1, 1, tzinfo=UTC)

    async def long_batch() -> None:
        async with sessions.begin() as session:
            session.add(orm.ProcessedEvent(event_id="e-1", consumer="case", processed_at=at))
            await session.flush()  # SQLite's write lock is taken here
            holding.set()
            await asyncio.sleep(0.5)  # five times the busy timeout

    async def second_writer() -> None:
        await holding.wait()
        async with sessions.begin() as session:
            session.add(orm.ProcessedEvent(event_id="e-2", consumer="case", processed_at=at))

    try:
        await asyncio.gather(long_batch(), second_writer())
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(orm.ProcessedEvent)) == 2
    finally:
        await engine.dispose()
