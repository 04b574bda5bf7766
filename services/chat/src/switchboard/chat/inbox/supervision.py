"""Supervision of live chats from the wallboard: the chats in progress of the supervisor's
tenant, watching one read-only (its history, then its messages live from both sides) and a
private note to its agent.

A note reaches only the agent's own room of the /agent namespace (every tab of that agent, as a
``supervisor_note``): never the customer's namespace, never the contact's room. Every act
(started watching, stopped, note) is published as a ``ContactSupervised``, which the case service
audits on the contact's case; a note is also kept there as an internal note by the supervisor.

Only a supervisor or team lead may watch (the wallboard's rule), and only a chat of their own
tenant: another tenant's contact is not found.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from switchboard.chat.adapters.conversations import could_be_chat
from switchboard.chat.domain.model import Conversation, check_text
from switchboard.chat.inbox import wire
from switchboard.chat.inbox.desk import _now_ms
from switchboard.core import auth as sb_auth
from switchboard.core import roles
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from switchboard.core.service_client import call
from switchboard.v1 import events_pb2, router_pb2

if TYPE_CHECKING:
    from switchboard.chat.inbox.service import Inbox

logger = logging.getLogger(__name__)

# The wallboard's own rule: who may watch the live figures may watch a live chat.
WATCH_RULE = "/switchboard.v1.RouterService/WatchQueueStats"
NOTE_MAX_BYTES = 4000

STARTED = events_pb2.SUPERVISION_ACTION_STARTED
STOPPED = events_pb2.SUPERVISION_ACTION_STOPPED
NOTE = events_pb2.SUPERVISION_ACTION_NOTE


def _ms(at: datetime | None) -> int | None:
    return int(at.timestamp() * 1000) if at is not None else None


def check_supervisor(principal: sb_auth.Principal) -> None:
    if not roles.RULES[WATCH_RULE].admits(principal):
        raise PermissionDenied("watching a chat needs the supervisor or team lead role")


class Supervision:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.chat = inbox.chat

    async def live_chats(self, principal: sb_auth.Principal, token: str) -> list[dict[str, Any]]:
        """The tenant's chats in progress: each agent's contacts (the router's) that are live
        chats here, with the agent, since when, and since when the customer waits for an
        answer (null when the agent spoke last)."""
        check_supervisor(principal)
        backends = self.inbox._backends(token, principal.tenant)
        try:
            agents = await call(
                "ListAgents", backends.router.ListAgents(router_pb2.ListAgentsRequest())
            )
        finally:
            await backends.close()
        store = self.chat.store
        live: list[dict[str, Any]] = []
        for a in agents.agents:
            for contact_id in a.active_contact_ids:
                if not could_be_chat(contact_id):
                    continue
                conversation = await store.get(principal.tenant, contact_id)
                if conversation is None or conversation.ended:
                    continue
                messages = await store.history(principal.tenant, contact_id)
                last = messages[-1] if messages else None
                waiting = last.sent_at if last is not None and last.author == "customer" else None
                started = messages[0].sent_at if messages else None
                live.append(
                    {
                        "contact_id": contact_id,
                        "customer_name": conversation.customer_name,
                        "language": conversation.language,
                        "agent_id": a.agent_id,
                        "agent_name": a.display_name or conversation.agent_name or a.agent_id,
                        "started_at": _ms(started),
                        "waiting_since": _ms(waiting),
                    }
                )
        live.sort(key=lambda c: c["waiting_since"] or c["started_at"] or 0)
        return live

    async def _live(self, principal: sb_auth.Principal, contact_id: Any) -> Conversation:
        check_supervisor(principal)
        if not isinstance(contact_id, str) or not could_be_chat(contact_id):
            raise NotFound("chat", str(contact_id)[:100])
        conversation = await self.chat.store.get(principal.tenant, contact_id)
        if conversation is None:
            raise NotFound("chat", contact_id)
        if conversation.ended or not conversation.agent_id:
            raise FailedPrecondition(f"chat {contact_id} is not in progress with an agent")
        return conversation

    async def check(self, principal: sb_auth.Principal, contact_id: Any) -> None:
        """Refuse, before anything is joined, what `start` would refuse."""
        await self._live(principal, contact_id)

    async def start(self, principal: sb_auth.Principal, contact_id: Any) -> dict[str, Any]:
        """Watch a live chat: its history so far (its room brings the rest)."""
        conversation = await self._live(principal, contact_id)
        messages = await self.chat.store.history(principal.tenant, conversation.contact_id)
        await self.chat.notifier.supervised(
            principal.tenant,
            conversation.contact_id,
            principal.subject,
            conversation.agent_id,
            STARTED,
        )
        logger.info("%s watches chat %s", principal.subject, conversation.contact_id)
        return {
            "contact_id": conversation.contact_id,
            "customer_name": conversation.customer_name,
            "language": conversation.language,
            "agent_id": conversation.agent_id,
            "agent_name": conversation.agent_name,
            "messages": [m.to_wire() for m in messages],
        }

    async def stop(self, principal: sb_auth.Principal, contact_id: str) -> None:
        conversation = await self.chat.store.get(principal.tenant, contact_id)
        await self.chat.notifier.supervised(
            principal.tenant,
            contact_id,
            principal.subject,
            conversation.agent_id if conversation is not None else "",
            STOPPED,
        )

    async def note(self, principal: sb_auth.Principal, data: Any) -> dict[str, Any]:
        """A private note to the chat's agent: shown in the agent's inbox only, kept in the
        case as an internal note."""
        contact_id = data.get("contact_id") if isinstance(data, dict) else None
        conversation = await self._live(principal, contact_id)
        text = check_text(data, NOTE_MAX_BYTES).strip()
        if not text:
            raise InvalidArgument("text", "a note needs text")
        note_id = uuid.uuid4().hex
        await self.chat.notifier.supervised(
            principal.tenant,
            conversation.contact_id,
            principal.subject,
            conversation.agent_id,
            NOTE,
            text,
            event_id=note_id,
        )
        note = {
            "note_id": note_id,
            "contact_id": conversation.contact_id,
            "text": text,
            "supervisor_id": principal.subject,
            "supervisor_name": self.inbox.profile(principal).name,
            "at": _now_ms(),
        }
        await self.inbox.to_agent(principal.tenant, conversation.agent_id, "supervisor_note", note)
        return note

    async def set_agent_presence(
        self, principal: sb_auth.Principal, token: str, data: Any
    ) -> dict[str, Any]:
        """From the wallboard: make an agent available again (after a break, or "not
        responding" after offers in a row ran out) or sign the agent out (gone home signed in).
        A supervisor may for any agent of the tenant, a team lead for the agents of the teams
        they lead. The router makes the change with the caller's token, and the agent's desk is
        told on its session."""
        check_supervisor(principal)
        data = data if isinstance(data, dict) else {}
        agent_id, presence = data.get("agent_id"), data.get("presence")
        if not isinstance(agent_id, str) or not agent_id or len(agent_id) > 128:
            raise InvalidArgument("agent_id")
        if presence not in ("available", "offline"):
            raise InvalidArgument("presence", "must be available or offline")
        if not principal.has_any(roles.SUPERVISOR, roles.ADMIN):
            profile = self.inbox.directory.profile(principal.tenant, agent_id)
            led = self.inbox.directory.led_by(principal.tenant, principal.subject)
            if profile is None or profile.team not in led:
                raise PermissionDenied(
                    "a team lead may change only the agents of the teams they lead"
                )
        backends = self.inbox._backends(token, principal.tenant)
        try:
            router = backends.router
            if presence == "available":
                agent = await call(
                    "SetPresence",
                    router.SetPresence(
                        router_pb2.SetPresenceRequest(
                            agent_id=agent_id, presence=router_pb2.PRESENCE_AVAILABLE
                        )
                    ),
                )
            else:
                agent = await call(
                    "SignOut", router.SignOut(router_pb2.SignOutRequest(agent_id=agent_id))
                )
        finally:
            await backends.close()
        logger.info("%s set %s %s", principal.subject, agent_id, presence)
        return {
            "agent_id": agent.agent_id,
            "presence": wire.PRESENCES.get(agent.presence, "offline"),
            "reason": agent.presence_reason,
        }
