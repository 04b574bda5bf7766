"""Router groups: routed contacts per second for two tenants served by one router group, then by
two groups (ROUTER_GROUPS, one tenant each), every router and every tenant's agents in processes
of their own on the same nats-server; the figure is the ratio, two groups over one.

Each layout gets tenants and groups of its own (so neither reads the other's journal or events);
a burst of contacts of both tenants, interleaved, is published at once, and the rate is the
contacts offered per second from the first publish to the last offer.

    BENCH_ONLY=router_groups make bench      # of the parts, this one alone

Each group's router is one Python process, deciding on one core: a second group adds a core's
worth of routing, as long as the machine has one to spare beside NATS and the agents.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.endtoend import REPO, SECRET, _healthy, _spawn
from switchboard.core import events
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.v1 import contact_pb2, events_pb2

CONTACTS_PER_TENANT = int(os.environ.get("BENCH_GROUP_CONTACTS", "2000"))
AGENTS_PER_TENANT = int(os.environ.get("BENCH_GROUP_AGENTS", "20"))


def _contact(tenant: str, cid: str) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, "bench"),
        contact=contact_pb2.Contact(
            contact_id=cid,
            tenant=tenant,
            channel=contact_pb2.CHANNEL_CHAT,
            language="ko",
            identities=[
                contact_pb2.CustomerIdentity(
                    kind=contact_pb2.IDENTITY_KIND_CHAT_VISITOR, value=f"visitor-{cid}"
                )
            ],
            content=[contact_pb2.ContentPart(content_type="text/plain", text="안녕하세요")],
        ),
    )


async def _layout(
    work: Path, nats_url: str, groups: dict[str, tuple[str, ...]], contacts: int
) -> float:
    """Routed contacts/s with `groups` (group -> its tenants), `contacts` per tenant."""
    mapping = ";".join(f"{g}={','.join(ts)}" for g, ts in groups.items())
    routers: list[subprocess.Popen[bytes]] = []
    workers: list[asyncio.subprocess.Process] = []
    target_of: dict[str, str] = {}
    base = {
        **os.environ,
        "NATS_URL": nats_url,
        "SWITCHBOARD_AUTH_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "ROUTER_GROUPS": mapping,
        "ROUTER_ACCEPT_TIMEOUT_SECONDS": "60",
    }
    bus = await Bus.connect(nats_url, source="bench")
    try:
        for group, tenants in groups.items():
            port = free_port()
            env = {**base, "ROUTER_GROUP": group, "ROUTER_GRPC_PORT": str(port)}
            routers.append(_spawn("switchboard.router", env, work / f"router-{group}.log"))
            await _healthy(f"127.0.0.1:{port}")
            target_of.update({t: f"127.0.0.1:{port}" for t in tenants})
        offered: dict[str, float] = {}
        done = asyncio.Event()
        total = contacts * len(target_of)
        for tenant, target in target_of.items():
            names = [f"ko-{i}" for i in range(AGENTS_PER_TENANT)]
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.agent_worker",
                target,
                SECRET,
                tenant,
                str(contacts),
                *names,
                stdout=asyncio.subprocess.PIPE,
                cwd=REPO,
                env={**base, "PYTHONPATH": str(REPO)},
            )
            assert worker.stdout is not None
            if (await worker.stdout.readline()).strip() != b"ready":
                raise RuntimeError(f"the agents of {tenant} did not start")
            workers.append(worker)

        async def read(worker: asyncio.subprocess.Process) -> None:
            assert worker.stdout is not None
            while line := await worker.stdout.readline():
                cid, at = line.decode().split()
                offered[cid] = float(at)
                if len(offered) >= total:
                    done.set()

        readers = [asyncio.create_task(read(w)) for w in workers]
        start = time.monotonic()
        futures = []
        for i in range(contacts):
            for tenant in target_of:
                futures.append(await bus.publish_async(_contact(tenant, f"{tenant}-{i}")))
        await asyncio.gather(*futures)
        await asyncio.wait_for(done.wait(), 600)
        rate = total / (max(offered.values()) - start)
        for r in readers:
            r.cancel()
        return rate
    finally:
        for worker in workers:
            worker.terminate()
            await worker.wait()
        for router in routers:
            router.terminate()
        for router in routers:
            try:
                router.wait(10)
            except subprocess.TimeoutExpired:
                router.kill()
        await bus.drain()


async def run(work: Path, nats_url: str) -> dict[str, float]:
    one = await _layout(work, nats_url, {"bench-one": ("one-a", "one-b")}, CONTACTS_PER_TENANT)
    two = await _layout(
        work, nats_url, {"bench-a": ("two-a",), "bench-b": ("two-b",)}, CONTACTS_PER_TENANT
    )
    return {
        "contacts_per_tenant": CONTACTS_PER_TENANT,
        "tenants": 2,
        "one_group_routed_per_s": one,
        "two_groups_routed_per_s": two,
        "two_groups_over_one": two / one,
        "cpus": float(os.cpu_count() or 0),
    }
