"""The routing engine: agents, waiting contacts, live offers and the decisions between them.

Pure and deterministic: no I/O, time from an injected clock, no randomness, no iteration over
hash-ordered sets. Given the same inputs at the same times it makes the same decisions, which is
what lets the service recover it by replaying its journal and run a hot standby (see
``switchboard.router.journal``). Every input returns the effects it decided; the service layer
carries them out (events, offers on agents' streams).

Indexes, so that matching cost does not grow with the number of agents or waiting contacts:

- Agents with the same tenant, languages and skills form a *profile group*. Each group keeps, per
  channel, a heap of its available agents ordered by idle time. A contact's requirements (a
  ``Req``: tenant, channel, queue, language, skills, minimum proficiency, what steps relaxed) map to
  the list of qualifying groups, best-qualified first, cached until a new group appears.
- Waiting contacts with the same ``Req`` share a *bucket*: a heap ordered by priority, then by the
  service-level deadline (queued time + the queue's threshold). A group caches which buckets it
  qualifies for, so a freed agent looks at a few bucket heads, not at every contact.
- Timers (offer expiry, routing steps, surge ages, idle periods, wrap-up) are one heap of due
  times, run by ``tick``.
Heaps use lazy deletion: an entry carries the version of its object and is skipped when stale.
A contact's bucket and its queue's `oldest` heap are swept a few entries per push once they hold
more than twice their live entries (`_sweep`), so no single call rebuilds a heap of the whole
waiting population.
"""

from __future__ import annotations

import heapq
import itertools
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound
from switchboard.router.domain.config import RouterConfig, SurgeLevel, TenantConfig
from switchboard.router.domain.model import (
    NOBODY,
    STATUS_NAMES,
    Agent,
    AgentChanged,
    Assigned,
    Attempt,
    Contact,
    Decision,
    Effect,
    Ended,
    Group,
    HoldChanged,
    Offer,
    Offered,
    OfferWithdrawn,
    Presence,
    Queued,
    QueueStats,
    Req,
    Status,
    StepApplied,
    SurgeChanged,
    TenantState,
    Transferred,
    Why,
    language_matches,
)
from switchboard.v1 import contact_pb2

Clock = Callable[[], float]
MAX_CANDIDATES = 20
MAX_EXCLUSIONS = 50
HISTORY = 50_000  # decisions kept for ExplainDecision after a contact ends
SWEEP = 8  # heap entries looked at per push while a heap holds over twice its live entries

# The records moved to model.py; they stay importable from here (and old snapshots, pickles
# naming `switchboard.router.domain.engine.Contact` and so on, load).
__all__ = [
    "HISTORY",
    "MAX_CANDIDATES",
    "MAX_EXCLUSIONS",
    "NOBODY",
    "STATUS_NAMES",
    "SWEEP",
    "Agent",
    "AgentChanged",
    "Assigned",
    "Attempt",
    "Clock",
    "Contact",
    "Decision",
    "Effect",
    "Ended",
    "Engine",
    "Group",
    "HoldChanged",
    "Offer",
    "OfferWithdrawn",
    "Offered",
    "Presence",
    "QueueStats",
    "Queued",
    "Req",
    "Status",
    "StepApplied",
    "SurgeChanged",
    "TenantState",
    "Transferred",
    "Why",
    "language_matches",
]


def _sweep(heap: list[Any], at: int, live: Callable[[Any], bool]) -> int:
    """Look at up to SWEEP entries of the heap from index `at`, removing the stale ones (each in
    O(log n), the heap kept valid); return the index the next sweep starts from. Called once per
    push while the heap is over its bound, so the cursor goes round the heap faster than it
    grows: stale entries are dropped within one round, a few at a time."""
    for _ in range(SWEEP):
        if at >= len(heap):
            at = 0
            if not heap:
                break
        if live(heap[at]):
            at += 1
            continue
        last = heap.pop()
        if at < len(heap):
            heap[at] = last
            _sift_down(heap, at)
            _sift_up(heap, at)
    return at


def _sift_up(heap: list[Any], pos: int) -> None:
    """Move heap[pos] towards the root while it is smaller than its parent."""
    item = heap[pos]
    while pos > 0:
        parent = (pos - 1) >> 1
        if not item < heap[parent]:
            break
        heap[pos] = heap[parent]
        pos = parent
    heap[pos] = item


def _sift_down(heap: list[Any], pos: int) -> None:
    """Move heap[pos] towards the leaves while a child is smaller."""
    item, end = heap[pos], len(heap)
    while True:
        child = 2 * pos + 1
        if child >= end:
            break
        if child + 1 < end and heap[child + 1] < heap[child]:
            child += 1
        if not heap[child] < item:
            break
        heap[pos] = heap[child]
        pos = child
    heap[pos] = item


# ---- the engine ------------------------------------------------------------------------------


class Engine:
    def __init__(self, clock: Clock, config: RouterConfig) -> None:
        self.clock = clock
        self.config = config
        self.tenants: dict[str, TenantState] = {}
        self.agents: dict[tuple[str, str], Agent] = {}
        self.groups: dict[tuple[str, tuple[Any, ...], tuple[Any, ...]], Group] = {}
        self.tenant_groups: dict[str, list[Group]] = {}
        self.contacts: dict[str, Contact] = {}
        self.offers: dict[str, Offer] = {}
        self.expired_offers: OrderedDict[str, str] = OrderedDict()
        self.history: OrderedDict[str, tuple[Contact, str]] = OrderedDict()
        self.buckets: dict[Req, list[tuple[int, float, int, str, int]]] = {}
        self.req_keys: dict[Req, Req] = {}  # one instance of each Req, shared by its contacts
        self.tuples: dict[tuple[str, ...], tuple[str, ...]] = {}  # one of each, e.g. skills
        self.bucket_size: dict[Req, int] = {}
        self.bucket_sweep: dict[Req, int] = {}  # where `_sweep` goes on in each bucket
        self.req_groups: dict[Req, tuple[int, list[tuple[int, Group, bool]]]] = {}
        self.req_excluded: dict[Req, tuple[int, list[tuple[Group, tuple[Why, ...], str]]]] = {}
        self.sticky_waiting: dict[tuple[str, str], dict[str, None]] = {}
        self.timers: list[tuple[float, int, str, Any, int]] = []
        self.config_versions: dict[str, tuple[int, float]] = {}  # tenant -> (version, applied at)
        self.file_texts: dict[str, str] = {}  # tenant -> its section of the file last applied
        self._groups_version = 0
        self._reqs_version = 0
        self._seq = itertools.count()
        self._offer_seq = 0
        self.term = 0  # the leader's term (see begin_term); part of every offer id

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "req_keys" not in state:  # pickled before requirement keys were shared
            self.req_keys = {req: req for req in self.buckets}
            self.tuples = {}
        if "bucket_sweep" not in state:  # pickled before buckets were swept
            self.bucket_sweep = {}
        for tenant in self.tenants.values():
            for qs in tenant.stats.values():
                if qs.oldest and isinstance(qs.oldest[0], tuple):  # (queued_at, seq, id) before
                    entries: list[Any] = qs.oldest
                    qs.oldest = [self.contacts[e[2]] for e in entries if e[2] in self.contacts]
                    heapq.heapify(qs.oldest)

    def _shared(self, value: tuple[str, ...]) -> tuple[str, ...]:
        """The engine's one copy of an equal tuple of strings."""
        return self.tuples.setdefault(value, value)

    # ---- tenants and configuration -----------------------------------------------------------

    def tenant(self, name: str) -> TenantState:
        state = self.tenants.get(name)
        if state is None:
            state = self.tenants[name] = TenantState(self.config.tenant(name))
        return state

    def apply_file_config(self, config: RouterConfig) -> list[Effect]:
        """The configuration file at start-up: tenants whose section changed since the file was
        last applied take it; changes made since over the admin API otherwise stand."""
        effects: list[Effect] = []
        self.config = RouterConfig(self.config.tenants, config.defaults)
        for name, tenant_cfg in config.tenants.items():
            if self.file_texts.get(name) != tenant_cfg.yaml_text:
                self.file_texts[name] = tenant_cfg.yaml_text
                effects += self.apply_tenant_config(tenant_cfg)
        return effects

    def apply_tenant_config(self, cfg: TenantConfig) -> list[Effect]:
        """Replace one tenant's configuration. Waiting contacts stay queued: each is re-filed under
        its queue's new requirements (or the default queue if its queue is gone)."""
        version = self.config_versions.get(cfg.tenant, (0, 0.0))[0] + 1
        self.config_versions[cfg.tenant] = (version, self.clock())
        self.config = RouterConfig({**self.config.tenants, cfg.tenant: cfg}, self.config.defaults)
        state = self.tenant(cfg.tenant)
        state.config = cfg
        effects: list[Effect] = []
        for agent in self.agents.values():
            if agent.tenant == cfg.tenant:
                agent.capacity = dict(cfg.capacity)
                self._refresh(agent)
        for c in list(self.contacts.values()):
            if c.tenant != cfg.tenant or c.status != Status.WAITING:
                continue
            self._unfile(c)
            if c.queue not in cfg.queues:
                c.queue = cfg.default_queue
            self._reset_steps(c, keep_entered=True)
            self._file(c)
        for c in list(self.contacts.values()):
            if c.tenant == cfg.tenant and c.status == Status.WAITING:
                effects += self._match_contact(c)
        return effects

    # ---- agents --------------------------------------------------------------------------------

    def agent(self, tenant: str, agent_id: str) -> Agent:
        try:
            return self.agents[(tenant, agent_id)]
        except KeyError:
            raise NotFound("agent", agent_id) from None

    def _group(self, tenant: str, languages: dict[str, int], skills: dict[str, int]) -> Group:
        key = (tenant, tuple(sorted(languages.items())), tuple(sorted(skills.items())))
        group = self.groups.get(key)
        if group is None:
            group = Group(tenant, key[1], key[2], seq=len(self.groups))
            self.groups[key] = group
            self.tenant_groups.setdefault(tenant, []).append(group)
            self._groups_version += 1
        return group

    def sign_in(
        self,
        tenant: str,
        agent_id: str,
        display_name: str,
        languages: dict[str, int],
        skills: dict[str, int],
        capacity: dict[int, int] | None = None,
        presence: Presence = Presence.AVAILABLE,
    ) -> tuple[Agent, list[Effect]]:
        for name, level in itertools.chain(languages.items(), skills.items()):
            if not 1 <= level <= 5:
                raise InvalidArgument("proficiency", f"{name!r} has {level}; must be 1 to 5")
        cfg = self.tenant(tenant).config
        if cfg.skills:
            for name in skills:
                if name not in cfg.skills:
                    raise InvalidArgument(
                        "skills", f"unknown skill {name!r} (the tenant's: {list(cfg.skills)})"
                    )
        now = self.clock()
        caps = {**cfg.capacity, **(capacity or {})}
        if caps.get(contact_pb2.CHANNEL_VOICE, 0) > 1:
            raise InvalidArgument("capacity", "voice is exclusive: at most 1")
        existing = self.agents.get((tenant, agent_id))
        group = self._group(tenant, languages, skills)
        if existing is not None:
            self._set_presence_count(existing, None)
            existing.group.members.pop(agent_id, None)
            self._drop_availability(existing)
            agent = existing
            agent.display_name = display_name or agent_id
            agent.languages, agent.skills, agent.capacity = languages, skills, caps
            agent.group = group
            if agent.presence != presence:
                agent.presence_since = now
            if presence == Presence.AVAILABLE and agent.presence != Presence.AVAILABLE:
                agent.idle_since = now
            agent.presence, agent.presence_reason = presence, ""
        else:
            agent = Agent(
                tenant,
                agent_id,
                display_name or agent_id,
                languages,
                skills,
                caps,
                group,
                presence=presence,
                presence_since=now,
                idle_since=now,
            )
            self.agents[(tenant, agent_id)] = agent
        group.members[agent_id] = agent
        self._set_presence_count(agent, agent.presence)
        self._refresh(agent)
        return agent, [AgentChanged(agent, "signed in"), *self._match_agent(agent)]

    def sign_out(self, tenant: str, agent_id: str) -> tuple[Agent, list[Effect]]:
        return self.set_presence(tenant, agent_id, Presence.OFFLINE, "signed out", force=True)

    def set_presence(
        self, tenant: str, agent_id: str, presence: Presence, reason: str, force: bool = False
    ) -> tuple[Agent, list[Effect]]:
        agent = self.agent(tenant, agent_id)
        state = self.tenant(tenant)
        if presence == Presence.BREAK and not force:
            if "refuse_breaks" in state.surge_actions():
                raise FailedPrecondition(
                    f"surge level {state.surge_level} in queue {state.surge_queue!r}: "
                    "new breaks are refused until it clears"
                )
            reasons = state.config.break_reasons
            if reasons and reason and reason not in reasons:
                raise InvalidArgument(
                    "reason", f"unknown break reason {reason!r} ({list(reasons)})"
                )
        if presence in (Presence.WRAP_UP, Presence.NOT_RESPONDING) and not force:
            raise InvalidArgument("presence", f"{presence.name.lower()} is set by the router")
        effects: list[Effect] = []
        if presence != Presence.AVAILABLE and agent.offer_id:
            effects += self._withdraw(agent.offer_id, f"agent went {presence.name.lower()}")
        self._change_presence(agent, presence, reason)
        if presence == Presence.AVAILABLE:
            agent.missed = 0
        effects.append(AgentChanged(agent, reason or presence.name.lower()))
        effects += self._match_agent(agent)
        return agent, effects

    def _change_presence(self, agent: Agent, presence: Presence, reason: str) -> None:
        now = self.clock()
        if presence != agent.presence:
            self._set_presence_count(agent, None)
            if presence == Presence.AVAILABLE:
                agent.idle_since = now
            agent.presence = presence
            agent.presence_since = now
            self._set_presence_count(agent, presence)
        agent.presence_reason = reason
        if presence != Presence.WRAP_UP:
            agent.wrap_up_until = 0.0
        self._refresh(agent)

    def _set_presence_count(self, agent: Agent, presence: Presence | None) -> None:
        counts = self.tenant(agent.tenant).presence_counts
        if presence is None:
            counts[agent.presence] = counts.get(agent.presence, 1) - 1
        else:
            counts[presence] = counts.get(presence, 0) + 1

    def set_connected(self, tenant: str, agent_id: str, connected: bool) -> list[Effect]:
        agent = self.agent(tenant, agent_id)
        agent.connected = connected
        effects: list[Effect] = []
        if not connected and agent.offer_id:
            # No gap for the customer: the contact goes straight to the next candidate.
            effects += self._withdraw(agent.offer_id, "agent disconnected")
        self._refresh(agent)
        return effects + self._match_agent(agent)

    def release(self) -> None:
        """Drop this engine's only reference cycles (each agent and its profile group refer to
        each other), so that an engine no longer used is freed by reference counting alone: the
        router keeps its long-lived objects out of the cyclic collector (`gc.freeze`)."""
        for group in self.groups.values():
            group.members.clear()

    def begin_term(self, term: int) -> list[Effect]:
        """A replica takes the lead (`term` increases with every taking, e.g. the lease's
        revision). Offer ids carry it, so even a decision that was never journaled cannot have
        its id reused by a later leader for another offer."""
        self.term = max(getattr(self, "term", 0), term)
        return []

    def disconnect_all(self) -> list[Effect]:
        """A new leader: no agent's stream survived the old one."""
        effects: list[Effect] = []
        for agent in self.agents.values():
            if agent.connected:
                agent.connected = False
                self._refresh(agent)
        return effects

    # ---- availability index -----------------------------------------------------------------

    def _refresh(self, agent: Agent) -> None:
        """Re-file the agent in its group's heaps after anything that changes its availability."""
        new = agent.channels_available()
        group = agent.group
        for ch in agent.avail - new:
            group.available[ch] = group.available.get(ch, 1) - 1
        for ch in new - agent.avail:
            group.available[ch] = group.available.get(ch, 0) + 1
        agent.avail = new
        agent.version += 1
        for ch in sorted(new):
            heap = group.heaps.setdefault(ch, [])
            if len(heap) > 2 * len(group.members) + 64:  # compact the stale entries
                heap[:] = [e for e in heap if self._live_agent_entry(group, ch, e)]
                heapq.heapify(heap)
            heapq.heappush(
                group.heaps.setdefault(ch, []),
                (agent.idle_since, next(self._seq), agent.agent_id, agent.version),
            )
        self._track_idle(agent)

    @staticmethod
    def _live_agent_entry(group: Group, channel: int, entry: tuple[float, int, str, int]) -> bool:
        agent = group.members.get(entry[2])
        return agent is not None and agent.version == entry[3] and channel in agent.avail

    def _drop_availability(self, agent: Agent) -> None:
        for ch in agent.avail:
            agent.group.available[ch] = agent.group.available.get(ch, 1) - 1
        agent.avail = frozenset()
        agent.version += 1

    def _head(self, group: Group, channel: int, skip: Mapping[str, None]) -> Agent | None:
        """The longest-idle available agent of the group for the channel, not in `skip`."""
        heap = group.heaps.get(channel)
        if not heap:
            return None
        parked: list[tuple[float, int, str, int]] = []
        found: Agent | None = None
        while heap:
            _, _, agent_id, version = heap[0]
            agent = group.members.get(agent_id)
            if agent is None or agent.version != version or channel not in agent.avail:
                heapq.heappop(heap)  # stale
                continue
            if agent_id in skip:
                parked.append(heapq.heappop(heap))
                if len(parked) >= 16:
                    break
                continue
            found = agent
            break
        for entry in parked:
            heapq.heappush(heap, entry)
        return found

    # ---- contacts ----------------------------------------------------------------------------

    def add_contact(self, contact: contact_pb2.Contact, traceparent: str = "") -> list[Effect]:
        """Queue a new contact and offer it if an agent is free. Re-delivery is a no-op, except
        that a waiting call the customer turned into a callback keeps its place as a callback."""
        existing = self.contacts.get(contact.contact_id)
        if existing is not None and contact.callback and not existing.callback:
            existing.set_callback()
            if existing.status == Status.WAITING:
                self._file(existing)  # same queued time: same place; now pausable by a surge
                return self._match_contact(existing)
            return []
        if existing is not None or contact.contact_id in self.history:
            return []
        if not contact.contact_id:
            raise InvalidArgument("contact.contact_id")
        if contact.channel not in (1, 2, 3, 4):
            raise InvalidArgument("contact.channel", "must name a channel")
        state = self.tenant(contact.tenant)
        cfg = state.config
        queue = contact.queue if contact.queue in cfg.queues else cfg.default_queue
        now = self.clock()
        c = Contact(
            serialized=contact.SerializeToString(),
            contact_id=contact.contact_id,
            tenant=sys.intern(contact.tenant),
            channel=contact.channel,
            language=sys.intern(contact.language),
            skills=self._shared(tuple(contact.skills)),
            callback=contact.callback,
            queue=sys.intern(queue),
            queued_at=now,
            entered_queue_at=now,
            seq=next(self._seq),
            traceparent=traceparent,
            priority=contact.priority,
        )
        self.contacts[c.contact_id] = c
        self._reset_steps(c)
        c.sticky_agent = self._sticky_agent(c.tenant, contact.identities)
        self._file(c)
        qs = state.queue_stats(queue)
        return [Queued(c, qs.waiting), *self._match_contact(c)]

    def withdraw_contact(self, contact_id: str, reason: str) -> list[Effect]:
        """The channel withdrew a contact not yet answered (abandoned): it goes at once."""
        c = self.contacts.get(contact_id)
        if c is None or c.status == Status.ASSIGNED:
            return []
        effects: list[Effect] = []
        if c.status == Status.OFFERED:
            effects += self._withdraw(c.offer_id, reason, requeue=False)
        self._unfile(c)
        c.status = Status.ABANDONED
        waited = self.clock() - c.queued_at
        self._record_outcome(c, answered=False, waited=waited)
        self._forget(c, "abandoned")
        return effects

    def channel_ended(self, contact_id: str) -> list[Effect]:
        """The channel ended an assigned contact (the customer left or hung up)."""
        c = self.contacts.get(contact_id)
        if c is None:
            return []
        if c.status != Status.ASSIGNED:
            return self.withdraw_contact(contact_id, "ended by the channel before an answer")
        if c.channel_ended_at:
            return []
        c.channel_ended_at = self.clock()
        agent = self.agents.get((c.tenant, c.agent_id))
        if agent is None:
            return []
        return self._end(agent, c, "", publish=False)

    def _reset_steps(self, c: Contact, keep_entered: bool = False) -> None:
        q = self.tenant(c.tenant).config.queue(c.queue)
        c.step_index, c.step_name = -1, ""
        c.min_prof, c.extra_languages, c.drop_skills = q.min_proficiency, (), False
        if not keep_entered:
            c.entered_queue_at = self.clock()

    def _schedule_step(self, c: Contact) -> None:
        steps = self.tenant(c.tenant).config.queue(c.queue).steps
        if c.step_index + 1 < len(steps):
            due = c.entered_queue_at + steps[c.step_index + 1].after
            self._timer(due, "step", c.contact_id, c.version)

    def _req(self, c: Contact) -> Req:
        cfg = self.tenant(c.tenant).config
        q = cfg.queue(c.queue)
        skills = tuple(sorted(set(c.skills) | set(q.skills)))
        req = Req(
            tenant=c.tenant,
            channel=c.channel,
            queue=c.queue,
            language=c.language,
            skills=skills,
            min_prof=c.min_prof,
            extra_languages=c.extra_languages,
            drop_skills=c.drop_skills,
            pausable=c.callback and c.priority < cfg.urgent_priority,
        )
        return self.req_keys.setdefault(req, req)

    def _file(self, c: Contact) -> None:
        """Put a waiting contact into the bucket of its current requirements."""
        self._unfile(c)
        c.status = Status.WAITING
        c.version += 1
        req = self._req(c)
        c.req = req
        if req not in self.buckets:
            self.buckets[req] = []
            self.bucket_size[req] = 0
            self._reqs_version += 1
        q = self.tenant(c.tenant).config.queue(c.queue)
        deadline = c.queued_at + q.sl_threshold
        heap = self.buckets[req]
        if len(heap) > 2 * self.bucket_size[req] + 64:  # drop some stale entries
            self.bucket_sweep[req] = _sweep(
                heap,
                self.bucket_sweep.get(req, 0),
                lambda e: self._live_contact_entry(req, e),
            )
        heapq.heappush(heap, (-c.priority, deadline, c.seq, c.contact_id, c.version))
        self.bucket_size[req] += 1
        self._schedule_step(c)
        qs = self.tenant(c.tenant).queue_stats(c.queue)
        qs.waiting += 1
        if c.oldest_in != c.queue:  # its entry from before an offer or a step still stands
            if len(qs.oldest) > 2 * qs.waiting + 64:  # drop some entries of contacts gone
                queue = c.queue
                qs.sweep = _sweep(qs.oldest, qs.sweep, lambda e: self._in_oldest(e, queue))
            heapq.heappush(qs.oldest, c)
            c.oldest_in = c.queue
        self._schedule_ages(c)
        if c.sticky_agent:
            self.sticky_waiting.setdefault((c.tenant, c.sticky_agent), {})[c.contact_id] = None

    def _in_oldest(self, c: Contact, queue: str) -> bool:
        """Whether a contact's entry in the queue's `oldest` heap is to stay: the contact waits
        in that queue. An entry dropped is forgotten (`oldest_in`), so that the contact is pushed
        again when it is filed there again."""
        if c.oldest_in != queue:
            return False  # an entry from an earlier stay in the queue
        if self.contacts.get(c.contact_id) is c and c.status == Status.WAITING and c.queue == queue:
            return True
        c.oldest_in = ""
        return False

    def _live_contact_entry(self, req: Req, entry: tuple[int, float, int, str, int]) -> bool:
        c = self.contacts.get(entry[3])
        return c is not None and c.version == entry[4] and c.req == req

    def _unfile(self, c: Contact) -> None:
        if c.req is None:
            return
        self.bucket_size[c.req] -= 1
        c.req = None
        c.version += 1
        state = self.tenant(c.tenant)
        qs = state.queue_stats(c.queue)
        qs.waiting -= 1
        for threshold in c.aged:
            key = (c.queue, threshold)
            state.aged[key] = state.aged.get(key, 1) - 1
        c.aged = ()
        if c.sticky_agent:
            waiting = self.sticky_waiting.get((c.tenant, c.sticky_agent))
            if waiting is not None:
                waiting.pop(c.contact_id, None)

    def _schedule_ages(self, c: Contact) -> None:
        thresholds = sorted({lvl.wait_longer_than for lvl in self.tenant(c.tenant).config.surge})
        for threshold in thresholds:
            self._timer(c.entered_queue_at + threshold, "age", (c.contact_id, threshold), c.version)

    def _bucket_head(self, req: Req, skip_agent: str) -> Contact | None:
        heap = self.buckets.get(req)
        if heap is None:
            return None
        parked: list[tuple[int, float, int, str, int]] = []
        found: Contact | None = None
        while heap:
            entry = heap[0]
            c = self.contacts.get(entry[3])
            if c is None or c.version != entry[4] or c.req != req:
                heapq.heappop(heap)
                continue
            if skip_agent and skip_agent in c.declined_by:
                parked.append(heapq.heappop(heap))
                if len(parked) >= 16:
                    break
                continue
            found = c
            break
        for entry in parked:
            heapq.heappush(heap, entry)
        return found

    # ---- sticky routing ----------------------------------------------------------------------

    def _sticky_agent(self, tenant: str, identities: Iterable[contact_pb2.CustomerIdentity]) -> str:
        state = self.tenant(tenant)
        if state.config.sticky_ttl <= 0:
            return ""
        now = self.clock()
        for identity in identities:
            hit = state.sticky.get((identity.kind, identity.value))
            if hit is not None and hit[1] > now:
                return hit[0]
        return ""

    def _remember_agent(self, c: Contact, agent_id: str) -> None:
        state = self.tenant(c.tenant)
        if state.config.sticky_ttl <= 0:
            return
        until = self.clock() + state.config.sticky_ttl
        for identity in c.contact.identities:
            state.sticky[(identity.kind, identity.value)] = (agent_id, until)
        if len(state.sticky) > 200_000:  # drop the expired
            now = self.clock()
            for key in [k for k, (_, t) in state.sticky.items() if t <= now]:
                del state.sticky[key]

    # ---- offers ------------------------------------------------------------------------------

    def accept(self, tenant: str, agent_id: str, offer_id: str) -> list[Effect]:
        offer = self.offers.get(offer_id)
        if offer is None or (offer.tenant, offer.agent_id) != (tenant, agent_id):
            if offer_id in self.expired_offers:
                raise FailedPrecondition(
                    f"offer {offer_id} is no longer live: {self.expired_offers[offer_id]}"
                )
            raise NotFound("offer", offer_id)
        now = self.clock()
        if now >= offer.expires_at:
            # The timer withdraws it (and re-offers the contact) on the next tick.
            raise FailedPrecondition(f"offer {offer_id} expired")
        agent = self.agent(tenant, agent_id)
        c = self.contacts[offer.contact_id]
        del self.offers[offer_id]
        self._remember_offer(offer_id, "accepted")
        agent.offer_id = None
        agent.missed = 0
        agent.active[c.contact_id] = c.channel
        if agent.presence == Presence.AVAILABLE and agent.long_idle:
            self._clear_long_idle(agent)
        c.status = Status.ASSIGNED
        c.agent_id = agent_id
        c.assigned_at = now
        self._outcome(c, offer_id, "accepted")
        qs = self.tenant(tenant).queue_stats(c.queue)
        qs.offered -= 1
        qs.assigned += 1
        waited = now - c.queued_at
        self._record_outcome(c, answered=True, waited=waited)
        self._remember_agent(c, agent_id)
        self._refresh(agent)
        return [Assigned(c, agent, waited), *self._match_agent(agent)]

    def decline(self, tenant: str, agent_id: str, offer_id: str, reason: str) -> list[Effect]:
        offer = self.offers.get(offer_id)
        if offer is None or (offer.tenant, offer.agent_id) != (tenant, agent_id):
            if offer_id in self.expired_offers:
                raise FailedPrecondition(
                    f"offer {offer_id} is no longer live: {self.expired_offers[offer_id]}"
                )
            raise NotFound("offer", offer_id)
        return self._withdraw(offer_id, f"declined: {reason}" if reason else "declined")

    def _offer(self, agent: Agent, c: Contact, via_step: bool, attempt: Attempt | None) -> Offered:
        self._offer_seq += 1
        term = getattr(self, "term", 0)  # engines pickled before terms had none
        offer_id = f"of-{term:x}-{self._offer_seq:08x}-{c.contact_id[:12]}"
        cfg = self.tenant(c.tenant).config
        offer = Offer(
            offer_id=offer_id,
            tenant=agent.tenant,
            agent_id=agent.agent_id,
            contact_id=c.contact_id,
            expires_at=self.clock() + cfg.timeout_for(c.channel),
            step=c.step_name,
            via_step_language=via_step,
        )
        self._unfile(c)
        self.offers[offer_id] = offer
        agent.offer_id = offer_id
        self._refresh(agent)
        c.status = Status.OFFERED
        c.offer_id = offer_id
        qs = self.tenant(c.tenant).queue_stats(c.queue)
        qs.offered += 1
        self._timer(offer.expires_at, "offer", offer_id, 0)
        if attempt is not None:
            attempt.offer_id, attempt.agent_id, attempt.outcome = (
                offer_id,
                agent.agent_id,
                "offered",
            )
            c.decision.attempts.append(attempt)
        return Offered(offer, c)

    def _outcome(self, c: Contact, offer_id: str, outcome: str) -> None:
        for attempt in reversed(c.decision.attempts):
            if attempt.offer_id == offer_id:
                attempt.outcome = outcome
                return

    def _remember_offer(self, offer_id: str, why: str) -> None:
        self.expired_offers[offer_id] = why
        if len(self.expired_offers) > 100_000:
            self.expired_offers.popitem(last=False)

    def _withdraw(
        self, offer_id: str, reason: str, requeue: bool = True, missed: bool = False
    ) -> list[Effect]:
        offer = self.offers.pop(offer_id)
        self._remember_offer(offer_id, reason)
        effects: list[Effect] = [OfferWithdrawn(offer, reason)]
        agent = self.agents.get((offer.tenant, offer.agent_id))
        c = self.contacts.get(offer.contact_id)
        if c is not None:
            self._outcome(
                c, offer_id, "timed_out" if missed else ("declined" if requeue else "withdrawn")
            )
            self.tenant(c.tenant).queue_stats(c.queue).offered -= 1
        if agent is not None and agent.offer_id == offer_id:
            agent.offer_id = None
            if missed:
                agent.missed += 1
                limit = self.tenant(agent.tenant).config.autopause_after
                if limit and agent.missed >= limit and agent.presence == Presence.AVAILABLE:
                    self._change_presence(
                        agent, Presence.NOT_RESPONDING, f"missed {agent.missed} offers in a row"
                    )
                    effects.append(AgentChanged(agent, agent.presence_reason))
            self._refresh(agent)
        if c is not None and requeue:
            c.decline(offer.agent_id)
            c.offer_id = ""
            self._file(c)
            effects += self._match_contact(c, not_now=offer.agent_id)
        if agent is not None:
            effects += self._match_agent(agent, not_now=offer.contact_id)
        return effects

    # ---- wrap-up, transfer, hold -------------------------------------------------------------

    def wrap_up(self, tenant: str, agent_id: str, contact_id: str, code: str) -> list[Effect]:
        agent = self.agent(tenant, agent_id)
        c = self.contacts.get(contact_id)
        if c is None or contact_id not in agent.active:
            if c is None and contact_id in self.history:
                old, _ = self.history[contact_id]
                if old.agent_id == agent_id and old.channel_ended_at and old.tenant == tenant:
                    # The customer left first; the agent's wrap-up code completes the record.
                    wrap = self.clock() - old.channel_ended_at
                    talk = old.channel_ended_at - old.assigned_at
                    return [Ended(old, agent_id, code, talk, old.hold_total, wrap)]
                raise FailedPrecondition(f"contact {contact_id} has already ended")
            if c is None:
                raise NotFound("contact", contact_id)
            raise FailedPrecondition(f"contact {contact_id} is not assigned to agent {agent_id}")
        return self._end(agent, c, code, publish=True)

    def _end(self, agent: Agent, c: Contact, code: str, publish: bool) -> list[Effect]:
        now = self.clock()
        del agent.active[c.contact_id]
        if c.held_since:
            c.hold_total += now - c.held_since
            c.held_since = 0.0
        ended_at = c.channel_ended_at or now
        talk = ended_at - c.assigned_at
        wrap = now - ended_at if c.channel_ended_at else 0.0
        c.status = Status.ENDED
        qs = self.tenant(c.tenant).queue_stats(c.queue)
        qs.assigned -= 1
        effects: list[Effect] = [Ended(c, agent.agent_id, code, talk, c.hold_total, wrap, publish)]
        self._forget(c, "ended")
        cfg = self.tenant(agent.tenant).config
        if not agent.active:
            agent.idle_since = now
            if cfg.wrap_up_after > 0 and agent.presence == Presence.AVAILABLE:
                self._change_presence(agent, Presence.WRAP_UP, "after-contact work")
                agent.wrap_up_until = now + cfg.wrap_up_after
                self._timer(
                    agent.wrap_up_until, "wrapup", (agent.tenant, agent.agent_id), agent.version
                )
                effects.append(AgentChanged(agent, "wrap-up"))
        self._refresh(agent)
        return effects + self._match_agent(agent)

    def transfer(self, tenant: str, contact_id: str, queue: str, agent_id: str) -> list[Effect]:
        cfg = self.tenant(tenant).config
        if queue not in cfg.queues:
            raise InvalidArgument("queue", f"unknown queue {queue!r} ({list(cfg.queues)})")
        c = self.contacts.get(contact_id)
        if c is None or c.tenant != tenant:
            raise NotFound("contact", contact_id)
        effects: list[Effect] = []
        from_agent = c.agent_id
        if c.status == Status.ASSIGNED:
            agent = self.agents.get((tenant, c.agent_id))
            if agent_id and agent_id != c.agent_id:
                raise FailedPrecondition(
                    f"contact {contact_id} is with {c.agent_id}, not {agent_id}"
                )
            if agent is not None:
                agent.active.pop(contact_id, None)
                if not agent.active:
                    agent.idle_since = self.clock()
                self._refresh(agent)
                effects += self._match_agent(agent)
            self.tenant(tenant).queue_stats(c.queue).assigned -= 1
        elif c.status == Status.OFFERED:
            effects += self._withdraw(c.offer_id, "transferred", requeue=False)
        self._unfile(c)
        # The agent who gave it away is the last resort, never the next offer.
        c.queue, c.agent_id, c.sticky_agent = sys.intern(queue), "", ""
        c.declined = {from_agent: None} if from_agent else None
        self._reset_steps(c)
        self._file(c)
        effects.append(Transferred(c, from_agent, queue))
        return effects + self._match_contact(c, not_now=from_agent)

    def set_hold(self, tenant: str, agent_id: str, contact_id: str, held: bool) -> list[Effect]:
        c = self.contacts.get(contact_id)
        if c is None or c.tenant != tenant:
            raise NotFound("contact", contact_id)
        if c.status != Status.ASSIGNED or (agent_id and c.agent_id != agent_id):
            raise FailedPrecondition(f"contact {contact_id} is not connected to agent {agent_id}")
        now = self.clock()
        if held and not c.held_since:
            c.held_since = now
        elif not held and c.held_since:
            c.hold_total += now - c.held_since
            c.held_since = 0.0
        else:
            return []
        return [HoldChanged(c, c.agent_id, held)]

    def _forget(self, c: Contact, outcome: str) -> None:
        self.contacts.pop(c.contact_id, None)
        self.history[c.contact_id] = (c, outcome)
        if len(self.history) > HISTORY:
            self.history.popitem(last=False)

    # ---- matching ----------------------------------------------------------------------------

    def _qualifying(self, req: Req) -> list[tuple[int, Group, bool]]:
        cached = self.req_groups.get(req)
        if cached is not None and cached[0] == self._groups_version:
            return cached[1]
        out: list[tuple[int, Group, bool]] = []
        for group in self.tenant_groups.get(req.tenant, []):
            score, reasons, via_step = group.assess(req)
            if not reasons:
                out.append((score, group, via_step))
        out.sort(key=lambda t: (-t[0], t[1].seq))
        self.req_groups[req] = (self._groups_version, out)
        return out

    def _group_reqs(self, group: Group, channel: int) -> list[Req]:
        version = self._reqs_version * 1_000_003 + self._groups_version
        cached = group.req_cache.get(channel)
        if cached is not None and cached[0] == version:
            return cached[1]
        reqs = [
            r
            for r in self.buckets
            if r.tenant == group.tenant and r.channel == channel and not group.assess(r)[1]
        ]
        group.req_cache[channel] = (version, reqs)
        return reqs

    def _candidates(self, c: Contact, allow_declined: bool) -> list[tuple[int, Agent, bool]]:
        """The best available agent of each qualifying group, best first."""
        assert c.req is not None
        skip = NOBODY if allow_declined else c.declined_by
        out: list[tuple[int, Agent, bool]] = []
        for score, group, via_step in self._qualifying(c.req):
            agent = self._head(group, c.channel, skip)
            if agent is not None:
                out.append((score, agent, via_step))
        out.sort(key=lambda t: (-t[0], t[1].idle_since, t[1].group.seq))
        return out

    def _match_contact(self, c: Contact, not_now: str = "") -> list[Effect]:
        """Offer a waiting contact to the best available agent, if there is one."""
        if c.status != Status.WAITING or c.req is None:
            return []
        state = self.tenant(c.tenant)
        if c.req.pausable and "pause_callbacks" in state.surge_actions():
            return []
        if c.sticky_agent:
            agent = self.agents.get((c.tenant, c.sticky_agent))
            if agent is not None and c.channel in agent.avail:
                score, reasons, via_step = agent.group.assess(c.req)
                if not reasons:
                    attempt = self._attempt(c, [(score, agent, via_step)], sticky=True)
                    return [self._offer(agent, c, via_step, attempt)]
        ranked = self._candidates(c, allow_declined=False)
        if not ranked and c.declined_by:
            # Only agents who let it go before: the next best of them, never the one just now.
            ranked = [
                r for r in self._candidates(c, allow_declined=True) if r[1].agent_id != not_now
            ]
        if not ranked:
            return []
        score, best, via_step = ranked[0]
        return [self._offer(best, c, via_step, self._attempt(c, ranked))]

    def _match_agent(self, agent: Agent, not_now: str = "") -> list[Effect]:
        """Offer the freed agent the waiting contact that most needs it, if any."""
        if not agent.avail:
            return []
        state = self.tenant(agent.tenant)
        paused = "pause_callbacks" in state.surge_actions()
        sticky = self.sticky_waiting.get((agent.tenant, agent.agent_id))
        best: tuple[tuple[int, float, int], Contact] | None = None
        if sticky:
            for contact_id in list(sticky)[:32]:
                c = self.contacts.get(contact_id)
                if c is None or c.status != Status.WAITING or c.req is None:
                    sticky.pop(contact_id, None)
                    continue
                if c.channel in agent.avail and not agent.group.assess(c.req)[1]:
                    if not (paused and c.req.pausable):
                        key = (-c.priority, c.queued_at, c.seq)
                        if best is None or key < best[0]:
                            best = (key, c)
        if best is None:
            for channel in sorted(agent.avail):
                for req in self._group_reqs(agent.group, channel):
                    if not self.bucket_size.get(req) or (paused and req.pausable):
                        continue
                    c = self._bucket_head(req, agent.agent_id)
                    if c is None:
                        c = self._bucket_head(req, "")  # only contacts it declined before
                        if c is None or c.contact_id == not_now:
                            continue
                    q = state.config.queue(c.queue)
                    key = (-c.priority, c.queued_at + q.sl_threshold, c.seq)
                    if best is None or key < best[0]:
                        best = (key, c)
        if best is None:
            return []
        c = best[1]
        assert c.req is not None
        score, _, via_step = agent.group.assess(c.req)
        attempt = self._attempt(
            c, [(score, agent, via_step)], sticky=c.sticky_agent == agent.agent_id
        )
        return [self._offer(agent, c, via_step, attempt)]

    # ---- explanations ------------------------------------------------------------------------

    def _attempt(
        self, c: Contact, ranked: list[tuple[int, Agent, bool]], sticky: bool = False
    ) -> Attempt:
        candidates = [
            (a.agent_id, score, a.idle_since, sticky or a.agent_id == c.sticky_agent)
            for score, a, _ in ranked[:MAX_CANDIDATES]
        ]
        excluded, total = self._exclusions(c, {a.agent_id for _, a, _ in ranked})
        return Attempt("", "", self.clock(), "offered", c.step_name, candidates, excluded, total)

    def _exclusions(
        self, c: Contact, chosen: set[str]
    ) -> tuple[list[tuple[str, tuple[Why, ...], str]], int]:
        """Which agents of the tenant could not take the contact, and why (the first 50 listed,
        all counted)."""
        req = c.req or self._req(c)
        listed: list[tuple[str, tuple[Why, ...], str]] = []
        total = 0
        for group, reasons, detail in self._not_qualifying(req):
            total += len(group.members)
            for agent_id in group.members:
                if len(listed) >= MAX_EXCLUSIONS:
                    break
                listed.append((agent_id, reasons, detail))
        for _, group, _ in self._qualifying(req):
            available = group.available.get(c.channel, 0)
            unavailable = len(group.members) - available
            declined = sum(1 for a in c.declined_by if a in group.members)
            total += unavailable + declined
            if len(listed) >= MAX_EXCLUSIONS or unavailable + declined == 0:
                continue
            # Name some of them; looking further than a few hundred members costs more than the
            # names are worth (they are all counted above).
            for agent in itertools.islice(group.members.values(), 500):
                if len(listed) >= MAX_EXCLUSIONS:
                    break
                if agent.agent_id in chosen:
                    continue
                why = self._unavailable(agent, c)
                if why is not None:
                    listed.append((agent.agent_id, (why[0],), why[1]))
        return listed, total

    def _not_qualifying(self, req: Req) -> list[tuple[Group, tuple[Why, ...], str]]:
        """The groups that cannot take contacts with these requirements, with why (cached until a
        new group appears, like `_qualifying`)."""
        cached = self.req_excluded.get(req)
        if cached is not None and cached[0] == self._groups_version:
            return cached[1]
        out: list[tuple[Group, tuple[Why, ...], str]] = []
        for group in self.tenant_groups.get(req.tenant, []):
            _, reasons, _ = group.assess(req)
            if reasons:
                out.append((group, tuple(reasons), self._detail(group, req, reasons)))
        self.req_excluded[req] = (self._groups_version, out)
        return out

    def _detail(self, group: Group, req: Req, reasons: list[Why]) -> str:
        if Why.LANGUAGE in reasons:
            return f"does not speak {req.language or 'the language'}"
        if Why.SKILL in reasons:
            missing = [s for s in req.skills if group.skill_prof(s) == 0]
            return f"lacks skill {', '.join(missing)}"
        return f"below the minimum proficiency {req.min_prof} in force"

    def _unavailable(self, agent: Agent, c: Contact) -> tuple[Why, str] | None:
        if agent.agent_id in c.declined_by:
            return Why.DECLINED, "declined or missed this contact"
        if agent.presence != Presence.AVAILABLE:
            reason = f" ({agent.presence_reason})" if agent.presence_reason else ""
            return Why.PRESENCE, f"{agent.presence.name.lower()}{reason}"
        if not agent.connected:
            return Why.NOT_CONNECTED, "no open offer stream"
        if agent.offer_id is not None:
            return Why.RESERVED, "holding another offer"
        if c.channel not in agent.avail:
            return Why.CAPACITY, f"at capacity ({len(agent.active)} active)"
        return None

    def explain(self, tenant: str, contact_id: str) -> tuple[Contact, str, Attempt | None]:
        """A contact's decision record; for a waiting contact also why it waits right now."""
        c = self.contacts.get(contact_id)
        state = ""
        if c is None:
            hit = self.history.get(contact_id)
            if hit is None:
                raise NotFound("contact", contact_id)
            c, state = hit
        if c.tenant != tenant:
            raise NotFound("contact", contact_id)
        live: Attempt | None = None
        if c.status == Status.WAITING:
            excluded, total = self._exclusions(c, set())
            live = Attempt("", "", self.clock(), "waiting", c.step_name, [], excluded, total)
        return c, state or STATUS_NAMES[c.status], live

    # ---- timers ------------------------------------------------------------------------------

    def _timer(self, due: float, kind: str, ident: Any, version: int) -> None:
        heapq.heappush(self.timers, (due, next(self._seq), kind, ident, version))

    def next_due(self) -> float | None:
        return self.timers[0][0] if self.timers else None

    def due(self) -> bool:
        return bool(self.timers) and self.timers[0][0] <= self.clock()

    def tick(self) -> list[Effect]:
        """Run every timer that is due: offer expiry, routing steps, surge ages, wrap-up ends."""
        now = self.clock()
        effects: list[Effect] = []
        touched: dict[str, None] = {}
        while self.timers and self.timers[0][0] <= now:
            _, _, kind, ident, version = heapq.heappop(self.timers)
            if kind == "offer":
                if ident in self.offers:
                    effects += self._withdraw(ident, "accept timeout", missed=True)
            elif kind == "step":
                c = self.contacts.get(ident)
                if c is not None and c.version == version and c.status == Status.WAITING:
                    effects += self._fire_step(c)
            elif kind == "age":
                contact_id, threshold = ident
                c = self.contacts.get(contact_id)
                if c is not None and c.version == version and c.status == Status.WAITING:
                    state = self.tenant(c.tenant)
                    key = (c.queue, threshold)
                    state.aged[key] = state.aged.get(key, 0) + 1
                    c.aged = (*c.aged, threshold)
                    touched[c.tenant] = None
            elif kind == "idle":
                tenant, agent_id, threshold = ident
                agent = self.agents.get((tenant, agent_id))
                if agent is not None and agent.version == version and self._is_idle(agent):
                    if threshold not in agent.long_idle:
                        agent.long_idle = agent.long_idle | {threshold}
                        state = self.tenant(tenant)
                        state.long_idle[threshold] = state.long_idle.get(threshold, 0) + 1
                        touched[tenant] = None
            elif kind == "wrapup":
                agent = self.agents.get(ident)
                if (
                    agent is not None
                    and agent.presence == Presence.WRAP_UP
                    and agent.wrap_up_until <= now
                ):
                    self._change_presence(agent, Presence.AVAILABLE, "")
                    effects.append(AgentChanged(agent, "wrap-up ended"))
                    effects += self._match_agent(agent)
        for tenant in touched:
            effects += self._evaluate_surge(tenant)
        return effects

    def _fire_step(self, c: Contact) -> list[Effect]:
        cfg = self.tenant(c.tenant).config
        steps = cfg.queue(c.queue).steps
        c.step_index += 1
        step = steps[c.step_index]
        now = self.clock()
        waited = now - c.entered_queue_at
        reason = f"waited {waited:.0f}s in {c.queue} >= {step.after:.0f}s: {step.describe()}"
        c.decision.steps.append((step.name, now, reason))
        c.step_name = step.name
        if step.min_proficiency is not None:
            c.min_prof = step.min_proficiency
        if step.add_languages:
            c.extra_languages = tuple(dict.fromkeys((*c.extra_languages, *step.add_languages)))
        if step.drop_skills:
            c.drop_skills = True
        if step.priority is not None:
            c.priority = max(c.priority, step.priority)
        effects: list[Effect] = [StepApplied(c, step, reason, now - c.queued_at)]
        if step.overflow_to:
            self._unfile(c)
            c.queue = step.overflow_to
            self._reset_steps(c)
            self._file(c)
        else:
            self._file(c)
        return effects + self._match_contact(c)

    # ---- surge protocol ----------------------------------------------------------------------

    def _is_idle(self, agent: Agent) -> bool:
        return agent.presence == Presence.AVAILABLE and not agent.active and agent.offer_id is None

    def _track_idle(self, agent: Agent) -> None:
        levels = self.tenant(agent.tenant).config.surge
        if not levels:
            return
        if not self._is_idle(agent):
            if agent.long_idle:
                self._clear_long_idle(agent)
            return
        for threshold in sorted({lvl.clear_idle_for for lvl in levels}):
            if threshold not in agent.long_idle:
                due = max(agent.idle_since, agent.presence_since) + threshold
                self._timer(due, "idle", (agent.tenant, agent.agent_id, threshold), agent.version)

    def _clear_long_idle(self, agent: Agent) -> None:
        state = self.tenant(agent.tenant)
        for threshold in agent.long_idle:
            state.long_idle[threshold] = state.long_idle.get(threshold, 1) - 1
        agent.long_idle = frozenset()

    def _raised(self, state: TenantState, level: SurgeLevel) -> str:
        """The queue meeting the level's raise condition, or ''."""
        for (queue, threshold), n in state.aged.items():
            if threshold == level.wait_longer_than and n > level.waiting_over:
                return queue
        return ""

    def _evaluate_surge(self, tenant: str) -> list[Effect]:
        state = self.tenant(tenant)
        levels = state.config.surge
        if not levels:
            return []
        previous = state.surge_level
        target, queue, reason = 0, "", ""
        for level in levels:
            q = self._raised(state, level)
            if q:
                target, queue = level.level, q
                reason = (
                    f"more than {level.waiting_over} contacts waited over "
                    f"{level.wait_longer_than:.0f}s in {q}"
                )
        if target > previous:
            state.surge_level, state.surge_queue = target, queue
        elif previous and target < previous:
            current = next(lvl for lvl in levels if lvl.level == previous)
            idle = state.long_idle.get(current.clear_idle_for, 0)
            if idle < current.clear_idle_agents:
                return []
            state.surge_level, state.surge_queue = target, queue
            reason = (
                f"{idle} agents idle for {current.clear_idle_for:.0f}s "
                f"(>= {current.clear_idle_agents})"
            )
        else:
            return []
        effects: list[Effect] = [
            SurgeChanged(
                tenant,
                queue or state.surge_queue,
                state.surge_level,
                previous,
                reason,
                state.surge_actions(),
            )
        ]
        if state.surge_level < previous:  # paused callbacks may go now
            for c in list(self.contacts.values()):
                if c.tenant == tenant and c.status == Status.WAITING and c.req and c.req.pausable:
                    effects += self._match_contact(c)
        return effects

    # ---- statistics --------------------------------------------------------------------------

    def _record_outcome(self, c: Contact, answered: bool, waited: float) -> None:
        qs = self.tenant(c.tenant).queue_stats(c.queue)
        threshold = self.tenant(c.tenant).config.queue(c.queue).sl_threshold
        within = waited <= threshold
        qs.window.append((self.clock(), answered, waited))
        if answered:
            qs.answered += 1
            qs.answered_in += within
            qs.answer_wait_total += waited
        else:
            qs.abandoned += 1
            qs.abandoned_in += within
        self._prune(c.tenant, c.queue, qs)

    def _prune(self, tenant: str, queue: str, qs: QueueStats) -> None:
        cfg = self.tenant(tenant).config
        q = cfg.queue(queue)
        horizon = self.clock() - q.sl_window
        while qs.window and qs.window[0][0] < horizon:
            _, answered, waited = qs.window.popleft()
            within = waited <= q.sl_threshold
            if answered:
                qs.answered -= 1
                qs.answered_in -= within
                qs.answer_wait_total -= waited
            else:
                qs.abandoned -= 1
                qs.abandoned_in -= within

    def queue_snapshot(self, tenant: str, queue: str) -> tuple[QueueStats, float]:
        """A queue's statistics (pruned to its window) and its longest current wait."""
        state = self.tenant(tenant)
        qs = state.queue_stats(queue)
        self._prune(tenant, queue, qs)
        longest = 0.0
        while qs.oldest:
            queued_at, contact_id = qs.oldest[0].queued_at, qs.oldest[0].contact_id
            c = self.contacts.get(contact_id)
            if c is None or c.status != Status.WAITING or c.queue != queue:
                gone = heapq.heappop(qs.oldest)
                if gone.oldest_in == queue:
                    gone.oldest_in = ""
                continue
            longest = self.clock() - queued_at
            break
        return qs, longest

    def queues_of(self, tenant: str) -> list[str]:
        state = self.tenant(tenant)
        names = list(state.config.queues)
        names += [q for q in state.stats if q not in state.config.queues]
        return names

    def position(self, tenant: str, contact_id: str) -> tuple[Contact, int, int, float]:
        """(contact, 1-based place among the contacts ahead of it in its bucket order, waiting in
        its queue, estimated wait in seconds from the queue's recent speed of answer)."""
        c = self.contacts.get(contact_id)
        if c is None or c.tenant != tenant:
            if contact_id in self.history and self.history[contact_id][0].tenant == tenant:
                return self.history[contact_id][0], 0, 0, 0.0
            raise NotFound("contact", contact_id)
        qs, _ = self.queue_snapshot(tenant, c.queue)
        if c.status != Status.WAITING or c.req is None:
            return c, 0, qs.waiting, 0.0
        q = self.tenant(tenant).config.queue(c.queue)
        mine = (-c.priority, c.queued_at + q.sl_threshold, c.seq)
        ahead = sum(
            1
            for entry in self.buckets.get(c.req, [])
            if entry[:3] < mine
            and (other := self.contacts.get(entry[3])) is not None
            and other.version == entry[4]
        )
        position = ahead + 1
        # Contacts answered per second from the queue recently; without history, one per
        # qualifying available agent per threshold.
        window = max(
            1.0, min(q.sl_window, self.clock() - (qs.window[0][0] if qs.window else self.clock()))
        )
        rate = qs.answered / window if qs.answered else 0.0
        if rate > 0:
            estimate = position / rate
        else:
            estimate = position * q.sl_threshold
        return c, position, qs.waiting, estimate

    def iter_tenants(self) -> Iterator[str]:
        return iter(list(self.tenants))
