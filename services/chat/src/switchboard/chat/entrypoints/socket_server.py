"""The Socket.IO namespaces: /customer for the web-chat widget, /agent for the agents' inbox.

They only translate: read the socket event, call the Chat handler in a SERVER span (so the
event published carries the trace), and turn the outcome into an ack. A bad event gets an error
ack, never an exception that reaches python-socketio.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from switchboard.chat.domain.model import MessageTooLarge, parse_customer_auth
from switchboard.chat.handlers import Chat
from switchboard.core import auth as sb_auth
from switchboard.core import telemetry
from switchboard.core.errors import DomainError, InvalidArgument, PermissionDenied

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

CUSTOMER = "/customer"
AGENT = "/agent"
INTERNAL_ERROR = "internal error, please try again"


def visitor_room(visitor_id: str) -> str:
    return f"visitor:{visitor_id}"


def contact_room(contact_id: str) -> str:
    return f"contact:{contact_id}"


def agent_room(tenant: str, agent_id: str) -> str:
    return f"agent:{tenant}:{agent_id}"


class SocketDelivery:
    """Delivery through python-socketio rooms on this replica."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def to_contact(
        self, contact_id: str, event: str, data: dict[str, Any], agents: bool = True
    ) -> None:
        room = contact_room(contact_id)
        await self.sio.emit(event, data, room=room, namespace=CUSTOMER)
        if agents:
            await self.sio.emit(event, data, room=room, namespace=AGENT)

    async def join_visitor(self, tenant: str, visitor_id: str, contact_id: str) -> None:
        participants = list(self.sio.manager.get_participants(CUSTOMER, visitor_room(visitor_id)))
        for sid, _ in participants:
            try:
                session = await self.sio.get_session(sid, namespace=CUSTOMER)
            except KeyError:  # disconnected meanwhile
                continue
            # Visitor ids are chosen by clients: never join another tenant's socket.
            if session.get("tenant") == tenant:
                await self.sio.enter_room(sid, contact_room(contact_id), namespace=CUSTOMER)


def _refusal(exc: Exception) -> socketio.exceptions.ConnectionRefusedError:
    return socketio.exceptions.ConnectionRefusedError(str(exc))


def _tag(tenant: str) -> None:
    trace.get_current_span().set_attribute("switchboard.tenant", tenant)


async def _acked(
    span_name: str,
    call: Callable[[], Awaitable[dict[str, Any]]],
    on_error: Callable[[DomainError], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run `call` in a SERVER span and return its ack, or an error ack saying what was wrong."""
    with _tracer.start_as_current_span(span_name, kind=SpanKind.SERVER) as span:
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


class CustomerNamespace(socketio.AsyncNamespace):
    def __init__(self, chat: Chat, known_tenants: frozenset[str] | None) -> None:
        super().__init__(CUSTOMER)
        self.chat = chat
        self.known_tenants = known_tenants

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        with _tracer.start_as_current_span("chat.customer_connect", kind=SpanKind.SERVER) as span:
            try:
                profile = parse_customer_auth(auth, self.known_tenants)
                span.set_attribute("switchboard.tenant", profile.tenant)
                session = await self.chat.customer_session(profile)
            except DomainError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise _refusal(exc) from None
            except Exception as exc:
                span.record_exception(exc)
                logger.exception("customer connect failed")
                raise socketio.exceptions.ConnectionRefusedError(INTERNAL_ERROR) from None
            await self.save_session(
                sid,
                {"tenant": profile.tenant, "profile": profile, "visitor_id": session.visitor_id},
            )
            await self.enter_room(sid, visitor_room(session.visitor_id))
            conversation = session.conversation
            if conversation is not None:
                await self.enter_room(sid, contact_room(conversation.contact_id))
            # Sent before the CONNECT ack: the JS client buffers it until connected.
            await self.emit("session", session.to_wire(), to=sid)
            if conversation is not None and conversation.status:
                await self.emit("status", conversation.status, to=sid)

    async def on_message(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def send() -> dict[str, Any]:
            session = await self.get_session(sid)
            profile = session["profile"]
            _tag(profile.tenant)
            sent = await self.chat.customer_message(profile, session["visitor_id"], data)
            return {"ok": True, "message_id": sent.message_id, "contact_id": sent.contact_id}

        async def tell(exc: DomainError) -> None:
            if isinstance(exc, MessageTooLarge):
                await self.emit("error", {"code": exc.code, "message": str(exc)}, to=sid)

        return await _acked("chat.customer_message", send, tell)


class AgentNamespace(socketio.AsyncNamespace):
    def __init__(self, chat: Chat, secret: str, known_tenants: frozenset[str] | None) -> None:
        super().__init__(AGENT)
        self.chat = chat
        self.secret = secret
        self.known_tenants = known_tenants

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        with _tracer.start_as_current_span("chat.agent_connect", kind=SpanKind.SERVER) as span:
            try:
                token = auth.get("token") if isinstance(auth, dict) else None
                if not token or not isinstance(token, str):
                    raise InvalidArgument("token")
                principal = verify_agent(self.secret, token, self.known_tenants)
            except DomainError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise _refusal(exc) from None
            except Exception as exc:
                span.record_exception(exc)
                logger.exception("agent connect failed")
                raise socketio.exceptions.ConnectionRefusedError(INTERNAL_ERROR) from None
            span.set_attribute("switchboard.tenant", principal.tenant)
            await self.save_session(sid, {"principal": principal})
            await self.enter_room(sid, agent_room(principal.tenant, principal.subject))

    async def _principal(self, sid: str) -> sb_auth.Principal:
        principal: sb_auth.Principal = (await self.get_session(sid))["principal"]
        _tag(principal.tenant)
        return principal

    async def on_join(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def join() -> dict[str, Any]:
            principal = await self._principal(sid)
            conversation = await self.chat.agent_join(principal, data)
            await self.enter_room(sid, contact_room(conversation.contact_id))
            return {
                "ok": True,
                "contact_id": conversation.contact_id,
                "customer_name": conversation.customer_name,
                "language": conversation.language,
                "messages": conversation.history(),
            }

        return await _acked("chat.agent_join", join)

    async def on_message(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def send() -> dict[str, Any]:
            sent = await self.chat.agent_message(await self._principal(sid), data)
            return {"ok": True, "message_id": sent.message_id}

        async def tell(exc: DomainError) -> None:
            if isinstance(exc, MessageTooLarge):
                await self.emit("error", {"code": exc.code, "message": str(exc)}, to=sid)

        return await _acked("chat.agent_message", send, tell)


def verify_agent(
    secret: str, token: str, known_tenants: frozenset[str] | None
) -> sb_auth.Principal:
    """Verify an agent's token; only agents and supervisors use the inbox."""
    principal = sb_auth.verify(secret, token, known_tenants)
    if not principal.has_any("agent", "supervisor"):
        raise PermissionDenied("the agent inbox needs the agent or supervisor role")
    return principal


def register(
    sio: socketio.AsyncServer, chat: Chat, secret: str, known_tenants: frozenset[str] | None
) -> None:
    sio.register_namespace(CustomerNamespace(chat, known_tenants))
    sio.register_namespace(AgentNamespace(chat, secret, known_tenants))
