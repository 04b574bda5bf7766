"""The Socket.IO server: the /customer namespace for the web-chat widget, the delivery of events
to sockets, and the registration of both namespaces (/agent lives in agent_namespace.py).

Handlers only translate: read the socket event, call the Chat handler in a SERVER span (so the
event published carries the trace), and turn the outcome into an ack. A bad event gets an error
ack, never an exception that reaches python-socketio.

Customer connect: ``auth = {token: <visitor token from POST /api/visitor-token>, name, email,
language, topic, since: <last history seq seen>}``. Refusals (bad/expired token, disallowed
origin, bad field) reach the client's ``connect_error`` with the reason.

Customer events (all acked ``{ok: true, ...}`` or ``{ok: false, error}``): ``message`` {text,
client_id}, ``typing`` {typing}, ``receipt`` {message_id, state}, ``position`` {}, ``end`` {}
(-> {contact_id}: the one ended, null if none was open), ``rate`` {contact_id, score, comment},
``transcript`` {contact_id, email}. Server to customer:
``session``, ``message``, ``status``, ``typing``, ``receipt``, ``error`` {code, message}.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from opentelemetry.trace import SpanKind, Status, StatusCode

from switchboard.chat.config import ChatConfig
from switchboard.chat.domain import visitor_token
from switchboard.chat.domain.model import (
    CustomerProfile,
    MessageTooLarge,
    parse_customer_auth,
    since_seq,
)
from switchboard.chat.domain.rate_limit import Throttled
from switchboard.chat.entrypoints import payloads
from switchboard.chat.entrypoints.agent_namespace import AgentNamespace
from switchboard.chat.entrypoints.rooms import AGENT, CUSTOMER, contact_room, visitor_room
from switchboard.chat.entrypoints.socket_common import (
    INTERNAL_ERROR,
    ChatLimits,
    acked,
    check_origin,
    environ_address,
    refusal,
    tag,
    tracer,
)
from switchboard.chat.handlers import Chat
from switchboard.chat.inbox.service import Inbox
from switchboard.core.auth import Revoked
from switchboard.core.errors import DomainError, InvalidArgument

logger = logging.getLogger(__name__)


class SocketDelivery:
    """Delivery through python-socketio rooms; the client manager carries emits to every replica."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def to_customer(
        self, tenant: str, visitor_id: str, event: str, data: dict[str, Any]
    ) -> None:
        await self.sio.emit(event, data, room=visitor_room(tenant, visitor_id), namespace=CUSTOMER)

    async def to_agents(self, contact_id: str, event: str, data: dict[str, Any]) -> None:
        await self.sio.emit(event, data, room=contact_room(contact_id), namespace=AGENT)


class CustomerNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(
        self,
        chat: Chat,
        secret: str,
        known_tenants: frozenset[str] | None,
        config: ChatConfig,
        limits: ChatLimits,
    ) -> None:
        super().__init__(CUSTOMER)
        self.chat = chat
        self.secret = secret
        self.known_tenants = known_tenants
        self.config = config
        self.limits = limits

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        with tracer.start_as_current_span("chat.customer_connect", kind=SpanKind.SERVER) as span:
            try:
                token = auth.get("token") if isinstance(auth, dict) else None
                if not token or not isinstance(token, str):
                    raise InvalidArgument(
                        "token", "is required (get one from POST /api/visitor-token)"
                    )
                visitor = visitor_token.verify(self.secret, token, self.known_tenants)
                span.set_attribute("switchboard.tenant", visitor.tenant)
                check_origin(environ, visitor.tenant, self.config)
                profile = parse_customer_auth(auth, visitor.tenant, visitor.visitor_id)
                session = await self.chat.customer_session(profile, since_seq(auth))
            except DomainError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise refusal(exc) from None
            except Exception as exc:
                span.record_exception(exc)
                logger.exception("customer connect failed")
                raise socketio.exceptions.ConnectionRefusedError(INTERNAL_ERROR) from None
            address = environ_address(self.limits, environ)
            await self.save_session(sid, {"profile": profile, "address": address})
            await self.enter_room(sid, visitor_room(profile.tenant, profile.visitor_id))
            # Sent before the CONNECT ack: the JS client buffers it until connected.
            await self.emit("session", session.to_wire(), to=sid)
            conversation = session.conversation
            if conversation is not None and conversation.status:
                await self.emit("status", conversation.status, to=sid)

    async def _profile(self, sid: str, kind: str) -> CustomerProfile:
        """The visitor of `sid`, once they have paid for one of `kind` ("messages": messages,
        ratings, transcript requests; "signals": typing, receipts, position queries)."""
        session = await self.get_session(sid)
        profile: CustomerProfile = session["profile"]
        tag(profile.tenant)
        self.limits.customer(kind, profile.tenant, profile.visitor_id, session["address"])
        return profile

    async def _tell(self, sid: str, exc: DomainError) -> None:
        if isinstance(exc, MessageTooLarge | Throttled):
            data: dict[str, Any] = {"code": exc.code, "message": str(exc)}
            if isinstance(exc, Throttled):
                data["retry_after"] = round(exc.retry_after, 2)
            await self.emit("error", data, to=sid)

    async def on_message(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def send() -> dict[str, Any]:
            profile = await self._profile(sid, "messages")
            message = payloads.customer_message(data, self.chat.max_message_bytes)
            sent = await self.chat.customer_message(profile, profile.visitor_id, message)
            return {"ok": True, "message_id": sent.message_id, "contact_id": sent.contact_id}

        return await acked("chat.customer_message", send, lambda e: self._tell(sid, e))

    async def on_typing(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def typing() -> dict[str, Any]:
            await self.chat.customer_typing(
                await self._profile(sid, "signals"), payloads.typing(data)
            )
            return {"ok": True}

        return await acked("chat.customer_typing", typing, lambda e: self._tell(sid, e))

    async def on_receipt(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def receipt() -> dict[str, Any]:
            await self.chat.customer_receipt(
                await self._profile(sid, "signals"), payloads.receipt(data)
            )
            return {"ok": True}

        return await acked("chat.customer_receipt", receipt, lambda e: self._tell(sid, e))

    async def on_position(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def position() -> dict[str, Any]:
            status = await self.chat.queue_position(await self._profile(sid, "signals"))
            return {"ok": True, "status": status}

        return await acked("chat.customer_position", position, lambda e: self._tell(sid, e))

    async def on_end(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def end() -> dict[str, Any]:
            contact_id = await self.chat.customer_end(await self._profile(sid, "messages"))
            return {"ok": True, "contact_id": contact_id}

        return await acked("chat.customer_end", end, lambda e: self._tell(sid, e))

    async def on_rate(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def rate() -> dict[str, Any]:
            rating = payloads.rating(data, self.chat.max_message_bytes)
            await self.chat.rate(await self._profile(sid, "messages"), rating)
            return {"ok": True}

        return await acked("chat.customer_rate", rate, lambda e: self._tell(sid, e))

    async def on_transcript(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def transcript() -> dict[str, Any]:
            request = payloads.transcript_request(data)
            request_id = await self.chat.request_transcript(
                await self._profile(sid, "messages"), request
            )
            return {"ok": True, "request_id": request_id}

        return await acked("chat.customer_transcript", transcript, lambda e: self._tell(sid, e))


def register(
    sio: socketio.AsyncServer,
    chat: Chat,
    secret: str,
    known_tenants: frozenset[str] | None,
    config: ChatConfig,
    inbox: Inbox | None = None,
    token_max_lifetime: int | None = None,
    revocations: Revoked | None = None,
    limits: ChatLimits | None = None,
) -> ChatLimits:
    limits = limits or ChatLimits(config.limits)
    sio.register_namespace(CustomerNamespace(chat, secret, known_tenants, config, limits))
    sio.register_namespace(
        AgentNamespace(
            chat, secret, known_tenants, config, inbox, token_max_lifetime, revocations, limits
        )
    )
    return limits
