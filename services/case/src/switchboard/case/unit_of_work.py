"""One unit of work for every writer of the case store: a write transaction that commits when the
work returns, with the database's refusals turned into what a caller can act on, and a hook
called after each commit (it wakes the outbox relays, which send what the transaction staged).

- A unique key taken by another writer at the same moment (IntegrityError) is a `Conflict`:
  the work is tried again, in a new transaction, up to `attempts` times in all; then `Conflict`
  is raised for the caller to map (the event consumer: Retry, for the bus to redeliver; the
  scheduler: the next round; a QA evaluation: AlreadyExists).
- A value the database refuses as such (SQLSTATE class 22: a NUL in text, a number out of range)
  fails the same way on every try: InvalidArgument, not retried.

Nothing is sent from inside the transaction: mail and events are staged in their outboxes and
leave after the commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters.database import data_refused
from switchboard.core.errors import InvalidArgument

T = TypeVar("T")


class Conflict(Exception):
    """Another writer wrote the same key at the same moment; tried again, the work sees the row
    that won."""

    def __init__(self, exc: IntegrityError) -> None:
        self.reason = type(exc.orig).__name__
        super().__init__(f"concurrent write conflict ({self.reason})")


def _nothing() -> None:
    pass


class UnitOfWork:
    """`run(work)`: `work(session)` in one write transaction, committed, then `on_commit()`.
    `what` names the input in an InvalidArgument ("request", "event")."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: Callable[[], None] = _nothing,
        what: str = "request",
    ) -> None:
        self._sessions = sessions
        self._on_commit = on_commit
        self._what = what

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """The write transaction itself, without retries or mapping (a caller that settles the
        database's errors its own way: the consumer's batch); `on_commit` after the commit."""
        async with self._sessions.begin() as session:
            yield session
        self._on_commit()

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]], attempts: int = 1) -> T:
        """The result of `work`, once committed; Conflict after `attempts` conflicting tries,
        InvalidArgument when the database refuses a value."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction() as session:
                    return await work(session)
            except IntegrityError as exc:
                if attempt == attempts:
                    raise Conflict(exc) from exc
            except DBAPIError as exc:
                if data_refused(exc):
                    raise InvalidArgument(
                        self._what, f"the database refused it: {exc.orig}"
                    ) from exc
                raise
        raise ValueError(f"attempts must be at least 1, not {attempts}")
