"""The chat's application layer: what customers and agents may do, and what the bus tells us.

Socket handlers and HTTP routes call the command methods; the bus consumer calls ``on_*``.
A message sent here reaches the other side (through ``Delivery``, whose emits cross replicas over
the NATS client manager) before it is made durable: its publish and its history append are
awaited after that, in parallel, and the sender is answered once both are done. A message sent
elsewhere reaches sockets from the consumer, after the durable history has stored it.

Internal API for the agent side (the /agent namespace and the inbox call these; every one checks
that the contact is assigned to the agent and raises a ``DomainError`` otherwise):

- ``await chat.send_agent_message(tenant, contact_id, agent_id, text) -> Sent`` publishes an
  agent's reply (MessageAdded); it reaches the customer and the agent's room as a ``message``.
- ``await chat.agent_typing(tenant, contact_id, agent_id, typing: bool)`` -> customer ``typing``.
- ``await chat.agent_receipt(tenant, contact_id, agent_id, message_id, "delivered"|"read")`` ->
  customer ``receipt``.
- ``await chat.conversation_for_agent(tenant, contact_id, agent_id) -> Conversation`` with its
  messages (``conversation.history()`` is the wire form).
- ``agent_join(principal, data)`` / ``agent_message(principal, data)``: the same, from a socket
  event's payload.

Events emitted to the /agent room ``contact:<contact_id>``: ``message`` (ChatMessage.to_wire),
``typing`` {contact_id, author: "customer", typing}, ``receipt`` {contact_id, message_id,
state, by: "customer"}, ``status`` {contact_id, state: "ended"}, ``rated`` {contact_id, score}.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from switchboard.chat.adapters.conversations import ConversationStore
from switchboard.chat.adapters.router_client import RouterClient
from switchboard.chat.config import ChatConfig
from switchboard.chat.domain.commands import (
    AgentMessage,
    CustomerMessage,
    Rating,
    Receipt,
    TranscriptRequest,
)
from switchboard.chat.domain.model import (
    RECEIPT_STATES,
    AuthorName,
    ChatMessage,
    Conversation,
    CustomerProfile,
    check_text,
    initial_message_id,
    not_assigned,
)
from switchboard.chat.notifier import DEFAULT_QUEUE, ChatNotifier, message_event
from switchboard.core import events
from switchboard.core.auth import Principal
from switchboard.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from switchboard.v1 import case_events_pb2, contact_pb2, events_pb2

logger = logging.getLogger(__name__)

AUTHORS: dict[int, AuthorName] = {
    contact_pb2.AUTHOR_CUSTOMER: "customer",
    contact_pb2.AUTHOR_AGENT: "agent",
    contact_pb2.AUTHOR_SYSTEM: "system",
}


# How many messages a replica remembers having stored and shown itself (one the bus brings back
# after that many others is looked up in the history, where it is found stored).
RECENT_MESSAGES = 100_000
# A message already shown to the other side is published again this many times in all (the same
# event id: JetStream stores it once) before its sender is told that it failed.
PUBLISH_ATTEMPTS = 3
PUBLISH_RETRY_DELAY = 0.25  # seconds before the first retry, doubled before each further one


class RecentIds:
    """The last `keep` ids added."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._ids: dict[str, None] = {}

    def add(self, item: str) -> None:
        self._ids[item] = None
        if len(self._ids) > self.keep:
            del self._ids[next(iter(self._ids))]

    def discard(self, item: str) -> None:
        self._ids.pop(item, None)

    def __contains__(self, item: str) -> bool:
        return item in self._ids


class Delivery(Protocol):
    """Pushes events to sockets on every replica."""

    async def to_customer(
        self, tenant: str, visitor_id: str, event: str, data: dict[str, Any]
    ) -> None:
        """Emit to every socket of the visitor."""
        ...

    async def to_agents(self, contact_id: str, event: str, data: dict[str, Any]) -> None:
        """Emit to the agents' room of the contact."""
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
            "agent_name": (c.agent_name or None) if c else None,
            "messages": c.history() if c else [],
            "receipts": (c.receipts.get("agent") or {}) if c else {},
        }


@dataclass(frozen=True)
class Sent:
    message_id: str
    contact_id: str


def _now() -> datetime:
    return datetime.now(UTC)


def _text_of(parts: Any) -> str:
    return "\n".join(p.text for p in parts if p.content_type in ("", "text/plain"))


def file_url(tenant: str, object_name: str, filename: str) -> str:
    """Where an uploaded file is served back (see entrypoints/api.py)."""
    from urllib.parse import quote

    return f"/files/{tenant}/{object_name.rsplit('/', 1)[-1]}/{quote(filename, safe='')}"


def client_message_id(tenant: str, visitor_id: str, client_id: str) -> str:
    """A message id derived from the widget's own id, so a message re-sent after a network drop
    is the same message (de-duplicated) rather than a second one."""
    return events.derived_id(tenant, visitor_id, client_id)


class Chat:
    def __init__(
        self,
        store: ConversationStore,
        notifier: ChatNotifier,
        delivery: Delivery,
        max_message_bytes: int,
        assignment_wait: float = 5.0,
        router: RouterClient | None = None,
        config: ChatConfig | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.delivery = delivery
        self.max_message_bytes = max_message_bytes
        self.assignment_wait = assignment_wait
        self.router = router
        self.config = config or ChatConfig()
        # One lock per visitor, so two quick first messages create one contact, not two.
        self._visitor_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._assignment_waiters: dict[tuple[str, str], set[asyncio.Future[None]]] = {}
        self._background: set[asyncio.Future[None]] = set()
        # Contacts this replica announced whose record does not say so yet.
        self._announcing: set[tuple[str, str]] = set()
        # Messages this replica has stored in the history and shown: when the bus brings them
        # back there is nothing left to do (no record to read, no duplicate to append).
        self._done = RecentIds(RECENT_MESSAGES)
        # Messages this replica showed to the other side before storing them: not again.
        self._shown = RecentIds(RECENT_MESSAGES)

    # ---- customers -----------------------------------------------------------------------------

    async def customer_session(self, profile: CustomerProfile, since_seq: int = 0) -> Session:
        """The visitor's open conversation, with the messages stored after `since_seq`."""
        conversation = await self.store.open_for_visitor(profile.tenant, profile.visitor_id)
        if conversation is not None:
            conversation.messages = await self.store.history(
                profile.tenant, conversation.contact_id, since_seq
            )
        return Session(profile.visitor_id, conversation)

    async def customer_message(
        self, profile: CustomerProfile, visitor_id: str, command: CustomerMessage
    ) -> Sent:
        """Publish a customer's message: the first one creates the contact."""
        text, client_id = command.text, command.client_id
        async with self._lock(profile.tenant, visitor_id):
            conversation = await self.store.open_for_visitor(profile.tenant, visitor_id)
            now = _now()
            if conversation is None:
                return await self._create_contact(profile, visitor_id, text, now)
            key = (profile.tenant, conversation.contact_id)
            if conversation.opening is not None and key not in self._announcing:
                await self._announce(profile, conversation)
            message_id = (
                client_message_id(profile.tenant, visitor_id, client_id)
                if client_id
                else uuid.uuid4().hex
            )
            await self._publish_and_show(
                message_event(
                    profile.tenant,
                    conversation.contact_id,
                    message_id,
                    contact_pb2.AUTHOR_CUSTOMER,
                    text,
                    now,
                ),
                conversation,
            )
            return Sent(message_id, conversation.contact_id)

    async def _publish_and_show(
        self, event: events_pb2.MessageAdded, conversation: Conversation
    ) -> None:
        """Show a message to the other side (the agents of a customer's message, the customer of
        an agent's) at once, then publish it and store it in the history in parallel; the
        sender's own sockets show it once stored (with its seq, from which a widget resumes).

        The sender learns the outcome from the publish: the call returns once JetStream has
        stored the event, and raises if it could not (the same message id sent again is a
        duplicate). A failed publish of a message the other side has seen is tried again, with
        the same event id, before the sender is told. The bus's own delivery of the event later
        finds it in the history; one whose history append failed here is stored then, and shown
        to the sender's side only. Which replica's consumer the bus gives it to, and whether
        that is before this replica's append, is not known: the event says the other side was
        shown, so that a replica storing it first shows it to the sender's side only."""
        tenant = event.meta.tenant
        message = self._chat_message(event, conversation)
        shown = self._show_other_side(tenant, message, conversation)
        event.shown_to_other_side = await self._show_now(shown, message)
        stored = asyncio.ensure_future(
            self._show_now(self._deliver(tenant, message, conversation), message)
        )
        try:
            await self._publish(event)
        finally:
            await stored

    async def _publish(self, event: events_pb2.MessageAdded) -> None:
        delay = PUBLISH_RETRY_DELAY
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await self.notifier.publish(event)
                return
            except Exception as exc:
                if attempt == PUBLISH_ATTEMPTS:
                    raise
                logger.warning(
                    "chat message %s: publish failed (%r), trying again",
                    event.message.message_id,
                    exc,
                )
            await asyncio.sleep(delay)
            delay *= 2

    async def _show_other_side(
        self, tenant: str, message: ChatMessage, conversation: Conversation
    ) -> None:
        """Emit a message not stored yet (seq 0) to the side that did not write it, once. One
        whose emit failed is left to be shown when it is stored."""
        key = f"{tenant}/{message.message_id}"
        if key in self._shown or key in self._done:
            return
        self._shown.add(key)
        wire = message.to_wire()
        try:
            if message.author == "customer":
                await self.delivery.to_agents(message.contact_id, "message", wire)
            else:
                await self.delivery.to_customer(tenant, conversation.visitor_id, "message", wire)
        except BaseException:
            self._shown.discard(key)
            raise

    async def _show_now(self, showing: Awaitable[None], message: ChatMessage) -> bool:
        """Show a message while it is being published: False if that failed, and the bus shows
        it later."""
        try:
            await showing
        except Exception:
            logger.warning("chat message %s shown late", message.message_id, exc_info=True)
            return False
        return True

    def _lock(self, tenant: str, visitor_id: str) -> asyncio.Lock:
        key = (tenant, visitor_id)
        lock = self._visitor_locks.get(key)
        if lock is None:
            lock = self._visitor_locks[key] = asyncio.Lock()
        return lock

    async def _create_contact(
        self,
        profile: CustomerProfile,
        visitor_id: str,
        text: str,
        now: datetime,
        offline: bool = False,
    ) -> Sent:
        contact_id = uuid.uuid4().hex
        conversation = Conversation(
            tenant=profile.tenant,
            contact_id=contact_id,
            visitor_id=visitor_id,
            customer_name=profile.name,
            language=profile.language,
            email=profile.email,
            topic=profile.topic,
            ended=offline,
            opening=text,
            opened_at=now.isoformat(),
        )
        shown: asyncio.Future[bool] | None = None
        if not offline:
            await self.store.add(conversation)
            # The first message shows at once, as every later one does, while JetStream stores
            # the ContactCreated (the bus's delivery of it later finds it in the history).
            first = ChatMessage(
                message_id=initial_message_id(contact_id),
                contact_id=contact_id,
                author="customer",
                text=text,
                sent_at=now,
            )
            shown = asyncio.ensure_future(
                self._show_now(self._deliver(profile.tenant, first, conversation), first)
            )
        try:
            await self.notifier.contact_created(contact_id, profile, visitor_id, text, now, offline)
        except BaseException:
            if not offline:
                with contextlib.suppress(Exception):  # if NATS is away, the marker stays
                    await self.store.discard(profile.tenant, contact_id)
            raise
        finally:
            if shown is not None:
                await shown
        if not offline:
            # Known here at once; in the record (for other replicas) a moment later.
            self._announcing.add((profile.tenant, contact_id))
            self._later(self._announced(profile.tenant, contact_id))
        logger.info("chat contact %s created%s", contact_id, " (offline)" if offline else "")
        return Sent(initial_message_id(contact_id), contact_id)

    async def _announce(self, profile: CustomerProfile, conversation: Conversation) -> None:
        """Publish the ContactCreated of a conversation whose first publish had an unknown
        outcome (its record was written, the reply timed out): the same event id, so JetStream
        drops it if it was stored after all."""
        opened = (
            datetime.fromisoformat(conversation.opened_at) if conversation.opened_at else _now()
        )
        await self.notifier.contact_created(
            conversation.contact_id,
            profile,
            conversation.visitor_id,
            conversation.opening or "",
            opened,
        )
        logger.info("chat contact %s announced again", conversation.contact_id)
        await self._announced(profile.tenant, conversation.contact_id)

    async def _announced(self, tenant: str, contact_id: str) -> None:
        def done(c: Conversation) -> None:
            c.opening, c.opened_at = None, ""

        try:
            await self.store.update(tenant, contact_id, done)
        except Exception:  # another replica may announce it again (a duplicate JetStream drops)
            logger.warning("chat contact %s: could not mark it announced", contact_id)
        else:
            self._announcing.discard((tenant, contact_id))

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def offline_message(self, profile: CustomerProfile, text: str) -> Sent:
        """A message left while nobody can answer: a contact to be answered by email."""
        if not profile.email:
            raise InvalidArgument("email", "is required for an offline message")
        return await self._create_contact(profile, profile.visitor_id, text, _now(), offline=True)

    async def customer_attachment(
        self, profile: CustomerProfile, ref: contact_pb2.AttachmentRef, caption: str = ""
    ) -> Sent:
        """Publish an uploaded file as a customer message of the visitor's open contact."""
        conversation = await self.store.open_for_visitor(profile.tenant, profile.visitor_id)
        if conversation is None:
            raise FailedPrecondition("start the chat with a message before sending a file")
        message_id = uuid.uuid4().hex
        await self._publish_and_show(
            message_event(
                profile.tenant,
                conversation.contact_id,
                message_id,
                contact_pb2.AUTHOR_CUSTOMER,
                caption,
                _now(),
                attachment=ref,
            ),
            conversation,
        )
        return Sent(message_id, conversation.contact_id)

    async def _open(self, profile: CustomerProfile) -> Conversation:
        conversation = await self.store.open_for_visitor(profile.tenant, profile.visitor_id)
        if conversation is None:
            raise FailedPrecondition("no open chat")
        return conversation

    async def customer_typing(self, profile: CustomerProfile, typing: bool) -> None:
        conversation = await self._open(profile)
        await self.delivery.to_agents(
            conversation.contact_id,
            "typing",
            {"contact_id": conversation.contact_id, "author": "customer", "typing": typing},
        )

    async def customer_receipt(self, profile: CustomerProfile, receipt: Receipt) -> None:
        message_id, state = receipt.message_id, receipt.state
        conversation = await self._open(profile)
        await self._record_receipt(
            profile.tenant, conversation.contact_id, "customer", message_id, state
        )
        await self.delivery.to_agents(
            conversation.contact_id,
            "receipt",
            {
                "contact_id": conversation.contact_id,
                "message_id": message_id,
                "state": state,
                "by": "customer",
            },
        )

    async def _record_receipt(
        self, tenant: str, contact_id: str, side: str, message_id: str, state: str
    ) -> None:
        def mark(c: Conversation) -> None:
            c.receipts.setdefault(side, {})[state] = message_id
            if state == "read":  # read implies delivered
                c.receipts[side]["delivered"] = message_id

        await self.store.update(tenant, contact_id, mark)

    async def customer_end(self, profile: CustomerProfile) -> str | None:
        """The customer ends their open chat: published as the channel's end (ContactEnded,
        customer left, once an agent has it; ContactAbandoned while it waits), so the router
        frees the agent into wrap-up and the agent sees it ended. The contact ended, or None
        when nothing was open."""
        async with self._lock(profile.tenant, profile.visitor_id):
            conversation = await self.store.open_for_visitor(profile.tenant, profile.visitor_id)
            if conversation is None:
                return None
            contact_id = conversation.contact_id
            history = await self.store.history(profile.tenant, contact_id)
            waited = (_now() - history[0].sent_at).total_seconds() if history else 0.0
            where = await self.router.position(profile.tenant, contact_id) if self.router else None
            await self.notifier.customer_left(
                profile.tenant,
                contact_id,
                conversation.agent_id,
                (where.queue if where else "") or DEFAULT_QUEUE,
                waited,
            )
            # Shown now; the bus's delivery of the event finds it ended already.
            await self._end(profile.tenant, contact_pb2.CHANNEL_CHAT, contact_id)
            return contact_id

    async def _visitors_contact(self, profile: CustomerProfile, contact_id: str) -> Conversation:
        """The contact `contact_id` if it is this visitor's (open or ended)."""
        conversation = await self.store.get(profile.tenant, contact_id)
        if conversation is None or conversation.visitor_id != profile.visitor_id:
            raise InvalidArgument("contact_id", "is not one of your chats")
        return conversation

    async def rate(self, profile: CustomerProfile, rating: Rating) -> None:
        """The customer's satisfaction rating (1-5, once per contact)."""
        conversation = await self._visitors_contact(profile, rating.contact_id)
        score, comment = rating.score, rating.comment
        if conversation.rated:
            raise FailedPrecondition("this chat has already been rated")
        await self.notifier.satisfaction_rated(
            profile.tenant, conversation.contact_id, score, comment
        )

        def rated(c: Conversation) -> None:
            c.rated = True
            c.rating = score

        await self.store.update(profile.tenant, conversation.contact_id, rated)
        await self.delivery.to_agents(
            conversation.contact_id,
            "rated",
            {"contact_id": conversation.contact_id, "score": score},
        )

    async def request_transcript(self, profile: CustomerProfile, request: TranscriptRequest) -> str:
        """Ask the email channel to send the conversation to the customer, at the address of
        the pre-chat form: the only one the chat knows is the customer's, so that nobody can
        have a conversation (or mail in its name) sent to someone else."""
        conversation = await self._visitors_contact(profile, request.contact_id)
        if not profile.email:
            raise FailedPrecondition(
                "give your email address before the chat to receive its transcript"
            )
        email = profile.email
        if request.email and request.email.strip().lower() != email.lower():
            raise PermissionDenied("a transcript is sent only to the address given before the chat")
        messages = await self.store.history(profile.tenant, conversation.contact_id)
        lines = []
        for m in messages:
            who = {
                "customer": conversation.customer_name or "You",
                "agent": m.agent_name or "Agent",
            }.get(m.author, "Switchboard")
            body = m.text or (f"[file: {m.attachment.get('filename')}]" if m.attachment else "")
            lines.append(f"[{m.sent_at:%Y-%m-%d %H:%M} UTC] {who}: {body}")
        request_id = uuid.uuid4().hex
        await self.notifier.transcript_requested(
            profile.tenant,
            conversation.contact_id,
            request_id,
            email.strip().lower(),
            "Your chat transcript",
            "\n".join(lines) + "\n",
        )
        return request_id

    async def queue_position(self, profile: CustomerProfile) -> dict[str, Any] | None:
        """The visitor's place in the queue: the router's answer, else the last event's."""
        conversation = await self.store.open_for_visitor(profile.tenant, profile.visitor_id)
        if conversation is None:
            return None
        status = dict(conversation.status or {})
        if status.get("state") not in (None, "queued"):
            return status
        p = (
            await self.router.position(profile.tenant, conversation.contact_id)
            if self.router
            else None
        )
        if p is not None and p.position > 0:
            status = {"state": "queued", "position": p.position, "waiting": p.waiting}
            # An estimate only from the queue's measured speed of answer with agents at work:
            # otherwise the router's figure is a guess, and the position is all.
            if (
                p.estimated_wait_seconds is not None
                and self.router is not None
                and await self.router.wait_is_measured(profile.tenant, p.queue)
            ):
                status["estimated_wait_seconds"] = p.estimated_wait_seconds
        return status or None

    async def availability(
        self, tenant: str, language: str, now: datetime | None = None
    ) -> dict[str, Any]:
        """Whether a chat can be answered now: within opening hours and with a signed-in agent
        who speaks `language`. A router that cannot tell counts as available."""
        hours = self.config.tenant(tenant).hours
        if hours is not None and not hours.is_open(now or _now()):
            return {"available": False, "reason": "closed"}
        if self.router is not None and await self.router.agents_for(tenant, language) is False:
            return {"available": False, "reason": "no_agent"}
        return {"available": True, "reason": None}

    # ---- agents --------------------------------------------------------------------------------

    async def agent_join(self, agent: Principal, contact_id: str) -> Conversation:
        """The conversation assigned to `agent`, waiting briefly for an assignment in flight.
        An ended one is theirs to read (and to see rated) until they wrap it up; sending to it
        is refused."""
        conversation = await self._wait_assigned(agent.tenant, contact_id, agent.subject)
        if conversation is None:
            raise not_assigned(contact_id)
        conversation.messages = await self.store.history(agent.tenant, contact_id)
        return conversation

    async def conversation_for_agent(
        self, tenant: str, contact_id: str, agent_id: str
    ) -> Conversation:
        conversation = await self._assigned(tenant, contact_id, agent_id)
        conversation.messages = await self.store.history(tenant, contact_id)
        return conversation

    async def _assigned(self, tenant: str, contact_id: str, agent_id: str) -> Conversation:
        """The conversation assigned to `agent_id`. An agent acts as soon as the router accepted
        their offer, which can be before this service consumed the ContactAssigned: an
        assignment in flight is waited for briefly, as a join waits for it."""
        conversation = await self._wait_assigned(tenant, contact_id, agent_id)
        if conversation is None:
            raise not_assigned(contact_id)
        return conversation

    async def agent_message(self, agent: Principal, message: AgentMessage) -> Sent:
        """Publish an agent's reply to a contact assigned to them."""
        return await self.send_agent_message(
            agent.tenant, message.contact_id, agent.subject, message.text
        )

    async def send_agent_message(
        self, tenant: str, contact_id: str, agent_id: str, text: str
    ) -> Sent:
        """Publish `text` from `agent_id` to the customer of `contact_id` (assigned to them)."""
        text = check_text({"text": text}, self.max_message_bytes)
        conversation = await self._assigned(tenant, contact_id, agent_id)
        if conversation.ended:
            raise FailedPrecondition(f"contact {contact_id} has ended")
        message_id = uuid.uuid4().hex
        await self._publish_and_show(
            message_event(
                tenant, contact_id, message_id, contact_pb2.AUTHOR_AGENT, text, _now(), agent_id
            ),
            conversation,
        )
        return Sent(message_id, contact_id)

    async def agent_typing(self, tenant: str, contact_id: str, agent_id: str, typing: bool) -> None:
        conversation = await self._assigned(tenant, contact_id, agent_id)
        await self.delivery.to_customer(
            tenant,
            conversation.visitor_id,
            "typing",
            {"contact_id": contact_id, "author": "agent", "typing": bool(typing)},
        )

    async def agent_receipt(
        self, tenant: str, contact_id: str, agent_id: str, message_id: str, state: str
    ) -> None:
        if state not in RECEIPT_STATES:
            raise InvalidArgument("state", "must be delivered or read")
        conversation = await self._assigned(tenant, contact_id, agent_id)
        await self._record_receipt(tenant, contact_id, "agent", message_id, state)
        await self.delivery.to_customer(
            tenant,
            conversation.visitor_id,
            "receipt",
            {"contact_id": contact_id, "message_id": message_id, "state": state, "by": "agent"},
        )

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
                    # Another replica may consume the assignment: look again now and then.
                    await asyncio.wait_for(waiter, min(remaining, 0.25))
                except TimeoutError:
                    pass
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
        if f"{tenant}/{initial_message_id(contact_id)}" in self._done:
            return
        message = ChatMessage(
            message_id=initial_message_id(contact_id),
            contact_id=contact_id,
            author="customer",
            text=_text_of(contact.content),
            sent_at=contact.created_at.ToDatetime(tzinfo=UTC),
        )
        await self._deliver(tenant, message)

    async def on_message_added(
        self, event: events_pb2.MessageAdded, conversation: Conversation | None = None
    ) -> None:
        if event.meta.channel != contact_pb2.CHANNEL_CHAT:
            return
        m, tenant = event.message, event.meta.tenant
        if conversation is None:
            if f"{tenant}/{m.message_id or event.meta.event_id}" in self._done:
                return
            conversation = await self.store.get(tenant, m.contact_id)
        if conversation is None:
            return
        message = self._chat_message(event, conversation)
        await self._deliver(tenant, message, conversation, event.shown_to_other_side)

    @staticmethod
    def _chat_message(event: events_pb2.MessageAdded, conversation: Conversation) -> ChatMessage:
        m, tenant = event.message, event.meta.tenant
        author = AUTHORS.get(m.author, "system")
        agent_name = None
        if author == "agent":
            same_agent = m.agent_id == conversation.agent_id
            agent_name = (conversation.agent_name or None) if same_agent else None
        attachment = None
        if m.attachments:
            a = m.attachments[0]
            attachment = {
                "url": file_url(tenant, a.object_name, a.filename),
                "filename": a.filename,
                "content_type": a.content_type,
                "size": int(a.size_bytes),
            }
        return ChatMessage(
            message_id=m.message_id or event.meta.event_id,
            contact_id=m.contact_id,
            author=author,
            text=_text_of(m.parts),
            sent_at=m.sent_at.ToDatetime(tzinfo=UTC) if m.HasField("sent_at") else _now(),
            agent_id=m.agent_id,
            agent_name=agent_name,
            attachment=attachment,
        )

    async def _deliver(
        self,
        tenant: str,
        message: ChatMessage,
        conversation: Conversation | None = None,
        shown: bool = False,
    ) -> None:
        """Store `message` in the history and show it with its seq: to both sides, or to the
        sender's side only when the other side was `shown` it before (here or on the replica
        it was sent on)."""
        # Idempotent: a redelivered event is already in the history and is not emitted twice.
        stored = await self.store.append(tenant, message.contact_id, message, conversation)
        if conversation is not None:  # stored now or before: in the history either way
            self._done.add(f"{tenant}/{message.message_id}")
        if stored is None:
            return
        conversation = conversation or await self.store.get(tenant, message.contact_id)
        if conversation is None:
            return
        wire = stored.to_wire()
        # The side shown the message before it was stored sees it once.
        shown = shown or f"{tenant}/{message.message_id}" in self._shown
        if not (shown and message.author == "agent"):
            await self.delivery.to_customer(tenant, conversation.visitor_id, "message", wire)
        if not (shown and message.author == "customer"):
            await self.delivery.to_agents(message.contact_id, "message", wire)

    async def on_contact_queued(self, event: events_pb2.ContactQueued) -> None:
        status = {"state": "queued", "position": int(event.position)}
        await self._status(event.meta.tenant, event.contact_id, status)

    async def on_contact_assigned(self, event: events_pb2.ContactAssigned) -> None:
        tenant, contact_id = event.meta.tenant, event.contact_id

        def assign(c: Conversation) -> None:
            c.agent_id, c.agent_name = event.agent_id, event.agent_name
            c.status = {"state": "assigned", "agent_name": event.agent_name}

        conversation = await self.store.update(tenant, contact_id, assign)
        if conversation is None:
            return
        logger.info("chat contact %s assigned to %s", contact_id, event.agent_id)
        self._wake(tenant, contact_id)
        await self.delivery.to_customer(
            tenant, conversation.visitor_id, "status", conversation.status or {}
        )

    async def on_contact_ended(self, event: events_pb2.ContactEnded) -> None:
        tenant, contact_id = event.meta.tenant, event.contact_id
        await self._end(tenant, event.meta.channel, contact_id)
        if event.meta.channel == contact_pb2.CHANNEL_CHAT and (
            event.reason == events_pb2.END_REASON_COMPLETED or event.wrap_up_code
        ):
            # The agent wrapped it up: their reading of it ends too.
            def wrapped_up(c: Conversation) -> None:
                c.wrapped_up = True

            await self.store.update(tenant, contact_id, wrapped_up)

    async def on_contact_abandoned(self, event: events_pb2.ContactAbandoned) -> None:
        await self._end(event.meta.tenant, event.meta.channel, event.contact_id)

    async def on_customer_erased(self, event: case_events_pb2.CustomerErased) -> None:
        """Forget the erased customer's chats: their conversation records (name, email, first
        message) and visitors' pointers. Their history is the case service's to erase (it
        erases the contacts from the streams)."""
        forgotten = await self.store.forget(event.meta.tenant, event.contact_ids)
        if forgotten:
            logger.info("forgot %d chat conversations of an erased customer", forgotten)

    async def _end(self, tenant: str, channel: int, contact_id: str) -> None:
        if channel != contact_pb2.CHANNEL_CHAT:
            return
        conversation = await self.store.end(tenant, contact_id)
        if conversation is not None:
            status = {"state": "ended", "contact_id": contact_id}
            await self.delivery.to_customer(tenant, conversation.visitor_id, "status", status)
            await self.delivery.to_agents(contact_id, "status", status)

    async def _status(self, tenant: str, contact_id: str, status: dict[str, Any]) -> None:
        late = status.get("state") in ("queued", "assigned")

        def set_status(c: Conversation) -> None:
            # A late ContactQueued or ContactAssigned never reopens a chat that ended, and a late
            # ContactQueued never hides an assignment already made.
            if late and c.ended:
                return
            if not (c.status or {}).get("state") == "assigned" or status.get("state") != "queued":
                c.status = dict(status)

        conversation = await self.store.update(tenant, contact_id, set_status)
        if conversation is not None and not (late and conversation.ended):
            await self.delivery.to_customer(tenant, conversation.visitor_id, "status", status)
