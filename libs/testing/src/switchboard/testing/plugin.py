"""pytest fixtures for Switchboard: real infrastructure on free ports."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing import hangs
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


# When pytest-timeout's timer for the test ends (monotonic), and its budget in seconds: the
# budget covers setup, call and teardown.
_TIMER = pytest.StashKey[tuple[float, float]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """An asyncio test that hangs fails saying which await it was in (see `hangs`)."""
    timer = item.stash.get(_TIMER, None)
    seconds = hangs.deadline_for(*timer) if timer is not None else None
    if seconds is None or not hangs.is_plain_coroutine_test(item):
        return (yield)
    assert isinstance(item, pytest.Function)
    test = item.obj
    item.obj = hangs.bounded(test, seconds, item.config.rootpath)
    try:
        return (yield)
    finally:
        item.obj = test


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's signal timer, whose failure names where the event loop's task waited
    (`hangs.on_timeout`); its own otherwise (a thread's hang, or its thread method). Either way
    the timer's end is kept for the test's own deadline."""
    item.stash[_TIMER] = (time.monotonic() + settings.timeout, settings.timeout)
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None
    import pytest_timeout

    def handler(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        hangs.on_timeout(item, settings.timeout, frame)
        pytest_timeout.timeout_sigalrm(item, settings)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # as pytest-timeout's own
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True
