"""End-to-end: ContactCreated published on JetStream -> router (own process) -> offer on an agent's
gRPC stream -> accept -> ContactAssigned -> recorded by the case service (own process, SQLite).

With `Security`, the same run as a production deployment makes it: each process connects to NATS
as its own user over TLS, and every gRPC call travels over mutual TLS (personal data is sealed in
the case store in both runs)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.agent_worker import ONE_AT_A_TIME
from bench.stats import cpu_seconds, machine_busy, percentile
from switchboard.case.adapters import database as case_database
from switchboard.core import events, nats_auth
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.core.grpc import check_health
from switchboard.core.tls import GrpcTls
from switchboard.testing.secured_nats import SecuredNats
from switchboard.testing.tls import grpc_tls
from switchboard.v1 import contact_pb2, events_pb2

SECRET = "bench-secret"
REPO = Path(__file__).resolve().parent.parent
AGENT_PROCESSES = int(os.environ.get("BENCH_AGENT_PROCESSES", "4"))
LANGUAGES = ("ko", "zh", "en", "ja")
PUBLISH_BATCH = 100  # contacts published under one wait for their acks


def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")
    return subprocess.Popen(
        [sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT
    )


@dataclass
class Security:
    """A nats-server that requires TLS and its users' passwords, and gRPC certificates of one
    local CA (the servers ask every caller for one)."""

    nats: SecuredNats
    server_tls: GrpcTls
    client_tls: GrpcTls

    @classmethod
    def start(cls, folder: Path) -> Security:
        server_tls, client_tls = grpc_tls(folder / "tls")
        nats_tls = {
            "cert_file": server_tls.cert_file,
            "key_file": server_tls.key_file,
            "ca_file": server_tls.ca_file,
        }
        return cls(SecuredNats.start(folder / "nats", tls=nats_tls), server_tls, client_tls)

    def stop(self) -> None:
        self.nats.server.stop()

    def service_env(self, user: str) -> dict[str, str]:
        return {
            **self.nats.env(user),
            "NATS_TLS_CA_FILE": self.server_tls.ca_file,
            "GRPC_TLS_CERT_FILE": self.server_tls.cert_file,
            "GRPC_TLS_KEY_FILE": self.server_tls.key_file,
            "GRPC_TLS_CA_FILE": self.server_tls.ca_file,
            "GRPC_TLS_CLIENT_AUTH": "require",
        }

    def nats_options(self, user: str) -> dict[str, Any]:
        """Bus.connect's options to connect as `user` over TLS."""
        return nats_auth.client_options(
            user, self.nats.passwords[user], ca_file=self.server_tls.ca_file
        )

    def agent_env(self) -> dict[str, str]:
        """What bench.agent_worker reads to call the router over mutual TLS."""
        tls = self.client_tls
        return {
            "BENCH_TLS_CERT_FILE": tls.cert_file,
            "BENCH_TLS_KEY_FILE": tls.key_file,
            "BENCH_TLS_CA_FILE": tls.ca_file,
        }


async def _healthy(target: str, tls: GrpcTls | None = None) -> None:
    for _ in range(300):
        if await check_health(target, timeout=1, tls=tls) == "SERVING":
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{target} never became healthy")


def _contact(cid: str, i: int) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta("bench", contact_pb2.CHANNEL_CHAT, "bench"),
        contact=contact_pb2.Contact(
            contact_id=cid,
            tenant="bench",
            channel=contact_pb2.CHANNEL_CHAT,
            language=LANGUAGES[i % len(LANGUAGES)],
            identities=[
                contact_pb2.CustomerIdentity(
                    kind=contact_pb2.IDENTITY_KIND_CHAT_VISITOR, value=f"visitor-{cid}"
                )
            ],
            content=[contact_pb2.ContentPart(content_type="text/plain", text="안녕하세요")],
        ),
    )


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of processes."""
    return {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}


ASSIGNED = "SELECT count(*) FROM contacts WHERE agent_id IS NOT NULL AND agent_id != ''"


def _assigned(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        row = conn.execute(ASSIGNED).fetchone()
    return int(row[0])


@contextlib.asynccontextmanager
async def _assigned_counter(
    database_url: str | None, db: Path
) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """How many contacts the case store (another process) has recorded as assigned: read from
    its SQLite file `db`, or from the PostgreSQL database `database_url`."""
    if database_url is None:

        async def from_file() -> int:
            return _assigned(db)

        yield from_file
        return
    engine = create_async_engine(case_database.async_url(database_url))

    async def from_server() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(text(ASSIGNED))).scalar_one())

    try:
        yield from_server
    finally:
        await engine.dispose()


async def run(
    nats_url: str,
    workdir: Path,
    contacts: int,
    agents_per_language: int,
    latency_samples: int,
    security: Security | None = None,
    nats_pid: int | None = None,
    database_url: str | None = None,
) -> dict[str, float]:
    """The run's figures. Over the throughput phase each process's CPU is taken too (per
    contact: the router, the case service, the agents' processes, this process publishing,
    and the nats-server of `nats_pid`), with the machine's busy share: whether the phase was
    held back by the cores the processes share. The case store is SQLite in `workdir`, or the
    (empty) PostgreSQL database `database_url`."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    db = workdir / "case.db"
    router_port, case_port = free_port(), free_port()
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "SWITCHBOARD_AUTH_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "ROUTER_GRPC_PORT": str(router_port),
        "CASE_GRPC_PORT": str(case_port),
        "CASE_DATABASE_URL": database_url or f"sqlite+aiosqlite:///{db}",
        "CASE_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "ROUTER_ACCEPT_TIMEOUT_SECONDS": "30",
    }
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "switchboard.case", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    secured = security.service_env if security else lambda _user: {}
    tls = security.client_tls if security else None
    procs = [
        _spawn("switchboard.router", env | secured("router"), workdir / "router.log"),
        _spawn("switchboard.case", env | secured("case"), workdir / "case.log"),
    ]
    try:
        await _healthy(f"127.0.0.1:{router_port}", tls)
        await _healthy(f"127.0.0.1:{case_port}", tls)
        published: dict[str, float] = {}
        offered: dict[str, float] = {}
        waiting: dict[str, asyncio.Future[None]] = {}
        accepting: dict[str, asyncio.Future[None]] = {}
        offer_latency: list[float] = []
        names = [f"{lang}-{i}" for lang in LANGUAGES for i in range(agents_per_language)]
        processes = max(1, min(AGENT_PROCESSES, len(names)))
        # The agents run in processes of their own, so this process is not what limits them.
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.agent_worker",
                f"127.0.0.1:{router_port}",
                SECRET,
                "bench",
                str(contacts),  # benchmark agents take many chats at once
                *names[k::processes],
                stdout=asyncio.subprocess.PIPE,
                cwd=REPO,
                env={**env, **(security.agent_env() if security else {}), "PYTHONPATH": str(REPO)},
            )
            for k in range(processes)
        ]

        async def read(worker: asyncio.subprocess.Process) -> None:
            assert worker.stdout is not None
            while line := await worker.stdout.readline():
                cid, at = line.decode().split()
                if at == "accepted":
                    settled = accepting.pop(cid, None)
                    if settled is not None and not settled.done():
                        settled.set_result(None)
                    continue
                offered[cid] = float(at)
                offer_latency.append((float(at) - published[cid]) * 1e3)
                done = waiting.pop(cid, None)
                if done is not None and not done.done():
                    done.set_result(None)

        for worker in workers:
            assert worker.stdout is not None
            ready = await worker.stdout.readline()
            if ready.strip() != b"ready":
                raise RuntimeError(f"an agent process did not start: {ready!r}")
        readers = [asyncio.create_task(read(w)) for w in workers]
        options = security.nats_options(nats_auth.OPERATOR) if security else {}
        bus = await Bus.connect(nats_url, source="bench", **options)

        # Throughput: every contact published at once; measured until the case store has
        # recorded every assignment.
        pids = {
            "router": [procs[0].pid],
            "case": [procs[1].pid],
            "agents": [w.pid for w in workers],
            "bench": [os.getpid()],
            "nats_server": [nats_pid] if nats_pid else [],
        }
        cpu0, box0 = _cpu(pids), machine_busy()
        start = time.monotonic()
        # Published as a channel publishes a batch: pipelined, one wait for each batch's acks.
        futures = []
        for first in range(0, contacts, PUBLISH_BATCH):
            batch = []
            for i in range(first, min(contacts, first + PUBLISH_BATCH)):
                published[f"bench-{i}"] = time.monotonic()
                batch.append((_contact(f"bench-{i}", i), ""))
            futures.append(await bus.publish_batch_async(batch))
        await asyncio.gather(*futures)
        # The case store is another process: polling its table is how we see "recorded".
        async with _assigned_counter(database_url, db) as assigned:
            while await assigned() < contacts:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        elapsed = time.monotonic() - start
        cpu1, box1 = _cpu(pids), machine_busy()
        routed = contacts / (max(offered.values()) - start)
        burst_p50 = percentile(offer_latency, 50)
        burst_p99 = percentile(offer_latency, 99)

        # Latency: one contact in flight at a time, so no queueing is measured: the next is
        # published once the router has answered the agent's accept of the one before (the
        # router handles that accept while nothing else is in flight, not while it routes the
        # next contact).
        offer_latency.clear()
        loop = asyncio.get_running_loop()
        for i in range(latency_samples):
            cid = f"{ONE_AT_A_TIME}{i}"
            offered_now = waiting[cid] = loop.create_future()
            accepted = accepting[cid] = loop.create_future()
            published[cid] = time.monotonic()
            await bus.publish(_contact(cid, i))
            # The offer may come back before the publish's ack does.
            await asyncio.wait_for(offered_now, 30)
            await asyncio.wait_for(accepted, 30)
        for r in readers:
            r.cancel()
        for worker in workers:
            worker.terminate()
            await worker.wait()
        await bus.drain()
        return {
            "contacts": contacts,
            "agents": len(names),
            "agent_processes": processes,
            "contacts_per_s": contacts / elapsed,
            "offers_per_s": routed,
            "burst_offer_p50_ms": burst_p50,
            "burst_offer_p99_ms": burst_p99,
            "latency_samples": latency_samples,
            "offer_p50_ms": percentile(offer_latency, 50),
            "offer_p99_ms": percentile(offer_latency, 99),
            **{
                f"{name}_cpu_ms_per_contact": (cpu1[name] - cpu0[name]) * 1e3 / contacts
                for name in pids
                if pids[name]
            },
            "machine_busy_share": (box1[0] - box0[0]) / (box1[1] - box0[1]),
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
