"""The case store's audit hash chains, read and recomputed offline (`switchboard case verify`).

An operator's tool must not need the case service installed, so this reads the two tables it
needs through SQLAlchemy Core (just the columns it reads); the hash and the chain check are the
case service's own (switchboard.core.hash_chain). tests/e2e/cli/test_case_verify.py writes chains
with the case service and verifies them here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    event,
    or_,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from switchboard.core import hash_chain
from switchboard.core.hash_chain import Break

CASE = "case"

_metadata = MetaData()

# The columns read, as the case store's migrations create them.
audit_entries = Table(
    "audit_entries",
    _metadata,
    Column("entity", String, primary_key=True),
    Column("entity_id", String, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("tenant", String),
    Column("at", DateTime(timezone=True)),
    Column("actor", String),
    Column("action", String),
    Column("data", Text),
    Column("prev_hash", String),
    Column("hash", String),
)
cases = Table(
    "cases",
    _metadata,
    Column("id", String, primary_key=True),
    Column("tenant", String),
    Column("reference", String),
)


def create_engine(url: str) -> AsyncEngine:
    """A read-only use of the case store at `url` (postgresql:// and sqlite:// URLs take the
    async driver); on SQLite every transaction is one snapshot and waits for a busy writer."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, isolation_level="REPEATABLE READ")
    engine = create_async_engine(parsed, connect_args={"timeout": 5.0})

    @event.listens_for(engine.sync_engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


async def find_cases(conn: AsyncConnection, case: str = "") -> dict[str, Any]:
    """Every case (or the one with this id or reference), by id: rows with id, tenant, reference."""
    query: Select[Any] = select(cases.c.id, cases.c.tenant, cases.c.reference)
    if case:
        query = query.where(or_(cases.c.id == case, cases.c.reference == case.upper()))
    return {row.id: row for row in await conn.execute(query)}


async def entities_with_entries(conn: AsyncConnection, entity: str) -> set[str]:
    query = select(audit_entries.c.entity_id).where(audit_entries.c.entity == entity).distinct()
    return set((await conn.scalars(query)).all())


async def verify(
    conn: AsyncConnection, entity: str | None = None, entity_id: str | None = None
) -> tuple[int, list[Break]]:
    """Recompute every chain (or one), streamed: the number of chains checked and every break
    found."""
    c = audit_entries.c
    query = select(audit_entries).order_by(c.entity, c.entity_id, c.seq)
    if entity is not None:
        query = query.where(c.entity == entity)
    if entity_id is not None:
        query = query.where(c.entity_id == entity_id)
    return await hash_chain.verify(await conn.stream(query.execution_options(yield_per=1000)))
