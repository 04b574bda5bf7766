"""The migrations build exactly the schema the models describe, on every backend, repeatably."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from switchboard.case import __main__ as cli
from switchboard.case.adapters import database
from switchboard.case.adapters.orm import Base
from switchboard.case.knowledge import orm as _kb_orm  # noqa: F401  (registers its tables)
from switchboard.case.knowledge.search import not_search_index
from switchboard.case.migrate import MIGRATIONS, migrate
from switchboard.case.reports import orm as _reports_orm  # noqa: F401  (registers its tables)


async def test_migrations_match_models(database_url: str) -> None:
    await migrate(database_url)
    await migrate(database_url)  # already at head: a no-op
    engine = database.create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(
                        c, opts={"compare_type": True, "include_name": not_search_index}
                    ),
                    Base.metadata,
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


def test_migrations_ship_in_the_package() -> None:
    assert (MIGRATIONS / "env.py").is_file()
    assert (MIGRATIONS / "script.py.mako").is_file()
    assert list((MIGRATIONS / "versions").glob("0001_*.py"))


def test_migrate_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "nested" / "case.db"
    monkeypatch.setenv("CASE_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.setattr(sys, "argv", ["switchboard-case", "migrate"])
    cli.main()

    engine = create_engine(f"sqlite:///{db}")
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"customers", "customer_identities", "cases", "contacts", "messages"} <= tables
    assert "processed_events" in tables


async def test_cases_and_contacts_leave_room_on_their_pages_for_updates(database_url: str) -> None:
    """On PostgreSQL, cases and contacts are filled to 70% a page, so the updates of a contact's
    life stay on its page and touch no index (heap-only updates); other tables fill their pages."""
    await migrate(database_url)
    engine = database.create_engine(database_url)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name != "postgresql":
                pytest.skip("SQLite updates rows in place")
            options = {
                name: reloptions
                for name, reloptions in await conn.execute(
                    text(
                        "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:names)"
                        " AND relkind = 'r'"
                    ),
                    {"names": ["cases", "contacts", "messages"]},
                )
            }
    finally:
        await engine.dispose()
    assert options == {
        "cases": ["fillfactor=70"],
        "contacts": ["fillfactor=70"],
        "messages": None,
    }
