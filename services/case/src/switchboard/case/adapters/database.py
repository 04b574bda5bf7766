"""Engines for the case store: SQLite (the embedded default) or PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 5000


def async_url(url: str) -> str:
    """Accept plain postgresql:// and sqlite:// URLs too, choosing the async driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if parsed.drivername == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return url


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url`; for a SQLite file, its directory is created and every connection
    gets WAL (readers never block the consumer's writes), a busy timeout and foreign keys."""
    url = async_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Rows are turned into messages after commit; expiring them would force lazy reloads.
    return async_sessionmaker(engine, expire_on_commit=False)


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"unsupported database dialect {dialect!r}")


async def insert_ignore(
    session: AsyncSession, model: Any, values: dict[str, Any], keys: Iterable[str]
) -> bool:
    """INSERT unless a row with the same `keys` exists; True when this call inserted it."""
    keys = list(keys)
    stmt = (
        _insert(session)(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=keys)
        .returning(model.__table__.c[keys[0]])
    )
    return (await session.execute(stmt)).first() is not None
