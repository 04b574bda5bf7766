"""Plumbing shared by the Socket.IO namespaces: error acks, connection refusals, spans."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from switchboard.chat.config import ChatConfig, Limits
from switchboard.chat.domain.rate_limit import Budget, Limiter
from switchboard.chat.entrypoints.clients import Network, client_address
from switchboard.core import telemetry
from switchboard.core.errors import DomainError, PermissionDenied

logger = logging.getLogger(__name__)
tracer = telemetry.tracer("switchboard.chat.entrypoints")

INTERNAL_ERROR = "internal error, please try again"
# The kinds of refusal an error ack names: a subclass by the kind it is (Erased is NotFound);
# an error of the chat's own (MessageTooLarge) by its name.
KINDS = frozenset(
    {
        "InvalidArgument",
        "NotFound",
        "FailedPrecondition",
        "AlreadyExists",
        "Unauthenticated",
        "PermissionDenied",
        "ResourceExhausted",
        "Unavailable",
        "Unimplemented",
    }
)


def error_kind(exc: DomainError) -> str:
    return next((c.__name__ for c in type(exc).__mro__ if c.__name__ in KINDS), type(exc).__name__)


def refusal(exc: Exception) -> socketio.exceptions.ConnectionRefusedError:
    """A refused connection whose message the client sees (`connect_error`)."""
    return socketio.exceptions.ConnectionRefusedError(str(exc))


def tag(tenant: str) -> None:
    trace.get_current_span().set_attribute("switchboard.tenant", tenant)


async def acked(
    span_name: str,
    call: Callable[[], Awaitable[dict[str, Any]]],
    on_error: Callable[[DomainError], Awaitable[None]] | None = None,
    kind: bool = False,
) -> dict[str, Any]:
    """Run `call` in a SERVER span and return its ack, or an error ack saying what was wrong;
    with `kind`, the error ack also names the kind of refusal (NotFound, FailedPrecondition...),
    so that a page can say it in its own language."""
    with tracer.start_as_current_span(span_name, kind=SpanKind.SERVER) as span:
        try:
            return await call()
        except DomainError as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            if on_error is not None:
                await on_error(exc)
            refused = {"ok": False, "error": str(exc)}
            return {**refused, "kind": error_kind(exc)} if kind else refused
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            logger.exception("%s failed", span_name)
            failed = {"ok": False, "error": INTERNAL_ERROR}
            return {**failed, "kind": "Internal"} if kind else failed


def request_origin(environ: dict[str, Any]) -> str | None:
    """The browser's Origin header, normalised; None for clients that send none."""
    return _normal(environ.get("HTTP_ORIGIN"))


def _normal(origin: str | None) -> str | None:
    return origin.strip().lower().rstrip("/") if origin else None


def own_origins(environ: dict[str, Any]) -> set[str]:
    """The chat's own origin as this request reached it (directly or behind a proxy)."""
    host = environ.get("HTTP_HOST", "")
    scheme = environ.get("wsgi.url_scheme", "http")
    out = {f"{scheme}://{host}".lower()}
    fwd_host = environ.get("HTTP_X_FORWARDED_HOST", host).split(",")[0].strip()
    fwd_proto = environ.get("HTTP_X_FORWARDED_PROTO", scheme).split(",")[0].strip()
    out.add(f"{fwd_proto}://{fwd_host}".lower())
    return out


def cors_allows(origin: str | None, environ: dict[str, Any], config: ChatConfig) -> bool:
    """Whether a browser page from `origin` may read the chat's answers (CORS, for the HTTP API
    and Socket.IO's handshake): the chat's own origin or one some tenant configured. Which tenant
    the request is for is checked later (check_origin), once its token says."""
    normal = _normal(origin)
    if normal is None:
        return False
    if normal in own_origins(environ):
        return True
    return any(normal in t.allowed_origins for t in config.tenants.values())


def check_origin(environ: dict[str, Any], tenant: str, config: ChatConfig) -> None:
    """Same-origin by default; a tenant's configured origins too. Clients that send no Origin
    (servers, not browsers) are not subject to it: they cannot ride on a visitor's browser."""
    origin = request_origin(environ)
    if origin is None or origin in own_origins(environ):
        return
    if origin in config.tenant(tenant).allowed_origins:
        return
    raise PermissionDenied(f"origin {origin} is not allowed for tenant {tenant}")


class ChatLimits:
    """The chat's abuse limits (docs/chat.md, "Limits"), by who spends: each visitor (all their
    sockets), each client address, each tenant, each agent; the buckets are shared with the
    other replicas through `limiter.share` and `limiter.spent_elsewhere`."""

    def __init__(
        self,
        limits: Limits,
        trusted_proxies: tuple[Network, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trusted_proxies = trusted_proxies
        per_minute = 60.0
        self.limiter = Limiter(
            {
                "messages": Budget(limits.messages_per_second, limits.message_burst, "messages"),
                "signals": Budget(limits.signals_per_second, limits.signal_burst, "signals"),
                "address": Budget(
                    limits.address_messages_per_second,
                    limits.address_message_burst,
                    "messages from your address",
                ),
                "tenant": Budget(
                    limits.tenant_messages_per_second,
                    limits.tenant_message_burst,
                    "messages for this service just now",
                ),
                "agent": Budget(limits.agent_events_per_second, limits.agent_event_burst, "events"),
                "tokens": Budget(
                    limits.visitor_tokens_per_minute / per_minute,
                    max(1, int(limits.visitor_tokens_per_minute)),
                    "new visitors from your address",
                ),
                "uploads": Budget(
                    limits.uploads_per_minute / per_minute,
                    max(1, int(limits.uploads_per_minute)),
                    "uploads",
                ),
            },
            clock,
        )

    def address(self, peer: str, forwarded_for: str = "") -> str:
        """The client's address (X-Forwarded-For believed from trusted proxies only)."""
        return client_address(peer, forwarded_for, self.trusted_proxies)

    def customer(self, kind: str, tenant: str, visitor_id: str, address: str) -> None:
        """A visitor's `kind` ("messages" or "signals"); messages count for the address and
        the tenant too."""
        charges = [(kind, f"{tenant}/{visitor_id}")]
        if kind == "messages":
            charges += [("address", address), ("tenant", tenant)]
        self.limiter.take(charges)

    def agent(self, tenant: str, agent_id: str) -> None:
        self.limiter.take([("agent", f"{tenant}/{agent_id}")])

    def visitor_token(self, address: str) -> None:
        self.limiter.take([("tokens", address)])

    def upload(self, tenant: str, visitor_id: str, address: str) -> None:
        self.limiter.take([("uploads", f"{tenant}/{visitor_id}"), ("uploads", address)])


def environ_address(limits: ChatLimits, environ: dict[str, Any]) -> str:
    """The client's address of a Socket.IO connection (engine.io's WSGI-style environ)."""
    return limits.address(environ.get("REMOTE_ADDR", ""), environ.get("HTTP_X_FORWARDED_FOR", ""))
