"""Fixtures for the case service: a migrated case store on every configured backend, and the
service as real processes (for tests that kill it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.migrate import migrated
from switchboard.testing.processes import CASE_TEST_MASTER_KEY, ServiceProcess, service_process

CaseProcess = Callable[..., ServiceProcess]


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with migrated(database_url) as made:
        yield made


@pytest.fixture
def case_process() -> Iterator[CaseProcess]:
    """`case_process(nats_url, database_url, log, **env)`: `python -m switchboard.case` as a real
    process (not started yet), with `env` over the defaults; every one is stopped at the end."""
    started: list[ServiceProcess] = []

    def make(nats_url: str, database_url: str, log: Path, **env: str) -> ServiceProcess:
        process = service_process(
            "switchboard.case",
            "switchboard.v1.CaseService",
            "CASE_GRPC_PORT",
            log,
            {
                "NATS_URL": nats_url,
                "CASE_DATABASE_URL": database_url,
                "CASE_MASTER_KEY": CASE_TEST_MASTER_KEY,
                **env,
            },
        )
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()
