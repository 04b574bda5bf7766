"""The case store's unit of work against the real database: commit then on_commit, a write
conflict tried again a bounded number of times, a refused value as InvalidArgument, no retry of
anything else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters.orm import ProcessedEvent
from switchboard.case.unit_of_work import Conflict, UnitOfWork
from switchboard.core.errors import InvalidArgument, NotFound

AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


class Refused(Exception):
    """What a driver raises for a value the database refuses (PostgreSQL: a NUL in text)."""

    sqlstate = "22021"


def claim(session: AsyncSession, event_id: str) -> None:
    session.add(ProcessedEvent(event_id=event_id, consumer="test", processed_at=AT))


async def claims(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return sorted(await session.scalars(select(ProcessedEvent.event_id)))


@pytest.fixture
def commits() -> list[int]:
    return []


@pytest.fixture
def uow(sessions: async_sessionmaker[AsyncSession], commits: list[int]) -> UnitOfWork:
    return UnitOfWork(sessions, lambda: commits.append(1), what="event")


async def test_the_work_commits_then_on_commit_is_called(
    uow: UnitOfWork, sessions: async_sessionmaker[AsyncSession], commits: list[int]
) -> None:
    async def work(session: AsyncSession) -> str:
        claim(session, "e-1")
        return "done"

    assert await uow.run(work) == "done"
    assert commits == [1]
    assert await claims(sessions) == ["e-1"]


async def test_a_write_conflict_is_tried_again_then_raised_as_conflict(
    uow: UnitOfWork, sessions: async_sessionmaker[AsyncSession], commits: list[int]
) -> None:
    async def first(session: AsyncSession) -> None:
        claim(session, "taken")

    await uow.run(first)
    tries: list[int] = []

    async def conflicting(session: AsyncSession) -> None:
        tries.append(1)
        claim(session, f"new-{len(tries)}")
        claim(session, "taken")  # another writer has this key

    with pytest.raises(Conflict, match="concurrent write conflict"):
        await uow.run(conflicting, attempts=3)
    assert len(tries) == 3
    assert commits == [1]  # the first work's only
    assert await claims(sessions) == ["taken"]  # every try rolled back

    # A conflict that is gone on the next try: that try commits.
    async def once(session: AsyncSession) -> int:
        tries.append(1)
        claim(session, f"ok-{len(tries)}")
        if len(tries) == 4:
            claim(session, "taken")
        return len(tries)

    assert await uow.run(once, attempts=3) == 5
    assert commits == [1, 1]
    assert await claims(sessions) == ["ok-5", "taken"]


async def test_without_attempts_to_spare_a_conflict_is_raised_at_once(uow: UnitOfWork) -> None:
    await uow.run(lambda s: _claim_async(s, "x"))
    tries: list[int] = []

    async def conflicting(session: AsyncSession) -> None:
        tries.append(1)
        claim(session, "x")

    with pytest.raises(Conflict):
        await uow.run(conflicting)
    assert tries == [1]


async def _claim_async(session: AsyncSession, event_id: str) -> None:
    claim(session, event_id)


async def test_a_value_the_database_refuses_is_invalid_and_not_tried_again(
    uow: UnitOfWork, sessions: async_sessionmaker[AsyncSession], commits: list[int]
) -> None:
    tries: list[int] = []

    async def refused(session: AsyncSession) -> None:
        tries.append(1)
        claim(session, "refused")
        await session.flush()
        raise DBAPIError("INSERT", None, Refused("invalid byte sequence for encoding UTF8: 0x00"))

    with pytest.raises(InvalidArgument) as raised:
        await uow.run(refused, attempts=3)
    assert raised.value.field == "event"
    assert "the database refused it: invalid byte sequence" in raised.value.problem
    assert (tries, commits) == ([1], [])
    assert await claims(sessions) == []


async def test_other_failures_pass_through_untouched_and_roll_back(
    uow: UnitOfWork, sessions: async_sessionmaker[AsyncSession], commits: list[int]
) -> None:
    tries: list[int] = []

    async def unavailable(session: AsyncSession) -> None:
        tries.append(1)
        claim(session, "a")
        raise OperationalError("COMMIT", None, Exception("the server closed the connection"))

    with pytest.raises(OperationalError):
        await uow.run(unavailable, attempts=3)

    async def missing(session: AsyncSession) -> None:
        tries.append(1)
        claim(session, "b")
        await session.flush()
        raise NotFound("case", "C-1")

    with pytest.raises(NotFound):
        await uow.run(missing, attempts=3)
    assert (tries, commits) == ([1, 1], [])
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedEvent)) == 0
