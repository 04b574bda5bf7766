"""The case consumer's fetched batches: a backlog is recorded in units of work of up to
CASE_CONSUMER_BATCH events (one transaction, one commit each), through the real consumer on a
real nats-server, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from switchboard.case import audit
from switchboard.case.adapters import orm
from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.handlers import CaseHandlers
from switchboard.case.settings import CaseSettings
from switchboard.core.bus import Bus
from switchboard.testing.contacts import contact_created

BACKLOG = 600


def settings(nats_url: str, database_url: str, **extra: Any) -> CaseSettings:
    return CaseSettings(  # type: ignore[call-arg]
        NATS_URL=nats_url,
        CASE_DATABASE_URL=database_url,
        CASE_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET="case-fetch-batch-secret",
        SHUTDOWN_GRACE_SECONDS=1.0,
        **extra,
    )


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch the consumer hands to the case handlers' unit of work."""
    sizes: list[int] = []
    batch = CaseHandlers.batch

    def counted(
        self: CaseHandlers, events: Sequence[Any] = (), isolate: bool = True
    ) -> AbstractAsyncContextManager[Any]:
        sizes.append(len(events))
        return batch(self, events, isolate)

    monkeypatch.setattr(CaseHandlers, "batch", counted)
    return sizes


async def record_backlog(app: CaseApp, bus: Bus) -> None:
    await bus.publish_many(  # before the service starts: its first fetches take them
        [contact_created(f"c-{i}", email=f"user{i}@example.com") for i in range(BACKLOG)]
    )
    await app.start()
    assert app.sessions is not None
    for _ in range(600):
        async with app.sessions() as session:
            if await session.scalar(select(func.count()).select_from(orm.Contact)) == BACKLOG:
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the backlog was never recorded")
    async with app.sessions() as session:
        checked, breaks = await audit.verify(session, audit.CASE)
    assert breaks == [] and checked == BACKLOG


@pytest.fixture
async def app(nats_url: str, database_url: str) -> AsyncIterator[CaseApp]:
    service = bootstrap(settings(nats_url, database_url), run_scheduler=False)
    yield service
    await service.stop()


async def test_a_backlog_is_recorded_in_batches_as_large_as_the_database_suits(
    app: CaseApp, bus: Bus, batches: list[int], database_url: str
) -> None:
    await record_backlog(app, bus)
    assert sum(batches) == BACKLOG
    if make_url(database_url).get_backend_name() == "sqlite":
        # One process records the stream: the whole backlog fits one fetch of 1,024.
        assert max(batches) > 256
        assert all(size <= 1024 for size in batches)
    else:
        # Replicas share the stream: up to 256 each.
        assert max(batches) > 64
        assert all(size <= 256 for size in batches)


async def test_the_batch_size_is_a_setting(
    nats_url: str, database_url: str, bus: Bus, batches: list[int]
) -> None:
    service = bootstrap(
        settings(nats_url, database_url, CASE_CONSUMER_BATCH=50), run_scheduler=False
    )
    try:
        await record_backlog(service, bus)
    finally:
        await service.stop()
    assert sum(batches) == BACKLOG
    assert max(batches) <= 50
