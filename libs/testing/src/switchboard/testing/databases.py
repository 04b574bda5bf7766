"""Test databases: a SQLite file always, and a fresh PostgreSQL database per test when
SWITCHBOARD_TEST_POSTGRES_URL is set (e.g. postgresql://postgres@127.0.0.1:5432/test)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

POSTGRES_ENV = "SWITCHBOARD_TEST_POSTGRES_URL"


def backends() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get(POSTGRES_ENV) else ["sqlite"]


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'case.db'}"


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """Create a throwaway database on the server named by SWITCHBOARD_TEST_POSTGRES_URL."""
    import asyncpg  # type: ignore[import-untyped]

    base = os.environ[POSTGRES_ENV]
    name = f"sb_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(base)
    url = urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{name}", parts.query, ""))
    try:
        yield url
    finally:
        admin = await asyncpg.connect(base)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
