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
from switchboard.chat.domain.rate_limit import TokenBucket
from switchboard.core import telemetry
from switchboard.core.errors import DomainError, PermissionDenied

logger = logging.getLogger(__name__)
tracer = telemetry.tracer("switchboard.chat.entrypoints")

INTERNAL_ERROR = "internal error, please try again"


def refusal(exc: Exception) -> socketio.exceptions.ConnectionRefusedError:
    """A refused connection whose message the client sees (`connect_error`)."""
    return socketio.exceptions.ConnectionRefusedError(str(exc))


def tag(tenant: str) -> None:
    trace.get_current_span().set_attribute("switchboard.tenant", tenant)


async def acked(
    span_name: str,
    call: Callable[[], Awaitable[dict[str, Any]]],
    on_error: Callable[[DomainError], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run `call` in a SERVER span and return its ack, or an error ack saying what was wrong."""
    with tracer.start_as_current_span(span_name, kind=SpanKind.SERVER) as span:
        try:
            return await call()
        except DomainError as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            if on_error is not None:
                await on_error(exc)
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            logger.exception("%s failed", span_name)
            return {"ok": False, "error": INTERNAL_ERROR}


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


class SocketLimits:
    """Per-socket token buckets (messages, and cheap signals such as typing and receipts)."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def take(self, sid: str, kind: str) -> None:
        """Spend one `kind` ("messages" or "signals") for `sid`, or raise Throttled."""
        bucket = self._buckets.get((sid, kind))
        if bucket is None:
            lim = self.limits
            rate, burst = (
                (lim.messages_per_second, lim.message_burst)
                if kind == "messages"
                else (lim.signals_per_second, lim.signal_burst)
            )
            bucket = self._buckets[(sid, kind)] = TokenBucket(rate, burst, self.clock)
        bucket.take(kind)

    def forget(self, sid: str) -> None:
        self._buckets.pop((sid, "messages"), None)
        self._buckets.pop((sid, "signals"), None)
