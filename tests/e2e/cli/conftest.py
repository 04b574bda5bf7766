"""The `switchboard` command against the services it reads: a migrated case store on every
configured backend (as services/case/tests has it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.migrate import migrated
from switchboard.case.settings import CaseSettings

CASE_SECRET = "cli-case-secret"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with migrated(database_url) as made:
        yield made


@pytest.fixture
def case_secret() -> str:
    """The token secret of `case_service`, for the command's environment."""
    return CASE_SECRET


@pytest.fixture
async def case_service(
    sessions: async_sessionmaker[AsyncSession], nats_url: str, database_url: str
) -> AsyncIterator[CaseApp]:
    """The case service, started whole as it runs, on the `sessions` store."""
    app = bootstrap(
        CaseSettings(  # type: ignore[call-arg]
            NATS_URL=nats_url,
            CASE_DATABASE_URL=database_url,
            CASE_GRPC_PORT=0,
            SWITCHBOARD_AUTH_SECRET=CASE_SECRET,
            SWITCHBOARD_TENANTS="acme,globex",
            SHUTDOWN_GRACE_SECONDS=0.5,
        ),
        run_scheduler=False,
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
