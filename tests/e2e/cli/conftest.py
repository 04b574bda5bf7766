"""The `switchboard` command against the services it reads: a migrated case store on every
configured backend (as services/case/tests has it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.migrate import migrated


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with migrated(database_url) as made:
        yield made
