"""Calling another Switchboard service over gRPC: as a service of each tenant (a service token
minted per tenant, one channel per tenant), with failures turned into domain errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, TypeVar

import grpc

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from switchboard.core.tls import GrpcTls

logger = logging.getLogger(__name__)

StubT = TypeVar("StubT")
T = TypeVar("T")

# A service token lives an hour and is minted again when half of that has passed.
SERVICE_TOKEN_TTL_SECONDS = 3600


class ServiceClient(Generic[StubT]):
    """Stubs of one service at `target` (an address, or the address for each tenant: a
    partitioned router, `RouterGroups.target`), one channel per tenant, each call sent with a token of
    role "service" for that tenant naming `subject` (the calling service) as the actor. Tokens
    expire (`ttl_seconds`); a channel mints a fresh one when half of its token's life is over.
    With `tls` (the calling service's `settings.grpc_tls()`), calls go over (mutual) TLS."""

    def __init__(
        self,
        target: str | Callable[[str], str],
        secret: str,
        subject: str,
        stub: Callable[[grpc.aio.Channel], StubT],
        *,
        ttl_seconds: int = SERVICE_TOKEN_TTL_SECONDS,
        default_timeout: float = 10.0,
        tls: GrpcTls | None = None,
    ) -> None:
        self.target = target
        self.secret = secret
        self.subject = subject
        self._stub = stub
        self._ttl = ttl_seconds
        self._timeout = default_timeout
        self._tls = tls
        self._channels: dict[str, tuple[grpc.aio.Channel, StubT]] = {}

    def stub(self, tenant: str) -> StubT:
        """The stub for calls on behalf of `tenant` (its channel is opened on first use)."""
        found = self._channels.get(tenant)
        if found is None:
            token = _RenewedToken(partial(self._mint, tenant), self._ttl)
            target = self.target if isinstance(self.target, str) else self.target(tenant)
            channel = sb_grpc.channel(target, token, default_timeout=self._timeout, tls=self._tls)
            found = self._channels[tenant] = (channel, self._stub(channel))
        return found[1]

    def _mint(self, tenant: str) -> str:
        return auth.mint(self.secret, tenant, self.subject, ["service"], self._ttl)

    async def close(self) -> None:
        """Close every channel; a later call opens a new one."""
        channels, self._channels = self._channels, {}
        for channel, _ in channels.values():
            await channel.close()


class _RenewedToken:
    """A token minted again once half of its life is over."""

    def __init__(self, mint: Callable[[], str], ttl_seconds: int) -> None:
        self._mint = mint
        self._renew_after = ttl_seconds / 2
        self._token = ""
        self._minted = 0.0

    def __call__(self) -> str:
        if not self._token or time.monotonic() - self._minted >= self._renew_after:
            self._token, self._minted = self._mint(), time.monotonic()
        return self._token


def domain_error(code: grpc.StatusCode, detail: str, what: str) -> DomainError:
    """The DomainError for a call `what` that failed with `code` and the backend's `detail`: a
    unary call's status, or the refusal of an action sent on a stream."""
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
