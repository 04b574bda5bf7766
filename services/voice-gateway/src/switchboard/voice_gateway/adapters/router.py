"""The router, as the gateway uses it over gRPC: with a service token per tenant, acting for
the agent whose phone answered."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from switchboard.core.service_client import ServiceClient
from switchboard.core.tls import GrpcTls
from switchboard.v1 import router_pb2, router_pb2_grpc

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Position:
    position: int
    waiting: int
    estimated_wait: float


class RouterClient:
    """The router's stubs, one channel per tenant (at the tenant's router group's address when
    `target` gives one per tenant)."""

    def __init__(
        self, target: str | Callable[[str], str], secret: str, tls: GrpcTls | None = None
    ) -> None:
        self.client = ServiceClient(
            target, secret, "voice-gateway", router_pb2_grpc.RouterServiceStub, tls=tls
        )
        self.position_supported = True

    def _stub(self, tenant: str) -> router_pb2_grpc.RouterServiceStub:
        return self.client.stub(tenant)

    async def accept(self, tenant: str, agent_id: str, offer_id: str) -> router_pb2.Assignment:
        return await self._stub(tenant).AcceptOffer(
            router_pb2.AcceptOfferRequest(agent_id=agent_id, offer_id=offer_id)
        )

    async def decline(self, tenant: str, agent_id: str, offer_id: str, reason: str) -> None:
        try:
            await self._stub(tenant).DeclineOffer(
                router_pb2.DeclineOfferRequest(agent_id=agent_id, offer_id=offer_id, reason=reason)
            )
        except grpc.aio.AioRpcError as exc:
            # An offer that already expired or was withdrawn needs no decline.
            logger.info("decline of offer %s: %s", offer_id, exc.code().name)

    async def position(self, tenant: str, contact_id: str) -> Position | None:
        """The contact's place in its queue, or None when the router cannot say."""
        if not self.position_supported:
            return None
        try:
            p = await self._stub(tenant).GetContactPosition(
                router_pb2.GetContactPositionRequest(contact_id=contact_id), timeout=2
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.position_supported = False
                logger.warning("router has no GetContactPosition yet: no position announcements")
            return None
        return Position(p.position, p.waiting, p.estimated_wait.ToNanoseconds() / 1e9)

    async def optional(self, tenant: str, method: str, request: object) -> bool:
        """Call an RPC the router may not implement yet; False when it does not."""
        try:
            await getattr(self._stub(tenant), method)(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return False
            logger.warning("%s: %s %s", method, exc.code().name, exc.details())
            return False
        return True

    async def set_hold(self, tenant: str, agent_id: str, contact_id: str, held: bool) -> bool:
        return await self.optional(
            tenant,
            "SetHold",
            router_pb2.SetHoldRequest(agent_id=agent_id, contact_id=contact_id, held=held),
        )

    async def transfer(self, tenant: str, contact_id: str, queue: str, agent_id: str) -> bool:
        """True when the router took the transfer, False while it has no TransferContact;
        raises `grpc.aio.AioRpcError` when it refused (e.g. an unknown queue)."""
        try:
            await self._stub(tenant).TransferContact(
                router_pb2.TransferContactRequest(
                    contact_id=contact_id, queue=queue, agent_id=agent_id
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return False
            raise
        return True

    async def close(self) -> None:
        await self.client.close()
