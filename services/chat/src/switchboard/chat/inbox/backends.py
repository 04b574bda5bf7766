"""The inbox's calls to the router and the case service, made with the agent's own token, so every
call is scoped to the agent's tenant and the backends audit the agent (not the chat) as the actor.
(The agent's accepts, declines and wrap-ups go on its AgentSession stream instead: see desk.py.)

gRPC failures, and actions the router refuses on the session, become DomainErrors carrying the
backend's own explanation (e.g. the surge protocol's reason for refusing a break), which the
socket ack hands to the page (`switchboard.core.service_client.call` and `domain_error`).
"""

from __future__ import annotations

from switchboard.core import grpc as sb_grpc
from switchboard.core.tls import GrpcTls
from switchboard.v1 import case_pb2_grpc, router_pb2_grpc

TIMEOUT_SECONDS = 5.0


class Backends:
    """Channels to the router and the case service for one agent token."""

    def __init__(
        self, router_target: str, case_target: str, token: str, tls: GrpcTls | None = None
    ) -> None:
        self.router_channel = sb_grpc.channel(router_target, token, TIMEOUT_SECONDS, tls)
        self.case_channel = sb_grpc.channel(case_target, token, TIMEOUT_SECONDS, tls)
        self.router = router_pb2_grpc.RouterServiceStub(self.router_channel)
        self.case = case_pb2_grpc.CaseServiceStub(self.case_channel)

    async def close(self) -> None:
        await self.router_channel.close()
        await self.case_channel.close()
