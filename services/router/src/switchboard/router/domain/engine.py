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
  service-level deadline (queued time + the queue's threshold; the bucket's contacts share a
  queue, so by queued time). A group caches which buckets it qualifies for, so a freed agent
  looks at a few bucket heads, not at every contact.
- Timers (offer expiry, routing steps, surge periods, idle periods, wrap-up) are one heap of due
  times, run by ``tick``.
Heaps use lazy deletion: an entry carries the version of its object and is skipped when stale.
A contact's bucket and its queue's `oldest` heap are swept a few entries per push once they hold
more than twice their live entries (`_sweep`), so no single call rebuilds a heap of the whole
waiting population.

`Engine` is the façade: it takes every input (tenants and configuration, agents, contacts, sticky
routing, offers, wrap-up, transfer and hold, timers) and inherits the rest, one concern a module,
all sharing the state declared in ``state.py``: ``index.py`` (the availability index and
matching), ``explain.py`` (decision records), ``surge.py`` (the surge protocol) and ``stats.py``
(queue statistics).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import sys
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from switchboard.core import audit
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound
from switchboard.router.domain.config import RouterConfig, TenantConfig
from switchboard.router.domain.explain import MAX_CANDIDATES, MAX_EXCLUSIONS, Explain
from switchboard.router.domain.index import SWEEP, Index, _sweep
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
    bucket_entry,
    language_matches,
    pack_traceparent,
    without_kept_fields,
)
from switchboard.router.domain.state import Clock
from switchboard.router.domain.stats import Stats
from switchboard.router.domain.surge import Surge
from switchboard.v1 import contact_pb2

HISTORY = 50_000  # decisions kept for ExplainDecision after a contact ends
# The form of a bucket's entries (`bucket_entry`); a snapshot holding another is re-filed on load.
# 1 (or none): (-priority, deadline, seq, contact id, version); 2: queued time for the deadline.
BUCKET_LAYOUT = 2
# The changes of a tenant's configuration kept with who made them (GetConfig's `changes`).
CONFIG_CHANGES_KEPT = 64

# What an ended contact's entry in `history` keeps of its protobuf: what routed it, nothing that
# identifies or quotes the customer (identities, name, subject, content, attachments go).
HISTORY_FIELDS = (
    "contact_id",
    "tenant",
    "channel",
    "language",
    "skills",
    "priority",
    "queue",
    "callback",
    "created_at",
    "case_id",
)


def without_personal_data(serialized: bytes) -> bytes:
    """A serialized contact_pb2.Contact reduced to `HISTORY_FIELDS`."""
    full = contact_pb2.Contact.FromString(serialized)
    kept = contact_pb2.Contact()
    for name in HISTORY_FIELDS:
        if name == "skills":
            kept.skills.extend(full.skills)
        elif name == "created_at":
            if full.HasField("created_at"):
                kept.created_at.CopyFrom(full.created_at)
        else:
            setattr(kept, name, getattr(full, name))
    return kept.SerializeToString()


# The records moved to model.py and the engine's parts to their own modules; these names stay
# importable from here (and old snapshots, pickles naming `switchboard.router.domain.engine.Contact`
# and so on, load).
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


# ---- the engine ------------------------------------------------------------------------------


class Engine(Index, Explain, Surge, Stats):
    """The routing engine: every input returns the effects it decided."""

    def __init__(self, clock: Clock, config: RouterConfig) -> None:
        self.clock = clock
        self.config = config
        self.tenants = {}
        self.agents = {}
        self.groups = {}
        self.tenant_groups = {}
        self.contacts = {}
        self.offers = {}
        self.expired_offers = OrderedDict()
        self.history = OrderedDict()
        self.buckets = {}
        self.req_keys = {}
        self.tuples = {}
        self.bucket_size = {}
        self.bucket_sweep = {}
        self.req_groups = {}
        self.req_excluded = {}
        self.sticky_waiting = {}
        self.timers = []
        self.config_versions = {}
        self.file_texts = {}
        self.config_changes = {}
        self._groups_version = 0
        self._reqs_version = 0
        self._seq = itertools.count()
        self._offer_seq = 0
        self.term = 0
        self.history_minimal = True
        self.bucket_layout = BUCKET_LAYOUT
        self.sticky_key = b""

    def __getstate__(self) -> dict[str, Any]:
        """The pickled state (a snapshot) holds no sticky key: it is kept apart (see
        `use_sticky_key`), so that a snapshot alone does not reveal whose hashes it holds."""
        state = self.__dict__.copy()
        state.pop("sticky_key", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.sticky_key = b""  # until `use_sticky_key`
        if "req_keys" not in state:  # pickled before requirement keys were shared
            self.req_keys = {req: req for req in self.buckets}
            self.tuples = {}
        if "bucket_sweep" not in state:  # pickled before buckets were swept
            self.bucket_sweep = {}
        if "config_changes" not in state:  # pickled before changes kept who made them
            self.config_changes = {}
        for tenant in self.tenants.values():
            for qs in tenant.stats.values():
                if qs.oldest and isinstance(qs.oldest[0], tuple):  # (queued_at, seq, id) before
                    entries: list[Any] = qs.oldest
                    qs.oldest = [self.contacts[e[2]] for e in entries if e[2] in self.contacts]
                    heapq.heapify(qs.oldest)
        if "history_minimal" not in state:  # pickled when history kept whole contacts
            self._minimise_history()
        if any(not hasattr(t, "queued") for t in self.tenants.values()):
            self._recount_queued()  # pickled before the surge counted customers queued
        if state.get("bucket_layout") != BUCKET_LAYOUT:
            self._rebuild_buckets()

    def _rebuild_buckets(self) -> None:
        """File every waiting contact's entry again, in today's `bucket_entry` form: an older
        snapshot's entries ordered by deadline, which no longer compares with a new entry."""
        for req in self.buckets:
            self.buckets[req] = []
        for c in self.contacts.values():
            if c.req is not None and c.status == Status.WAITING:
                self.buckets.setdefault(c.req, []).append(bucket_entry(c))
        for heap in self.buckets.values():
            heapq.heapify(heap)
        self.bucket_sweep = {}
        self.bucket_layout = BUCKET_LAYOUT

    def _minimise_history(self) -> None:
        """Drop the personal data of the ended contacts an older snapshot kept whole (in
        `history`, and those still referenced by a queue's `oldest` heap)."""
        for c, _ in self.history.values():
            c.serialized = without_personal_data(c.serialized)
        for tenant in self.tenants.values():
            for qs in tenant.stats.values():
                for c in qs.oldest:
                    if self.contacts.get(c.contact_id) is not c:
                        c.serialized = without_personal_data(c.serialized)
        self.history_minimal = True

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

    def apply_tenant_config(self, cfg: TenantConfig, actor: str = "") -> list[Effect]:
        """Replace one tenant's configuration. Waiting contacts stay queued: each is re-filed under
        its queue's new requirements (or the default queue if its queue is gone). A change by
        `actor` (not the file's) is kept with who made it and the lines it changed."""
        version = self.config_versions.get(cfg.tenant, (0, 0.0))[0] + 1
        now = self.clock()
        self.config_versions[cfg.tenant] = (version, now)
        if actor:
            before = self.tenant(cfg.tenant).config.yaml_text
            kept = self.config_changes.setdefault(cfg.tenant, [])
            kept.append((version, now, actor, audit.diff(before, cfg.yaml_text)))
            del kept[:-CONFIG_CHANGES_KEPT]
        self.config = RouterConfig({**self.config.tenants, cfg.tenant: cfg}, self.config.defaults)
        state = self.tenant(cfg.tenant)
        state.config = cfg
        effects: list[Effect] = []
        for agent in self.agents.values():
            if agent.tenant == cfg.tenant:
                agent.capacity = {**cfg.capacity, **(agent.own_capacity or {})}
                self._refresh(agent)
        for c in list(self.contacts.values()):
            if c.tenant != cfg.tenant or c.status != Status.WAITING:
                continue
            self._unfile(c)
            if c.queue not in cfg.queues:
                self._count_queued(c, -1)
                c.queue = cfg.default_queue
                self._count_queued(c, +1)
            self._reset_steps(c, keep_entered=True)
            self._file(c)
        self._rewatch(state)
        for c in list(self.contacts.values()):
            if c.tenant == cfg.tenant and c.status == Status.WAITING:
                effects += self._match_contact(c)
        return effects + self._evaluate_surge(cfg.tenant)

    def _rewatch(self, state: TenantState) -> None:
        """Under a new surge plan: a queue stays over a level it was over (from the same time)
        while it still is; the rest start now."""
        levels = {lvl.level: lvl for lvl in state.config.surge}
        for (number, queue), since in list(state.over_since.items()):
            lvl = levels.get(number)
            if (
                lvl is None
                or not lvl.watches(queue)
                or state.queued.get(queue, 0) <= lvl.queued_over
            ):
                del state.over_since[(number, queue)]
            else:
                self._timer(since + lvl.raise_for, "surge", state.config.tenant, 0)
        for queue in list(state.queued):
            self._watch_queue(state.config.tenant, state, queue)

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
            agent.own_capacity = dict(capacity) if capacity else None
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
                own_capacity=dict(capacity) if capacity else None,
            )
            self.agents[(tenant, agent_id)] = agent
        group.members[agent_id] = agent
        self._set_presence_count(agent, agent.presence)
        self._refresh(agent)
        return agent, [AgentChanged(agent, "signed in"), *self._match_agent(agent)]

    def sign_out(self, tenant: str, agent_id: str, by: str = "") -> tuple[Agent, list[Effect]]:
        return self.set_presence(
            tenant, agent_id, Presence.OFFLINE, "signed out", force=True, by=by
        )

    def set_presence(
        self,
        tenant: str,
        agent_id: str,
        presence: Presence,
        reason: str,
        force: bool = False,
        by: str = "",
    ) -> tuple[Agent, list[Effect]]:
        """`by`: who set it when not the agent itself (a supervisor's id), told with the change."""
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
        agent.presence_by = by
        if presence == Presence.AVAILABLE:
            agent.missed = 0
        effects.append(AgentChanged(agent, reason or presence.name.lower(), by))
        effects += self._match_agent(agent)
        return agent, effects

    def _change_presence(self, agent: Agent, presence: Presence, reason: str) -> None:
        now = self.clock()
        agent.presence_by = ""  # the router's, or the agent's own (set_presence names another)
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

    # ---- contacts ----------------------------------------------------------------------------

    def add_contact(self, contact: contact_pb2.Contact, traceparent: str = "") -> list[Effect]:
        """Queue a new contact and offer it if an agent is free. Re-delivery is a no-op, except
        that a waiting call the customer turned into a callback keeps its place as a callback."""
        existing = self.contacts.get(contact.contact_id)
        if existing is not None and contact.callback and not existing.callback:
            if existing.status in (Status.WAITING, Status.OFFERED):
                self._count_queued(existing, -1)  # the caller hung up: no longer holding
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
            serialized=without_kept_fields(contact),
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
            trace=pack_traceparent(traceparent),
            priority=contact.priority,
        )
        self.contacts[c.contact_id] = c
        self._reset_steps(c)
        c.sticky_agent = self._sticky_agent(c.tenant, contact.identities)
        self._file(c)
        self._count_queued(c, +1)
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
        self._count_queued(c, -1)
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
        heap = self.buckets[req]
        if len(heap) > 2 * self.bucket_size[req] + 64:  # drop some stale entries
            self.bucket_sweep[req] = _sweep(
                heap,
                self.bucket_sweep.get(req, 0),
                lambda e: self._live_contact_entry(req, e),
            )
        heapq.heappush(heap, bucket_entry(c))
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
        if c.sticky_agent:
            self.sticky_waiting.setdefault((c.tenant, c.sticky_agent), {})[c.contact_id] = None

    def _in_oldest(self, c: Contact, queue: str) -> bool:
        """Whether a contact's entry in the queue's `oldest` heap is to stay: the contact waits
        in that queue (queued, or offered and not yet accepted). An entry dropped is forgotten (`oldest_in`), so that the contact is pushed
        again when it is filed there again."""
        if c.oldest_in != queue:
            return False  # an entry from an earlier stay in the queue
        if (
            self.contacts.get(c.contact_id) is c
            and c.status in (Status.WAITING, Status.OFFERED)
            and c.queue == queue
        ):
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
        if c.sticky_agent:
            waiting = self.sticky_waiting.get((c.tenant, c.sticky_agent))
            if waiting is not None:
                waiting.pop(c.contact_id, None)

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
            hit = state.sticky.get(self._sticky_id(identity.kind, identity.value))
            if hit is not None and hit[1] > now:
                return hit[0]
        return ""

    def _sticky_id(self, kind: int, value: str) -> tuple[int, bytes]:
        """A customer identity as the sticky map keys it: its kind and the HMAC-SHA256 of its
        value under the group's sticky key, never the value itself."""
        return kind, hmac.new(self.sticky_key, value.encode(), hashlib.sha256).digest()

    def use_sticky_key(self, key: bytes) -> None:
        """Key the sticky map with `key` (the router group's, kept beside its snapshots). The
        clear identity values a snapshot from before keyed hashes holds are hashed now: the
        same customer still finds the same agent. Every replica of a group uses the same key,
        so that they decide alike."""
        self.sticky_key = key
        for state in self.tenants.values():
            clear: list[tuple[int, Any]] = [k for k in state.sticky if isinstance(k[1], str)]
            for kind, value in clear:
                hashed = self._sticky_id(kind, value)
                entry = state.sticky.pop((kind, value))
                if hashed not in state.sticky or state.sticky[hashed][1] < entry[1]:
                    state.sticky[hashed] = entry

    def _remember_agent(self, c: Contact, agent_id: str) -> None:
        state = self.tenant(c.tenant)
        if state.config.sticky_ttl <= 0:
            return
        until = self.clock() + state.config.sticky_ttl
        for identity in c.contact.identities:
            state.sticky[self._sticky_id(identity.kind, identity.value)] = (agent_id, until)
        if len(state.sticky) > 200_000:  # drop the expired
            now = self.clock()
            for key in [k for k, (_, t) in state.sticky.items() if t <= now]:
                del state.sticky[key]

    # ---- offers ------------------------------------------------------------------------------

    def accept(self, tenant: str, agent_id: str, offer_id: str) -> list[Effect]:
        offer = self._live_offer(tenant, agent_id, offer_id)
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
        self._count_queued(c, -1)
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
        return [Assigned(c, agent, waited, c.message_bytes()), *self._match_agent(agent)]

    def decline(self, tenant: str, agent_id: str, offer_id: str, reason: str) -> list[Effect]:
        self._live_offer(tenant, agent_id, offer_id)
        return self._withdraw(offer_id, f"declined: {reason}" if reason else "declined")

    def _live_offer(self, tenant: str, agent_id: str, offer_id: str) -> Offer:
        """The agent's live offer `offer_id`; NotFound, or FailedPrecondition saying what became
        of it when it is no longer live."""
        offer = self.offers.get(offer_id)
        if offer is None or (offer.tenant, offer.agent_id) != (tenant, agent_id):
            if offer_id in self.expired_offers:
                raise FailedPrecondition(
                    f"offer {offer_id} is no longer live: {self.expired_offers[offer_id]}"
                )
            raise NotFound("offer", offer_id)
        return offer

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
        agent = self.agents.get((offer.tenant, offer.agent_id))
        c = self.contacts.get(offer.contact_id)
        effects: list[Effect] = [OfferWithdrawn(offer, reason, c, requeue and c is not None)]
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
        if c.status != Status.ASSIGNED:
            self._count_queued(c, -1)  # counted again in the queue it goes to
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
        self._count_queued(c, +1)
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
        # Its entry keeps what explanations, statistics and de-duplication read: not who the
        # customer is nor what they wrote.
        c.serialized = without_personal_data(c.serialized)
        self.history[c.contact_id] = (c, outcome)
        if len(self.history) > HISTORY:
            self.history.popitem(last=False)

    # ---- timers ------------------------------------------------------------------------------

    def _timer(self, due: float, kind: str, ident: Any, version: int) -> None:
        heapq.heappush(self.timers, (due, next(self._seq), kind, ident, version))

    def next_due(self) -> float | None:
        return self.timers[0][0] if self.timers else None

    def due(self) -> bool:
        return bool(self.timers) and self.timers[0][0] <= self.clock()

    def tick(self) -> list[Effect]:
        """Run every timer that is due: offer expiry, routing steps, surge periods, wrap-up ends."""
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
            elif kind == "surge":  # a queue over a level's number for its time, or back under
                touched[ident] = None
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
            self._count_queued(c, -1)
            c.queue = step.overflow_to
            self._count_queued(c, +1)
            self._reset_steps(c)
            self._file(c)
        else:
            self._file(c)
        return effects + self._match_contact(c)
