"""pytest fixtures for Switchboard: real infrastructure on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.databases import backends, postgres_database, sqlite_url
from switchboard.testing.secured_nats import SecuredNats
from switchboard.testing.tracing import memory_exporter


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream, on a free port, with its store under tmp_path."""
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[SecuredNats]:
    """A nats-server configured as `switchboard run` configures it: a user per service with its
    permissions, no anonymous access, JetStream encrypted (nats_url stays anonymous)."""
    server = SecuredNats.start(tmp_path / "secured-nats")
    try:
        yield server
    finally:
        server.server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A Bus connected to the test's nats-server, with the streams declared."""
    b = await Bus.connect(nats_url, source="test")
    yield b
    await b.drain()


@pytest.fixture(params=backends())
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A case-store URL: SQLite always, PostgreSQL too when SWITCHBOARD_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        async with postgres_database() as url:
            yield url


@pytest.fixture
def span_exporter():  # type: ignore[no-untyped-def]
    exporter = memory_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()
