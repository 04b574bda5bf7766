"""Where the chat keeps its conversations: which visitor has which contact, who the agent is,
and the history. In memory for one replica; a shared store (e.g. NATS KV, Redis) can implement
the same interface so that every replica sees every conversation."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from switchboard.chat.domain.model import ChatMessage, Conversation


class ConversationStore(Protocol):
    """Every method returns snapshots: mutate through the store, never through a result."""

    async def open_for_visitor(self, tenant: str, visitor_id: str) -> Conversation | None:
        """The visitor's contact that has not ended, if any."""
        ...

    async def add(self, conversation: Conversation) -> None:
        """Record a new conversation (it becomes the visitor's open one)."""
        ...

    async def discard(self, tenant: str, contact_id: str) -> None:
        """Forget a conversation whose creation could not be published."""
        ...

    async def get(self, tenant: str, contact_id: str) -> Conversation | None: ...

    async def append(self, tenant: str, contact_id: str, message: ChatMessage) -> bool:
        """Add `message` to the history; False if the contact is unknown or the id is known."""
        ...

    async def assign(
        self, tenant: str, contact_id: str, agent_id: str, agent_name: str
    ) -> Conversation | None: ...

    async def set_status(
        self, tenant: str, contact_id: str, status: dict[str, Any]
    ) -> Conversation | None: ...

    async def end(self, tenant: str, contact_id: str) -> Conversation | None:
        """Forget an ended contact and return its last state; the visitor's next message starts
        a new contact."""
        ...


def _snapshot(conversation: Conversation) -> Conversation:
    return dataclasses.replace(
        conversation,
        messages=list(conversation.messages),
        status=dict(conversation.status) if conversation.status else None,
    )


class InMemoryConversations:
    """A ConversationStore in this process's memory (one replica, lost on restart)."""

    def __init__(self, max_history: int = 1000) -> None:
        self._by_contact: dict[tuple[str, str], Conversation] = {}
        self._open: dict[tuple[str, str], str] = {}  # (tenant, visitor_id) -> contact_id
        self._message_ids: dict[tuple[str, str], set[str]] = {}
        self._max_history = max_history

    async def open_for_visitor(self, tenant: str, visitor_id: str) -> Conversation | None:
        contact_id = self._open.get((tenant, visitor_id))
        if contact_id is None:
            return None
        return await self.get(tenant, contact_id)

    async def add(self, conversation: Conversation) -> None:
        key = (conversation.tenant, conversation.contact_id)
        self._by_contact[key] = _snapshot(conversation)
        self._message_ids[key] = {m.message_id for m in conversation.messages}
        self._open[(conversation.tenant, conversation.visitor_id)] = conversation.contact_id

    async def discard(self, tenant: str, contact_id: str) -> None:
        conversation = self._by_contact.pop((tenant, contact_id), None)
        self._message_ids.pop((tenant, contact_id), None)
        if conversation is not None:
            visitor = (tenant, conversation.visitor_id)
            if self._open.get(visitor) == contact_id:
                del self._open[visitor]

    async def get(self, tenant: str, contact_id: str) -> Conversation | None:
        conversation = self._by_contact.get((tenant, contact_id))
        return _snapshot(conversation) if conversation else None

    async def append(self, tenant: str, contact_id: str, message: ChatMessage) -> bool:
        key = (tenant, contact_id)
        conversation = self._by_contact.get(key)
        ids = self._message_ids.get(key)
        if conversation is None or ids is None or message.message_id in ids:
            return False
        ids.add(message.message_id)
        conversation.messages.append(message)
        # The initial message sorts first even if a later one was consumed before it.
        conversation.messages.sort(key=lambda m: m.sent_at)
        if len(conversation.messages) > self._max_history:
            del conversation.messages[: len(conversation.messages) - self._max_history]
        return True

    async def assign(
        self, tenant: str, contact_id: str, agent_id: str, agent_name: str
    ) -> Conversation | None:
        conversation = self._by_contact.get((tenant, contact_id))
        if conversation is None:
            return None
        conversation.agent_id = agent_id
        conversation.agent_name = agent_name
        return _snapshot(conversation)

    async def set_status(
        self, tenant: str, contact_id: str, status: dict[str, Any]
    ) -> Conversation | None:
        conversation = self._by_contact.get((tenant, contact_id))
        if conversation is None:
            return None
        conversation.status = dict(status)
        return _snapshot(conversation)

    async def end(self, tenant: str, contact_id: str) -> Conversation | None:
        conversation = self._by_contact.get((tenant, contact_id))
        if conversation is None:
            return None
        conversation.ended = True
        await self.discard(tenant, contact_id)
        return conversation
