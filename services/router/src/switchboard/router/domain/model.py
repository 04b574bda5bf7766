"""The routing engine's state and decisions: pure logic, no I/O, time from an injected clock.

Every mutating method returns the effects it decided (offers made, assignments, queue entries)
for the service layer to carry out; the engine itself never publishes or sleeps.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound
from switchboard.v1 import contact_pb2

Clock = Callable[[], float]

DEFAULT_CAPACITY: dict[int, int] = {
    contact_pb2.CHANNEL_VOICE: 1,
    contact_pb2.CHANNEL_CHAT: 3,
    contact_pb2.CHANNEL_EMAIL: 5,
    contact_pb2.CHANNEL_FAX: 5,
}
DEFAULT_QUEUE = "general"


class Presence(Enum):
    OFFLINE = 1
    AVAILABLE = 2
    BUSY = 3
    WRAP_UP = 4
    BREAK = 5


class ContactStatus(Enum):
    WAITING = "waiting"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    ENDED = "ended"


def language_matches(agent_tag: str, contact_tag: str) -> bool:
    """BCP 47 matching by prefix: an agent with `ko` serves `ko-KR`; `zh-Hans` serves `zh`, not `zh-Hant`."""
    a, c = agent_tag.lower(), contact_tag.lower()
    return a == c or c.startswith(a + "-") or a.startswith(c + "-")


@dataclass
class AgentState:
    tenant: str
    agent_id: str
    display_name: str
    languages: dict[str, int]
    skills: dict[str, int]
    capacity: dict[int, int]
    presence: Presence = Presence.AVAILABLE
    presence_reason: str = ""
    idle_since: float = 0.0
    connected: bool = False
    active: dict[str, int] = field(default_factory=dict)  # contact_id -> channel
    offer_id: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.agent_id)

    def language_proficiency(self, tag: str) -> int:
        if not tag:
            return max(self.languages.values(), default=1)
        return max((p for t, p in self.languages.items() if language_matches(t, tag)), default=0)

    def has_room(self, channel: int) -> bool:
        used = sum(1 for ch in self.active.values() if ch == channel)
        return used < self.capacity.get(channel, 0)

    def reachable(self) -> bool:
        return self.connected and self.presence == Presence.AVAILABLE and self.offer_id is None


@dataclass
class ContactState:
    contact: contact_pb2.Contact
    queue: str
    queued_at: float
    seq: int
    traceparent: str = ""
    status: ContactStatus = ContactStatus.WAITING
    declined_by: set[str] = field(default_factory=set)
    agent_id: str = ""
    offer_id: str = ""

    @property
    def tenant(self) -> str:
        return self.contact.tenant

    @property
    def contact_id(self) -> str:
        return self.contact.contact_id


@dataclass(frozen=True)
class Offer:
    offer_id: str
    tenant: str
    agent_id: str
    contact_id: str
    expires_at: float


# ---- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    contact: ContactState
    position: int


@dataclass(frozen=True)
class Offered:
    offer: Offer
    contact: ContactState


@dataclass(frozen=True)
class OfferWithdrawn:
    offer: Offer
    reason: str


@dataclass(frozen=True)
class Assigned:
    contact: ContactState
    agent: AgentState
    waited: float


@dataclass(frozen=True)
class Ended:
    contact: ContactState
    agent_id: str
    wrap_up_code: str


Effect = Queued | Offered | OfferWithdrawn | Assigned | Ended


class Engine:
    """Agents, waiting contacts and live offers of every tenant, and the decisions between them."""

    def __init__(self, clock: Clock, accept_timeout: float = 20.0) -> None:
        self.clock = clock
        self.accept_timeout = accept_timeout
        self.agents: dict[tuple[str, str], AgentState] = {}
        self.contacts: dict[str, ContactState] = {}
        self.offers: dict[str, Offer] = {}
        self.expired_offers: dict[str, str] = {}  # offer_id -> why it is no longer live
        self._seq = itertools.count()

    # ---- agents ------------------------------------------------------------------------------

    def agent(self, tenant: str, agent_id: str) -> AgentState:
        try:
            return self.agents[(tenant, agent_id)]
        except KeyError:
            raise NotFound("agent", agent_id) from None

    def sign_in(
        self,
        tenant: str,
        agent_id: str,
        display_name: str,
        languages: dict[str, int],
        skills: dict[str, int],
        capacity: dict[int, int] | None = None,
        presence: Presence = Presence.AVAILABLE,
    ) -> tuple[AgentState, list[Effect]]:
        for name, level in itertools.chain(languages.items(), skills.items()):
            if not 1 <= level <= 5:
                raise InvalidArgument("proficiency", f"{name!r} has {level}; must be 1 to 5")
        existing = self.agents.get((tenant, agent_id))
        agent = AgentState(
            tenant=tenant,
            agent_id=agent_id,
            display_name=display_name or agent_id,
            languages=languages,
            skills=skills,
            capacity={**DEFAULT_CAPACITY, **(capacity or {})},
            presence=presence,
            idle_since=self.clock(),
        )
        if existing:  # a re-sign-in keeps the agent's live work and connection
            agent.active = existing.active
            agent.offer_id = existing.offer_id
            agent.connected = existing.connected
        self.agents[agent.key] = agent
        return agent, self._match_agent(agent)

    def sign_out(self, tenant: str, agent_id: str) -> tuple[AgentState, list[Effect]]:
        return self.set_presence(tenant, agent_id, Presence.OFFLINE, "")

    def set_presence(
        self, tenant: str, agent_id: str, presence: Presence, reason: str
    ) -> tuple[AgentState, list[Effect]]:
        agent = self.agent(tenant, agent_id)
        effects: list[Effect] = []
        if presence != Presence.AVAILABLE and agent.offer_id:
            effects += self._withdraw(agent.offer_id, f"agent went {presence.name.lower()}")
        if presence == Presence.AVAILABLE and agent.presence != Presence.AVAILABLE:
            agent.idle_since = self.clock()
        agent.presence = presence
        agent.presence_reason = reason
        effects += self._match_agent(agent)
        return agent, effects

    def set_connected(self, tenant: str, agent_id: str, connected: bool) -> list[Effect]:
        agent = self.agent(tenant, agent_id)
        agent.connected = connected
        effects: list[Effect] = []
        if not connected and agent.offer_id:
            effects += self._withdraw(agent.offer_id, "agent disconnected")
        return effects + self._match_agent(agent)

    # ---- contacts ----------------------------------------------------------------------------

    def add_contact(self, contact: contact_pb2.Contact, traceparent: str = "") -> list[Effect]:
        """Queue a new contact and offer it if an agent is free. Re-delivery is a no-op."""
        if contact.contact_id in self.contacts:
            return []
        state = ContactState(
            contact=contact,
            queue=contact.queue or DEFAULT_QUEUE,
            queued_at=self.clock(),
            seq=next(self._seq),
            traceparent=traceparent,
        )
        self.contacts[contact.contact_id] = state
        position = sum(
            1
            for c in self.contacts.values()
            if c.status == ContactStatus.WAITING
            and c.tenant == state.tenant
            and c.queue == state.queue
        )
        return [Queued(state, position), *self._match_contact(state)]

    def withdraw_contact(self, contact_id: str, reason: str) -> list[Effect]:
        """The channel withdrew the contact (abandoned); drop it at once if not yet assigned."""
        state = self.contacts.get(contact_id)
        if state is None or state.status in (ContactStatus.ASSIGNED, ContactStatus.ENDED):
            return []
        effects: list[Effect] = []
        if state.status == ContactStatus.OFFERED:
            effects += self._withdraw(state.offer_id, reason, requeue=False)
        state.status = ContactStatus.ENDED
        del self.contacts[contact_id]
        return effects

    def accept(self, tenant: str, agent_id: str, offer_id: str) -> list[Effect]:
        offer = self.offers.get(offer_id)
        if offer is None:
            if offer_id in self.expired_offers:
                raise FailedPrecondition(
                    f"offer {offer_id} is no longer live: {self.expired_offers[offer_id]}"
                )
            raise NotFound("offer", offer_id)
        if (offer.tenant, offer.agent_id) != (tenant, agent_id):
            raise NotFound("offer", offer_id)
        if self.clock() >= offer.expires_at:
            raise FailedPrecondition(f"offer {offer_id} expired")
        agent = self.agent(tenant, agent_id)
        state = self.contacts[offer.contact_id]
        del self.offers[offer_id]
        self.expired_offers[offer_id] = "accepted"
        agent.offer_id = None
        agent.active[state.contact_id] = state.contact.channel
        state.status = ContactStatus.ASSIGNED
        state.agent_id = agent_id
        return [Assigned(state, agent, self.clock() - state.queued_at), *self._match_agent(agent)]

    def decline(self, tenant: str, agent_id: str, offer_id: str, reason: str) -> list[Effect]:
        offer = self.offers.get(offer_id)
        if offer is None or (offer.tenant, offer.agent_id) != (tenant, agent_id):
            if offer_id in self.expired_offers:
                raise FailedPrecondition(
                    f"offer {offer_id} is no longer live: {self.expired_offers[offer_id]}"
                )
            raise NotFound("offer", offer_id)
        return self._withdraw(offer_id, f"declined: {reason}" if reason else "declined")

    def expire_if_due(self, offer_id: str) -> list[Effect]:
        offer = self.offers.get(offer_id)
        if offer is not None and self.clock() >= offer.expires_at:
            return self.expire(offer_id)
        return []

    def expire(self, offer_id: str) -> list[Effect]:
        """The accept timeout passed: re-offer the contact to the next candidate."""
        if offer_id not in self.offers:
            return []
        return self._withdraw(offer_id, "accept timeout")

    def wrap_up(self, tenant: str, agent_id: str, contact_id: str, code: str) -> list[Effect]:
        agent = self.agent(tenant, agent_id)
        if contact_id not in agent.active:
            raise FailedPrecondition(f"contact {contact_id} is not assigned to agent {agent_id}")
        del agent.active[contact_id]
        state = self.contacts.pop(contact_id)
        state.status = ContactStatus.ENDED
        if not agent.active:
            agent.idle_since = self.clock()
        return [Ended(state, agent_id, code), *self._match_agent(agent)]

    # ---- matching ----------------------------------------------------------------------------

    def qualifies(self, agent: AgentState, state: ContactState) -> bool:
        c = state.contact
        return (
            agent.tenant == c.tenant
            and agent.has_room(c.channel)
            and agent.language_proficiency(c.language) > 0
            and all(s in agent.skills for s in c.skills)
        )

    def _rank(self, agent: AgentState, state: ContactState) -> tuple[bool, int, int, float]:
        c = state.contact
        return (
            agent.agent_id in state.declined_by,  # who let it go before comes last
            -agent.language_proficiency(c.language),
            -sum(agent.skills.get(s, 0) for s in c.skills),
            agent.idle_since,  # longest idle first
        )

    def _match_contact(self, state: ContactState, skip_agent: str = "") -> list[Effect]:
        candidates = [
            a
            for a in self.agents.values()
            if a.reachable() and a.agent_id != skip_agent and self.qualifies(a, state)
        ]
        if not candidates:
            return []
        best = min(candidates, key=lambda a: self._rank(a, state))
        return [self._offer(best, state)]

    def _match_agent(self, agent: AgentState, skip_contact: str = "") -> list[Effect]:
        if not agent.reachable():
            return []
        waiting = [
            c
            for c in self.contacts.values()
            if c.status == ContactStatus.WAITING
            and c.contact_id != skip_contact
            and self.qualifies(agent, c)
        ]
        if not waiting:
            return []
        best = min(
            waiting,
            key=lambda c: (
                agent.agent_id in c.declined_by,
                -c.contact.priority,
                c.queued_at,
                c.seq,
            ),
        )
        return [self._offer(agent, best)]

    def _offer(self, agent: AgentState, state: ContactState) -> Offered:
        offer = Offer(
            offer_id=uuid.uuid4().hex,
            tenant=agent.tenant,
            agent_id=agent.agent_id,
            contact_id=state.contact_id,
            expires_at=self.clock() + self.accept_timeout,
        )
        self.offers[offer.offer_id] = offer
        agent.offer_id = offer.offer_id
        state.status = ContactStatus.OFFERED
        state.offer_id = offer.offer_id
        return Offered(offer, state)

    def _withdraw(self, offer_id: str, reason: str, requeue: bool = True) -> list[Effect]:
        offer = self.offers.pop(offer_id)
        self.expired_offers[offer_id] = reason
        if len(self.expired_offers) > 100_000:  # keep the memory of old offers bounded
            for old in list(itertools.islice(self.expired_offers, 50_000)):
                del self.expired_offers[old]
        agent = self.agents.get((offer.tenant, offer.agent_id))
        effects: list[Effect] = [OfferWithdrawn(offer, reason)]
        if agent is not None and agent.offer_id == offer_id:
            agent.offer_id = None
        state = self.contacts.get(offer.contact_id)
        if state is not None and requeue:
            state.status = ContactStatus.WAITING
            state.offer_id = ""
            state.declined_by.add(offer.agent_id)
            effects += self._match_contact(state, skip_agent=offer.agent_id)
        # The agent is free again for other waiting contacts (not the one it just let go).
        if agent is not None:
            effects += self._match_agent(agent, skip_contact=offer.contact_id)
        return effects
