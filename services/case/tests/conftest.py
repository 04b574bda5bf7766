"""Fixtures for the case service: a migrated case store on every configured backend, and the
service as real processes (for tests that kill it)."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.migrate import migrated
from switchboard.core.embedded_nats import free_port
from switchboard.testing.processes import ServiceProcess

CaseProcess = Callable[..., ServiceProcess]
TEST_MASTER_KEY = base64.b64encode(b"case-tests-master-key-32-bytes!!").decode()


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
        port = free_port()
        process = ServiceProcess(
            "switchboard.case",
            {
                **os.environ,
                "NATS_URL": nats_url,
                "CASE_DATABASE_URL": database_url,
                "CASE_GRPC_PORT": str(port),
                "SHUTDOWN_GRACE_SECONDS": "1",
                "METRICS_PORT": "0",
                "CASE_MASTER_KEY": TEST_MASTER_KEY,
                **env,
            },
            f"127.0.0.1:{port}",
            "switchboard.v1.CaseService",
            log,
        )
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()
