"""Alembic environment for the case store.

`switchboard.case.migrate` hands over an open connection in ``config.attributes["connection"]``;
run standalone (the alembic CLI with script_location pointing here), it connects to
``sqlalchemy.url`` or CASE_DATABASE_URL itself.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from switchboard.case.adapters.database import async_url, create_engine
from switchboard.case.adapters.orm import Base
from switchboard.case.knowledge import orm as _kb_orm  # noqa: F401  (registers its tables)
from switchboard.case.knowledge.search import not_search_index
from switchboard.case.reports import orm as _reports_orm  # noqa: F401  (registers its tables)

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return (
        config.get_main_option("sqlalchemy.url")
        or os.environ.get("CASE_DATABASE_URL")
        or "sqlite+aiosqlite:///.run/case.db"
    )


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables in later migrations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=not_search_index,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(
        url=async_url(_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    run_offline()
else:
    run_online()
