"""What the chat asks the router: a waiting contact's position, whether anyone can answer, and
the surge level agents' desks show.

Both degrade gracefully: an RPC the router does not implement yet (UNIMPLEMENTED), or a router
that cannot be reached, gives None and the caller falls back to what the events said.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from switchboard.core.service_client import ServiceClient
from switchboard.core.tls import GrpcTls
from switchboard.v1 import router_pb2, router_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_SUBJECT = "chat"
TIMEOUT_SECONDS = 2.0
_SOFT_CODES = (
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.NOT_FOUND,
)


def wait_seconds(p: router_pb2.ContactPosition) -> int | None:
    """The router's estimated wait in whole seconds, rounded up: a customer with someone ahead
    is never told the wait is 0 (a fast queue estimates fractions of a second)."""
    if not p.HasField("estimated_wait"):
        return None
    return math.ceil(p.estimated_wait.ToNanoseconds() / 1e9)


@dataclass(frozen=True)
class Position:
    position: int
    waiting: int
    estimated_wait_seconds: int | None
    state: str
    queue: str = ""


class RouterClient:
    """The router's stubs, one channel and service token per tenant (at the tenant's router
    group's address when `target` gives one per tenant)."""

    def __init__(
        self, target: str | Callable[[str], str], secret: str, tls: GrpcTls | None = None
    ) -> None:
        self.client = ServiceClient(
            target,
            secret,
            SERVICE_SUBJECT,
            router_pb2_grpc.RouterServiceStub,
            default_timeout=TIMEOUT_SECONDS,
            tls=tls,
        )

    def _stub(self, tenant: str) -> router_pb2_grpc.RouterServiceStub:
        return self.client.stub(tenant)

    async def position(self, tenant: str, contact_id: str) -> Position | None:
        try:
            p = await self._stub(tenant).GetContactPosition(
                router_pb2.GetContactPositionRequest(contact_id=contact_id), timeout=TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _SOFT_CODES:
                logger.warning("GetContactPosition: %s", exc.code().name)
            return None
        return Position(int(p.position), int(p.waiting), wait_seconds(p), p.state, p.queue)

    async def wait_is_measured(self, tenant: str, queue: str) -> bool:
        """Whether the router's wait estimate for `queue` rests on what is happening: the queue
        answered a contact within its statistics window (its speed of answer is measured, not
        assumed) and some agent is at work (available, busy or in wrap-up; with everyone on
        a break or signed out the queue does not move at that speed). False when the router
        cannot tell."""
        try:
            stats = await self._stub(tenant).GetQueueStats(
                router_pb2.GetQueueStatsRequest(queue=queue), timeout=TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _SOFT_CODES:
                logger.warning("GetQueueStats: %s", exc.code().name)
            return False
        working = (
            router_pb2.PRESENCE_AVAILABLE,
            router_pb2.PRESENCE_BUSY,
            router_pb2.PRESENCE_WRAP_UP,
        )
        return any(
            q.queue == queue
            and q.answered > 0
            and any(a.presence in working and a.count > 0 for a in q.agents)
            for q in stats.queues
        )

    async def agents_for(self, tenant: str, language: str) -> bool | None:
        """Whether a signed-in agent speaks `language` (primary subtag); None if unknown."""
        try:
            reply = await self._stub(tenant).ListAgents(
                router_pb2.ListAgentsRequest(), timeout=TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _SOFT_CODES:
                logger.warning("ListAgents: %s", exc.code().name)
            return None
        primary = language.split("-")[0].lower()
        offline = (router_pb2.PRESENCE_OFFLINE, router_pb2.PRESENCE_UNSPECIFIED)
        return any(
            a.presence not in offline
            and any(lang.language.split("-")[0].lower() == primary for lang in a.languages)
            for a in reply.agents
        )

    async def surge(self, tenant: str) -> dict[str, Any]:
        """The tenant's surge level and the queue it is on, for agents' desks: asked with the
        chat's service token, since queue statistics are not an agent's to read."""
        stats = await self._stub(tenant).GetQueueStats(
            router_pb2.GetQueueStatsRequest(), timeout=TIMEOUT_SECONDS
        )
        top = max(stats.queues, key=lambda q: q.surge_level, default=None)
        return {
            "level": int(top.surge_level) if top else 0,
            "queue": top.queue if top and top.surge_level else "",
        }

    async def close(self) -> None:
        await self.client.close()
