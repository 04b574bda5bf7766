"""The chat's application layer: what customers and agents may do, and what the bus tells us.

Socket handlers call the command methods; the bus consumer calls the ``on_*`` methods. Messages
reach sockets only from the consumer (through ``Delivery``), so any replica can deliver them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from switchboard.chat.adapters.conversations import ConversationStore
from switchboard.chat.domain.model import (
    AuthorName,
    ChatMessage,
    Conversation,
    CustomerProfile,
    check_text,
    initial_message_id,
    not_assigned,
    required_str,
)
from switchboard.chat.notifier import ChatNotifier
from switchboard.core.auth import Principal
from switchboard.core.errors import FailedPrecondition
from switchboard.v1 import contact_pb2, events_pb2

logger = logging.getLogger(__name__)

AUTHORS: dict[int, AuthorName] = {
    contact_pb2.AUTHOR_CUSTOMER: "customer",
    contact_pb2.AUTHOR_AGENT: "agent",
    contact_pb2.AUTHOR_SYSTEM: "system",
}


class Delivery(Protocol):
    """Pushes events to the sockets connected to this replica."""

    async def to_contact(
        self, contact_id: str, event: str, data: dict[str, Any], agents: bool = True
    ) -> None:
        """Emit to the contact's room of customers (and of agents, when `agents`)."""
        ...

    async def join_visitor(self, tenant: str, visitor_id: str, contact_id: str) -> None:
        """Put every socket of the visitor into the contact's room."""
        ...


@dataclass(frozen=True)
class Session:
    visitor_id: str
    conversation: Conversation | None

    def to_wire(self) -> dict[str, Any]:
        c = self.conversation
        return {
            "visitor_id": self.visitor_id,
            "contact_id": c.contact_id if c else None,
            "messages": c.history() if c else [],
        }


@dataclass(frozen=True)
class Sent:
    message_id: str
    contact_id: str


def _now() -> datetime:
    return datetime.now(UTC)


def _text_of(parts: Any) -> str:
    return "\n".join(p.text for p in parts if p.content_type in ("", "text/plain"))


class Chat:
    def __init__(
        self,
        store: ConversationStore,
        notifier: ChatNotifier,
        delivery: Delivery,
        max_message_bytes: int,
        assignment_wait: float = 5.0,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.delivery = delivery
        self.max_message_bytes = max_message_bytes
        self.assignment_wait = assignment_wait
        # One lock per visitor, so two quick first messages create one contact, not two.
        self._visitor_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._assignment_waiters: dict[tuple[str, str], set[asyncio.Future[None]]] = {}

    # ---- customers -----------------------------------------------------------------------------

    async def customer_session(self, profile: CustomerProfile) -> Session:
        """The visitor's identity (a new one if the widget has none) and open conversation."""
        visitor_id = profile.visitor_id or uuid.uuid4().hex
        conversation = await self.store.open_for_visitor(profile.tenant, visitor_id)
        return Session(visitor_id, conversation)

    async def customer_message(self, profile: CustomerProfile, visitor_id: str, data: Any) -> Sent:
        """Publish a customer's message: the first one creates the contact."""
        text = check_text(data, self.max_message_bytes)
        key = (profile.tenant, visitor_id)
        lock = self._visitor_locks.get(key)
        if lock is None:
            lock = self._visitor_locks[key] = asyncio.Lock()
        async with lock:
            conversation = await self.store.open_for_visitor(profile.tenant, visitor_id)
            now = _now()
            if conversation is None:
                return await self._create_contact(profile, visitor_id, text, now)
            message_id = uuid.uuid4().hex
            await self.notifier.message_added(
                profile.tenant,
                conversation.contact_id,
                message_id,
                contact_pb2.AUTHOR_CUSTOMER,
                text,
                now,
            )
            return Sent(message_id, conversation.contact_id)

    async def _create_contact(
        self, profile: CustomerProfile, visitor_id: str, text: str, now: datetime
    ) -> Sent:
        contact_id = uuid.uuid4().hex
        conversation = Conversation(
            tenant=profile.tenant,
            contact_id=contact_id,
            visitor_id=visitor_id,
            customer_name=profile.name,
            language=profile.language,
        )
        # Known (and the visitor's sockets in its room) before the router can answer.
        await self.store.add(conversation)
        await self.delivery.join_visitor(profile.tenant, visitor_id, contact_id)
        try:
            await self.notifier.contact_created(contact_id, profile, visitor_id, text, now)
        except BaseException:
            await self.store.discard(profile.tenant, contact_id)
            raise
        logger.info("chat contact %s created", contact_id)
        return Sent(initial_message_id(contact_id), contact_id)

    # ---- agents --------------------------------------------------------------------------------

    async def agent_join(self, agent: Principal, data: Any) -> Conversation:
        """The conversation assigned to `agent`, waiting briefly for an assignment in flight."""
        contact_id = required_str(data, "contact_id")
        conversation = await self._wait_assigned(agent.tenant, contact_id, agent.subject)
        if conversation is None:
            raise not_assigned(contact_id)
        return conversation

    async def agent_message(self, agent: Principal, data: Any) -> Sent:
        """Publish an agent's reply to a contact assigned to them."""
        contact_id = required_str(data, "contact_id")
        text = check_text(data, self.max_message_bytes)
        conversation = await self.store.get(agent.tenant, contact_id)
        if conversation is None or not conversation.assigned_to(agent.subject):
            raise not_assigned(contact_id)
        if conversation.ended:
            raise FailedPrecondition(f"contact {contact_id} has ended")
        message_id = uuid.uuid4().hex
        await self.notifier.message_added(
            agent.tenant,
            contact_id,
            message_id,
            contact_pb2.AUTHOR_AGENT,
            text,
            _now(),
            agent_id=agent.subject,
        )
        return Sent(message_id, contact_id)

    async def _wait_assigned(
        self, tenant: str, contact_id: str, agent_id: str
    ) -> Conversation | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.assignment_wait
        key = (tenant, contact_id)
        while True:
            # Register before looking, so an assignment consumed in between still wakes us.
            waiter: asyncio.Future[None] = loop.create_future()
            self._assignment_waiters.setdefault(key, set()).add(waiter)
            try:
                conversation = await self.store.get(tenant, contact_id)
                if conversation is not None and conversation.assigned_to(agent_id):
                    return conversation
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(waiter, remaining)
                except TimeoutError:
                    return None
            finally:
                waiters = self._assignment_waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._assignment_waiters[key]

    def _wake(self, tenant: str, contact_id: str) -> None:
        for waiter in self._assignment_waiters.get((tenant, contact_id), ()):
            if not waiter.done():
                waiter.set_result(None)

    # ---- events from the bus -------------------------------------------------------------------

    async def on_contact_created(self, event: events_pb2.ContactCreated) -> None:
        contact = event.contact
        if event.meta.channel != contact_pb2.CHANNEL_CHAT:
            return
        tenant, contact_id = event.meta.tenant, contact.contact_id
        message = ChatMessage(
            message_id=initial_message_id(contact_id),
            contact_id=contact_id,
            author="customer",
            text=_text_of(contact.content),
            sent_at=contact.created_at.ToDatetime(tzinfo=UTC),
        )
        await self._deliver(tenant, message)

    async def on_message_added(self, event: events_pb2.MessageAdded) -> None:
        if event.meta.channel != contact_pb2.CHANNEL_CHAT:
            return
        m, tenant = event.message, event.meta.tenant
        conversation = await self.store.get(tenant, m.contact_id)
        if conversation is None:
            return
        author = AUTHORS.get(m.author, "system")
        agent_name = None
        if author == "agent":
            same_agent = m.agent_id == conversation.agent_id
            agent_name = (conversation.agent_name or None) if same_agent else None
        message = ChatMessage(
            message_id=m.message_id or event.meta.event_id,
            contact_id=m.contact_id,
            author=author,
            text=_text_of(m.parts),
            sent_at=m.sent_at.ToDatetime(tzinfo=UTC) if m.HasField("sent_at") else _now(),
            agent_id=m.agent_id,
            agent_name=agent_name,
        )
        await self._deliver(tenant, message)

    async def _deliver(self, tenant: str, message: ChatMessage) -> None:
        # Idempotent: a redelivered event is already in the history and is not emitted twice.
        if await self.store.append(tenant, message.contact_id, message):
            await self.delivery.to_contact(message.contact_id, "message", message.to_wire())

    async def on_contact_queued(self, event: events_pb2.ContactQueued) -> None:
        status = {"state": "queued", "position": int(event.position)}
        await self._status(event.meta.tenant, event.contact_id, status)

    async def on_contact_assigned(self, event: events_pb2.ContactAssigned) -> None:
        tenant, contact_id = event.meta.tenant, event.contact_id
        conversation = await self.store.assign(tenant, contact_id, event.agent_id, event.agent_name)
        if conversation is None:
            return
        logger.info("chat contact %s assigned to %s", contact_id, event.agent_id)
        self._wake(tenant, contact_id)
        status = {"state": "assigned", "agent_name": event.agent_name}
        await self._status(tenant, contact_id, status)

    async def on_contact_ended(self, event: events_pb2.ContactEnded) -> None:
        await self._end(event.meta.tenant, event.meta.channel, event.contact_id)

    async def on_contact_abandoned(self, event: events_pb2.ContactAbandoned) -> None:
        await self._end(event.meta.tenant, event.meta.channel, event.contact_id)

    async def _end(self, tenant: str, channel: int, contact_id: str) -> None:
        if channel != contact_pb2.CHANNEL_CHAT:
            return
        if await self.store.end(tenant, contact_id) is not None:
            await self.delivery.to_contact(contact_id, "status", {"state": "ended"})

    async def _status(self, tenant: str, contact_id: str, status: dict[str, Any]) -> None:
        if await self.store.set_status(tenant, contact_id, status) is not None:
            await self.delivery.to_contact(contact_id, "status", status, agents=False)
