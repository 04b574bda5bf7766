"""The inbox's calls to the router and the case service, made with the agent's own token, so every
call is scoped to the agent's tenant and the backends audit the agent (not the chat) as the actor.
(The agent's accepts, declines and wrap-ups go on its AgentSession stream instead: see desk.py.)

gRPC failures, and actions the router refuses on the session, become DomainErrors carrying the backend's own explanation (e.g. the surge
protocol's reason for refusing a break), which the socket ack hands to the page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

import grpc

from switchboard.core import grpc as sb_grpc
from switchboard.core.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from switchboard.v1 import case_pb2_grpc, router_pb2_grpc

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
T = TypeVar("T")


class Unimplemented(DomainError):
    """The backend does not offer this call (yet)."""


def domain_error(code: grpc.StatusCode, detail: str, what: str) -> DomainError:
    """The DomainError for a call `what` that failed with `code` and the backend's `detail`: a
    unary call's status, or the refusal of an action sent on the agent's session."""
    detail = detail or code.name
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(detail)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        err = InvalidArgument("request")
        err.args = (detail,)
        return err
    if code == grpc.StatusCode.NOT_FOUND:
        err2 = NotFound(what, "")
        err2.args = (detail,)
        return err2
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(detail)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(detail)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Unimplemented(f"{what} is not available yet")
    logger.warning("%s failed: %s", what, code.name)
    return Unavailable(f"{what}: the service is unavailable ({code.name}), please try again")


async def call(what: str, rpc: Awaitable[T]) -> T:
    """Await a unary gRPC call, turning its failure into a DomainError naming `what`."""
    try:
        return await rpc
    except grpc.aio.AioRpcError as exc:
        raise domain_error(exc.code(), exc.details() or "", what) from None


class Backends:
    """Channels to the router and the case service for one agent token."""

    def __init__(self, router_target: str, case_target: str, token: str) -> None:
        self.router_channel = sb_grpc.channel(router_target, token, TIMEOUT_SECONDS)
        self.case_channel = sb_grpc.channel(case_target, token, TIMEOUT_SECONDS)
        self.router = router_pb2_grpc.RouterServiceStub(self.router_channel)
        self.case = case_pb2_grpc.CaseServiceStub(self.case_channel)

    async def close(self) -> None:
        await self.router_channel.close()
        await self.case_channel.close()
