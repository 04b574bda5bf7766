"""`switchboard status | queues | agents | token`: what a platform engineer asks of a running platform."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from switchboard.cli.endpoints import Endpoints, auth_secret, connect_nats, nats_options
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.events import STREAMS
from switchboard.v1 import router_pb2, router_pb2_grpc


def operator_token(directory: Path, tenant: str) -> str:
    return auth.mint(auth_secret(directory), tenant, "switchboard-cli", ["admin"], ttl_seconds=300)


async def nats_status(url: str, options: dict[str, Any] | None = None) -> tuple[bool, str]:
    try:
        nc = await connect_nats(url, options)
    except Exception as exc:
        return False, f"unreachable: {exc.__class__.__name__}"
    try:
        js = nc.jetstream()
        parts = []
        for name in STREAMS:
            try:
                info = await js.stream_info(name)
                parts.append(
                    f"{name}: {info.state.messages} msgs, {info.state.consumer_count} consumers"
                )
            except Exception:
                parts.append(f"{name}: missing")
        return True, "; ".join(parts)
    finally:
        await nc.close()


async def status(directory: Path) -> int:
    ep = Endpoints.load(directory)
    ok, detail = await nats_status(ep.nats_url, nats_options(directory))
    rows = [("nats", ep.nats_url, "SERVING" if ok else "NOT_SERVING", detail)]
    tls = ep.grpc_tls()
    results = await asyncio.gather(*(sb_grpc.check_health(t, tls=tls) for t in ep.grpc.values()))
    for (name, target), state in zip(ep.grpc.items(), results, strict=True):
        detail = state.partition(": ")[2] or ep.metrics.get(name, "")
        rows.append((name, target, state.split(":")[0], detail))
    width = max(len(r[0]) for r in rows)
    for name, target, state, detail in rows:
        print(f"{name:<{width}}  {state:<12} {target:<24} {detail}".rstrip())
    healthy = all(r[2] == "SERVING" for r in rows)
    print("all services healthy" if healthy else "some services are not healthy")
    return 0 if healthy else 1


def _seconds(d: Duration) -> str:
    return f"{d.seconds + d.nanos / 1e9:.1f}s"


def _rate(q: Any, value: float) -> str:
    """A live rate, or "-" while the window has no outcome (the rate is undefined)."""
    return f"{value:.0%}" if q.answered + q.abandoned else "-"


async def _ask_router(
    directory: Path, tenant: str | None, method: str, request: Any
) -> tuple[Any, str]:
    """Call one RouterService method with an operator token for `tenant` (default: the embedded
    default's). Returns the response (None after printing the status on failure) and the tenant."""
    ep = Endpoints.load(directory)
    tenant = tenant or ep.tenant
    token = operator_token(directory, tenant)
    async with sb_grpc.channel(ep.router(tenant), token, tls=ep.grpc_tls()) as ch:
        try:
            return await getattr(router_pb2_grpc.RouterServiceStub(ch), method)(request), tenant
        except grpc.aio.AioRpcError as exc:
            print(f"router: {exc.code().name}: {exc.details()}")
            return None, tenant


async def queues(directory: Path, tenant: str | None) -> int:
    resp, tenant = await _ask_router(
        directory, tenant, "GetQueueStats", router_pb2.GetQueueStatsRequest()
    )
    if resp is None:
        return 1
    print(
        f"{'queue':<16} {'waiting':>7} {'offered':>7} {'assigned':>8} {'longest wait':>12} "
        f"{'SL':>6} {'SL2':>6} {'ASA':>7} {'aband.':>6} {'surge':>5}"
    )
    for q in resp.queues:
        print(
            f"{q.queue:<16} {q.waiting:>7} {q.offered:>7} {q.assigned:>8} "
            f"{_seconds(q.longest_wait):>12} {_rate(q, q.service_level):>6} "
            f"{_rate(q, q.service_level_2):>6} "
            f"{_seconds(q.average_speed_of_answer):>7} {_rate(q, q.abandonment_rate):>6} "
            f"{q.surge_level:>5}"
        )
    if not resp.queues:
        print(f"(no contacts in any queue of tenant {tenant})")
    return 0


async def agents(directory: Path, tenant: str | None) -> int:
    resp, tenant = await _ask_router(
        directory, tenant, "ListAgents", router_pb2.ListAgentsRequest()
    )
    if resp is None:
        return 1
    print(f"{'agent':<16} {'presence':<10} {'languages':<20} {'skills':<28} active")
    for a in resp.agents:
        langs = ",".join(f"{x.language}:{x.proficiency}" for x in a.languages)
        skills = ",".join(f"{x.name}:{x.proficiency}" for x in a.skills)
        presence = router_pb2.Presence.Name(a.presence).removeprefix("PRESENCE_").lower()
        print(
            f"{a.agent_id:<16} {presence:<10} {langs:<20} {skills:<28} {len(a.active_contact_ids)}"
        )
    if not resp.agents:
        print(f"(no agents signed in for tenant {tenant})")
    return 0
