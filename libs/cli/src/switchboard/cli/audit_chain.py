"""The case store's audit hash chains, read and recomputed offline (`switchboard case verify`).

An operator's tool must not need the case service installed, so this reads the two tables it
needs through SQLAlchemy Core (just the columns it reads) and carries its own copy of the hash.
`entry_hash` must stay byte-identical to `switchboard.case.audit.entry_hash`:
tests/e2e/cli/test_case_verify.py writes chains with the case service and verifies them here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
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

GENESIS = "0" * 64
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

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def utc(at: datetime) -> datetime:
    """A stored time as the case store reads it: SQLite keeps no offset, and it is UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def entry_hash(
    prev_hash: str,
    tenant: str,
    entity: str,
    entity_id: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    data: str,
) -> str:
    """SHA-256 over the previous hash and the entry's canonical JSON (as the case service)."""
    body = _CANONICAL.encode(
        {
            "tenant": tenant,
            "entity": entity,
            "entity_id": entity_id,
            "seq": seq,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "data": data,
        }
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


@dataclass(frozen=True)
class Break:
    """Where a chain stops verifying."""

    entity: str
    entity_id: str
    tenant: str
    seq: int
    reason: str


def check_chain(entries: Iterable[Any]) -> Break | None:
    """The first break in one entity's entries (rows of audit_entries in seq order), or None."""
    prev = GENESIS
    for expected, e in enumerate(entries, start=1):
        if e.seq != expected:
            return Break(e.entity, e.entity_id, e.tenant, e.seq, f"entry {expected} is missing")
        if e.prev_hash != prev:
            return Break(e.entity, e.entity_id, e.tenant, e.seq, "prev_hash does not link")
        computed = entry_hash(
            prev, e.tenant, e.entity, e.entity_id, e.seq, utc(e.at), e.actor, e.action, e.data
        )
        if computed != e.hash:
            return Break(e.entity, e.entity_id, e.tenant, e.seq, "hash does not match the entry")
        prev = e.hash
    return None


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


async def chains(
    conn: AsyncConnection, entity: str | None = None, entity_id: str | None = None
) -> AsyncIterator[list[Any]]:
    """Each chain's entries in seq order, one chain at a time (streamed)."""
    c = audit_entries.c
    query = select(audit_entries).order_by(c.entity, c.entity_id, c.seq)
    if entity is not None:
        query = query.where(c.entity == entity)
    if entity_id is not None:
        query = query.where(c.entity_id == entity_id)
    current: list[Any] = []
    result = await conn.stream(query.execution_options(yield_per=1000))
    async for e in result:
        if current and (current[0].entity, current[0].entity_id) != (e.entity, e.entity_id):
            yield current
            current = []
        current.append(e)
    if current:
        yield current


async def verify(
    conn: AsyncConnection, entity: str | None = None, entity_id: str | None = None
) -> tuple[int, list[Break]]:
    """Recompute every chain (or one): the number of chains checked and every break found."""
    checked, breaks = 0, []
    async for chain in chains(conn, entity, entity_id):
        checked += 1
        found = check_chain(chain)
        if found is not None:
            breaks.append(found)
    return checked, breaks
