"""The case store's SQLite engine under concurrent writers in one process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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


async def _events(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return await _count(session)


async def _count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(orm.ProcessedEvent)) or 0)


async def _write(sessions: async_sessionmaker[AsyncSession], event_id: str) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    async with sessions.begin() as session:
        session.add(orm.ProcessedEvent(event_id=event_id, consumer="case", processed_at=at))


async def test_a_read_session_sees_one_snapshot_while_a_writer_commits(database_url: str) -> None:
    """A view reads a case in several statements (the case, then its contacts, messages and
    timers); a batch committed between them must not show half of itself (a contact assigned
    on a case that is not). On SQLite and on PostgreSQL, a read session is one snapshot."""
    await migrate(database_url)
    engine = database.create_engine(database_url)
    sessions = database.sessionmaker(engine)
    try:
        await _write(sessions, "e-1")
        async with sessions() as reading:
            assert await _count(reading) == 1
            await _write(sessions, "e-2")
            assert await _count(reading) == 1  # still the snapshot it began with
        assert await _events(sessions) == 2
    finally:
        await engine.dispose()


async def test_a_writer_that_reads_first_waits_for_another_process_instead_of_failing(
    tmp_path: Path,
) -> None:
    """Two case processes on one SQLite file: a write transaction reads before it writes (the
    batch's preload), and another process commits meanwhile. Taking the write lock at BEGIN makes
    the other one wait; a read snapshot upgraded to a writer would fail with "database is locked"
    at once, whatever the busy timeout."""
    url = f"sqlite:///{tmp_path}/case.db"
    await migrate(url)
    engines = [database.create_engine(url), database.create_engine(url)]
    first, second = (database.sessionmaker(e) for e in engines)
    reading = asyncio.Event()
    at = datetime(2026, 1, 1, tzinfo=UTC)

    async def reads_then_writes() -> None:
        async with first.begin() as session:
            await _count(session)
            reading.set()
            await asyncio.sleep(0.3)
            session.add(orm.ProcessedEvent(event_id="e-1", consumer="case", processed_at=at))

    async def other_process() -> None:
        await reading.wait()
        await _write(second, "e-2")

    try:
        await asyncio.gather(reads_then_writes(), other_process())
        assert await _events(first) == 2
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_sqlite_statement_is_one_hop_to_the_connection_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every hop to aiosqlite's thread waits for that thread to be scheduled (on a busy machine,
    longer than the statement itself): a statement with its rows costs one hop, not one each for
    its cursor, its execution, its rows and its cursor's close. Results, row counts, executemany
    and the driver's errors are those of the plain driver."""
    url = f"sqlite:///{tmp_path}/case.db"
    await migrate(url)
    engine = database.create_engine(url)
    hops = [0]
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops[0] += 1
        return await real(self, fn, *args, **kwargs)

    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"event_id": f"e-{i}", "consumer": "case", "processed_at": at} for i in range(5)]
    try:
        async with engine.begin() as conn:
            monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
            await conn.execute(insert(orm.ProcessedEvent), rows)  # executemany
            assert hops[0] == 1
            result = await conn.execute(
                select(orm.ProcessedEvent.event_id).order_by(orm.ProcessedEvent.event_id)
            )
            assert hops[0] == 2
            assert list(result.scalars()) == [f"e-{i}" for i in range(5)]
            updated = await conn.execute(
                update(orm.ProcessedEvent)
                .where(orm.ProcessedEvent.event_id.in_(["e-1", "e-2"]))
                .values(consumer="other")
            )
            assert updated.rowcount == 2
            assert hops[0] == 3
            returned = await conn.execute(
                sqlite_insert(orm.ProcessedEvent)
                .on_conflict_do_nothing(index_elements=["event_id", "consumer"])
                .returning(orm.ProcessedEvent.event_id),
                [rows[0], {**rows[0], "event_id": "e-9"}],
            )
            assert list(returned.scalars()) == ["e-9"]
            with pytest.raises(IntegrityError):
                await conn.execute(insert(orm.ProcessedEvent), [rows[0]])
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(orm.ProcessedEvent)) == 6
    finally:
        monkeypatch.undo()
        await engine.dispose()


async def test_work_riding_with_the_next_statement_costs_no_hop_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rider (a batch's claims) runs in SQLite's thread with the transaction's next statement,
    before it, in that statement's hop; or with the commit; or, settled before any other
    statement, in a hop of its own. A rolled back transaction drops its riders."""
    url = f"sqlite:///{tmp_path}/case.db"
    await migrate(url)
    engine = database.create_engine(url)
    sessions = database.sessionmaker(engine)
    hops = [0]
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops[0] += 1
        return await real(self, fn, *args, **kwargs)

    def inserting(event_id: str) -> Any:
        def work(connection: Any) -> tuple[int, int]:
            connection.execute(
                "INSERT INTO processed_events (event_id, consumer, processed_at)"
                " VALUES (?, 'case', '2026-01-01 00:00:00.000000')",
                (event_id,),
            )
            return connection.execute("SELECT count(*) FROM processed_events").fetchone()[0], 2

        return work

    def count() -> Any:
        return select(func.count()).select_from(orm.ProcessedEvent)

    try:
        async with sessions.begin() as session:
            await session.connection()
            monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
            rider = await database.ride(session, inserting("e-1"))
            assert rider is not None and not rider.done and hops[0] == 0
            assert await session.scalar(count()) == 1  # the statement saw the rider's row
            assert hops[0] == 1 and rider.done and rider.value == 1
            settled = await database.ride(session, inserting("e-2"))
            assert settled is not None
            assert await database.settle(session, settled) == 2 and hops[0] == 2
            at_commit = await database.ride(session, inserting("e-3"))
        assert at_commit is not None and at_commit.done and hops[0] == 3
        with pytest.raises(RuntimeError):
            async with sessions.begin() as session:
                dropped = await database.ride(session, inserting("e-4"))
                raise RuntimeError("rolled back")
        assert dropped is not None and not dropped.done
        async with sessions() as session:
            assert await session.scalar(count()) == 3
    finally:
        monkeypatch.undo()
        await engine.dispose()


async def test_a_sqlite_commit_is_on_disk_before_it_returns(tmp_path: Path) -> None:
    """The consumer acknowledges a batch to JetStream once its transaction commits: in WAL mode
    only synchronous=FULL syncs the log at each commit (NORMAL leaves the last commits to a power
    cut or a kernel crash, after JetStream has let go of their events)."""
    url = f"sqlite:///{tmp_path}/case.db"
    await migrate(url)
    engine = database.create_engine(url)
    try:
        async with engine.connect() as connection:
            mode = await connection.exec_driver_sql("PRAGMA journal_mode")
            assert mode.scalar() == "wal"
            synchronous = await connection.exec_driver_sql("PRAGMA synchronous")
            assert synchronous.scalar() == 2  # FULL
    finally:
        await engine.dispose()
