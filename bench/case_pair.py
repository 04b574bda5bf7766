"""Contacts/s through one case service, then through two consuming the same durable consumer
together, on PostgreSQL (the replicas deploy/k8s runs share one database).

Each run gets a fresh nats-server and a fresh database; the case services are real processes
(`python -m switchboard.case`). Once they serve and have applied a first contact, every contact's
events (created, assigned, the agent's reply) are published at once, and the clock runs until the
case store has applied all of them (processed_events). Figures: contacts/s with one and with two, and their ratio. Skipped
without SWITCHBOARD_TEST_POSTGRES_URL. On a machine with few cores the two services, PostgreSQL and
nats-server share them: the ratio says how far a second replica helps there, not in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from switchboard.case.adapters import database
from switchboard.case.migrate import migrate
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.contacts import assigned_conversations
from switchboard.testing.processes import CASE_TEST_MASTER_KEY, ServiceProcess, service_process

CONTACTS = int(os.environ.get("BENCH_CASE_PAIR_CONTACTS", "2000"))
EVENTS_PER_CONTACT = 3


async def applied(engine: AsyncEngine, events: int, services: list[ServiceProcess]) -> None:
    """Return once the case store has applied `events` events."""
    while True:
        async with engine.connect() as conn:
            done = (await conn.execute(text("SELECT count(*) FROM processed_events"))).scalar()
        if done == events:
            return
        if not all(s.alive for s in services):
            raise RuntimeError("a case service exited during the run")
        await asyncio.sleep(0.05)


async def measure(work: Path, database_url: str, replicas: int, contacts: int) -> float:
    """Contacts/s applied by `replicas` case services from a burst of `contacts` contacts."""
    await migrate(database_url)  # before the replicas, which would otherwise race to migrate
    server = NatsServer(work / "nats").start()
    services = [
        service_process(
            "switchboard.case",
            "switchboard.v1.CaseService",
            "CASE_GRPC_PORT",
            work / f"case-{n}.log",
            {
                "NATS_URL": server.url,
                "CASE_DATABASE_URL": database_url,
                "CASE_MASTER_KEY": CASE_TEST_MASTER_KEY,
                "SWITCHBOARD_AUTH_SECRET": "bench-case-pair",
                "SWITCHBOARD_REPLICA_ID": f"case-{n}",
                "LOG_LEVEL": "WARNING",
            },
        )
        for n in range(1, replicas + 1)
    ]
    engine = create_async_engine(database.async_url(database_url))
    bus: Bus | None = None
    try:
        for service in services:
            await service.start()
        bus = await Bus.connect(server.url, source="bench")
        # A first contact makes the tenant's data key (docs/security.md), which two services
        # starting at once would otherwise race to create: what is measured is the steady state.
        warm = assigned_conversations(1, 1, tenant="bench", prefix="warm-")
        await bus.publish_many(warm)
        await applied(engine, len(warm), services)
        events = assigned_conversations(contacts, contacts, tenant="bench")
        total = len(warm) + len(events)
        began = time.perf_counter()
        for k in range(0, total, 500):
            await bus.publish_many(events[k : k + 500])
        await applied(engine, total, services)
        return contacts / (time.perf_counter() - began)
    finally:
        if bus is not None:
            await bus.drain()
        for service in services:
            service.stop()
        await engine.dispose()
        server.stop()


async def run(work: Path, nats_url: str) -> dict[str, float]:
    pg = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", "")
    if not pg:
        print("bench: case_pair needs SWITCHBOARD_TEST_POSTGRES_URL; skipped", flush=True)
        return {}
    admin = create_async_engine(database.async_url(pg), isolation_level="AUTOCOMMIT")
    base = make_url(pg)
    out: dict[str, float] = {"contacts": float(CONTACTS), "cpus": float(os.cpu_count() or 0)}
    try:
        for replicas in (1, 2):
            name = f"sb_bench_{uuid.uuid4().hex[:8]}"
            async with admin.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = base.set(database=name).render_as_string(hide_password=False)
                run_dir = work / f"replicas-{replicas}"
                run_dir.mkdir(exist_ok=True)
                out[f"postgresql_contacts_per_s_{replicas}_case"] = await measure(
                    run_dir, url, replicas, CONTACTS
                )
            finally:
                with contextlib.suppress(Exception):
                    async with admin.connect() as conn:
                        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
    out["ratio_two_case_over_one"] = (
        out["postgresql_contacts_per_s_2_case"] / out["postgresql_contacts_per_s_1_case"]
    )
    return out
