"""The routing engine's records and the effects it returns: agents and their profile groups,
contacts and their requirements, offers, decisions kept for explanations, queue statistics and
tenant state. Plain data with a little behaviour of its own; `Engine` (``engine.py``) keeps them
consistent.

Snapshots are pickles of the engine: these classes are found by module path, and engine.py
re-exports every one of them, so that a snapshot written when they lived there still loads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum
from types import MappingProxyType
from typing import Any

from switchboard.router.domain.config import Step, TenantConfig
from switchboard.v1 import contact_pb2


class Presence(IntEnum):  # values equal switchboard.v1.Presence
    OFFLINE = 1
    AVAILABLE = 2
    BUSY = 3
    WRAP_UP = 4
    BREAK = 5
    NOT_RESPONDING = 6


class Status(IntEnum):
    WAITING = 1
    OFFERED = 2
    ASSIGNED = 3
    ENDED = 4
    ABANDONED = 5


STATUS_NAMES = {
    Status.WAITING: "waiting",
    Status.OFFERED: "offered",
    Status.ASSIGNED: "assigned",
    Status.ENDED: "ended",
    Status.ABANDONED: "abandoned",
}


class Why(IntEnum):  # values equal switchboard.v1.ExclusionReason
    LANGUAGE = 1
    SKILL = 2
    CAPACITY = 3
    PRESENCE = 4
    STEP = 5
    RESERVED = 6
    DECLINED = 7
    NOT_CONNECTED = 8


def language_matches(agent_tag: str, contact_tag: str) -> bool:
    """BCP 47 by prefix: an agent with `ko` serves `ko-KR`; `zh-Hans` serves `zh`, not `zh-Hant`."""
    a, c = agent_tag.lower(), contact_tag.lower()
    return a == c or c.startswith(a + "-") or a.startswith(c + "-")


# ---- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    """What a waiting contact needs now (its queue's and steps' requirements applied)."""

    tenant: str
    channel: int
    queue: str
    language: str
    skills: tuple[str, ...]
    min_prof: int
    extra_languages: tuple[str, ...] = ()
    drop_skills: bool = False
    pausable: bool = False  # a non-urgent callback: held back while a surge pauses callbacks


@dataclass(eq=False)
class Group:
    """Agents of one tenant with the same languages and skills."""

    tenant: str
    languages: tuple[tuple[str, int], ...]
    skills: tuple[tuple[str, int], ...]
    seq: int
    members: dict[str, Agent] = field(default_factory=dict)
    heaps: dict[int, list[tuple[float, int, str, int]]] = field(default_factory=dict)
    available: dict[int, int] = field(default_factory=dict)  # channel -> available agents
    req_cache: dict[int, tuple[int, list[Req]]] = field(default_factory=dict)

    def language_prof(self, tag: str) -> int:
        if not tag:
            return max((p for _, p in self.languages), default=1)
        return max((p for t, p in self.languages if language_matches(t, tag)), default=0)

    def skill_prof(self, name: str) -> int:
        for n, p in self.skills:
            if n == name:
                return p
        return 0

    def assess(self, req: Req) -> tuple[int, list[Why], bool]:
        """(score, reasons it does not qualify, whether only a step's extra language let it)."""
        reasons: list[Why] = []
        lang = self.language_prof(req.language)
        via_step = False
        if lang < req.min_prof:
            extra = max((self.language_prof(t) for t in req.extra_languages), default=0)
            if extra >= req.min_prof:
                lang, via_step = extra, True
            elif lang > 0 or extra > 0:
                reasons.append(Why.STEP)
            else:
                reasons.append(Why.LANGUAGE)
        score = lang
        if not req.drop_skills:
            for s in req.skills:
                p = self.skill_prof(s)
                if p == 0:
                    reasons.append(Why.SKILL)
                    break
                if p < req.min_prof:
                    reasons.append(Why.STEP)
                    break
                score += p
        return score, reasons, via_step


@dataclass(eq=False)
class Agent:
    tenant: str
    agent_id: str
    display_name: str
    languages: dict[str, int]
    skills: dict[str, int]
    capacity: dict[int, int]
    group: Group
    presence: Presence = Presence.AVAILABLE
    presence_reason: str = ""
    presence_since: float = 0.0
    idle_since: float = 0.0
    connected: bool = False
    active: dict[str, int] = field(default_factory=dict)  # contact_id -> channel
    offer_id: str | None = None
    missed: int = 0
    wrap_up_until: float = 0.0
    version: int = 0
    avail: frozenset[int] = frozenset()
    long_idle: frozenset[float] = frozenset()  # surge idle thresholds this agent has crossed
    # The capacity the agent signed in with, over the tenant's defaults (kept through a change of
    # the tenant's configuration); None: the defaults only (and agents of older snapshots).
    own_capacity: dict[int, int] | None = None
    # Who set the presence in force when neither the agent itself nor the router did (a
    # supervisor's id); "" otherwise (and for agents of older snapshots).
    presence_by: str = ""

    def used(self, channel: int) -> int:
        return sum(1 for ch in self.active.values() if ch == channel)

    def reachable(self) -> bool:
        return self.connected and self.presence == Presence.AVAILABLE and self.offer_id is None

    def channels_available(self) -> frozenset[int]:
        if not self.reachable():
            return frozenset()
        if any(ch == contact_pb2.CHANNEL_VOICE for ch in self.active.values()):
            return frozenset()  # on a call: nothing else
        out = [ch for ch, cap in self.capacity.items() if self.used(ch) < cap]
        if self.active and contact_pb2.CHANNEL_VOICE in out:
            out.remove(contact_pb2.CHANNEL_VOICE)  # a call needs the agent's full attention
        return frozenset(out)


def _restore(record: Any, state: Any) -> None:
    """Set a slotted record's fields from its pickled state, including the plain `__dict__` of one
    pickled before the record had slots (a snapshot written by an older router)."""
    if isinstance(state, tuple):  # (None, {slot: value}): how pickle saves a slotted object
        state = state[1]
    elif isinstance(state, list):  # a frozen slotted dataclass's field values, in order
        names = [f.name for f in fields(record)]
        state = dict(zip(names, state, strict=True))
    for name, value in state.items():
        object.__setattr__(record, name, value)


@dataclass(slots=True)
class Attempt:
    offer_id: str
    agent_id: str
    at: float
    outcome: str
    step: str
    candidates: list[tuple[str, int, float, bool]]  # agent, score, idle_since, sticky
    excluded: list[tuple[str, tuple[Why, ...], str]]
    excluded_total: int

    __setstate__ = _restore


@dataclass(slots=True)
class Decision:
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)

    __setstate__ = _restore


NOBODY: Mapping[str, None] = MappingProxyType({})


def pack_traceparent(traceparent: str) -> bytes | str:
    """A W3C traceparent (``00-<32 hex>-<16 hex>-<2 hex>``) as its 26 bytes, which the
    `Contact.traceparent` property spells out again; anything else stays the string it is."""
    if len(traceparent) == 55:
        try:
            packed = bytes.fromhex(
                traceparent[0:2] + traceparent[3:35] + traceparent[36:52] + traceparent[53:55]
            )
        except ValueError:
            return traceparent
        if len(packed) == 26 and unpack_traceparent(packed) == traceparent:
            return packed
    return traceparent


def unpack_traceparent(packed: bytes | str) -> str:
    if isinstance(packed, str):
        return packed
    h = packed.hex()
    return f"{h[0:2]}-{h[2:34]}-{h[34:50]}-{h[50:52]}"


@dataclass(slots=True)
class Served:
    """What a contact gains once an agent takes it: kept apart, so that the many contacts that
    only wait carry one empty slot instead of these fields."""

    agent_id: str = ""
    assigned_at: float = 0.0
    channel_ended_at: float = 0.0
    held_since: float = 0.0
    hold_total: float = 0.0

    __setstate__ = _restore


def _served_field(name: str, default: Any) -> property:
    """A field of the contact's `Served` record, read as `default` while it has none."""

    def get(c: Contact) -> Any:
        return default if c.served is None else getattr(c.served, name)

    def set_(c: Contact, value: Any) -> None:
        if c.served is None:
            if value == default:
                return
            c.served = Served()
        setattr(c.served, name, value)

    return property(get, set_)


@dataclass(slots=True, eq=False)
class Contact:
    """A contact the engine holds. It keeps the protobuf serialized (a parsed message costs more
    than a kilobyte of arena) with the few fields routing reads beside it; strings and tuples
    that many contacts share (tenant, language, skills, queue) are the engine's single copies.
    What only an assigned contact has (`Served`), its declines and its decision record are
    created when first set; its trace context is kept packed (`pack_traceparent`)."""

    serialized: bytes  # the contact_pb2.Contact without the fields beside it, see `contact`
    contact_id: str
    tenant: str
    channel: int
    language: str
    skills: tuple[str, ...]  # those the contact asked for (its queue's are added in its Req)
    callback: bool
    queue: str
    queued_at: float  # first queued: waits are measured from here, across overflow and transfer
    entered_queue_at: float  # entered the current queue: its steps count from here
    seq: int
    trace: bytes | str = ""  # its traceparent, see `traceparent`
    status: Status = Status.WAITING
    priority: int = 0
    step_index: int = -1
    step_name: str = ""
    min_prof: int = 1
    extra_languages: tuple[str, ...] = ()
    drop_skills: bool = False
    req: Req | None = None
    version: int = 0
    offer_id: str = ""
    sticky_agent: str = ""
    oldest_in: str = ""  # the queue whose `oldest` heap holds an entry of it (one push per stay)
    served: Served | None = None  # None until an agent is assigned it
    declined: dict[str, None] | None = None  # None until an agent declines or misses it
    recorded: Decision | None = None  # None until a step fires or an offer is made

    agent_id = _served_field("agent_id", "")
    assigned_at = _served_field("assigned_at", 0.0)
    channel_ended_at = _served_field("channel_ended_at", 0.0)
    held_since = _served_field("held_since", 0.0)
    hold_total = _served_field("hold_total", 0.0)

    @property
    def traceparent(self) -> str:
        """The W3C trace context the contact arrived with ("" without)."""
        return unpack_traceparent(self.trace)

    @traceparent.setter
    def traceparent(self, value: str) -> None:
        self.trace = pack_traceparent(value)

    @property
    def contact(self) -> contact_pb2.Contact:
        """The contact as the channel sent it (a new message on every read), the fields kept
        beside `serialized` put back (a snapshot's older contacts hold them in it too)."""
        message = contact_pb2.Contact.FromString(self.serialized)
        if not message.contact_id:
            message.contact_id = self.contact_id
            message.tenant = self.tenant
            message.channel = self.channel  # type: ignore[assignment]
            message.language = self.language
            message.skills.extend(self.skills)
            message.callback = self.callback
        return message

    def message_bytes(self) -> bytes:
        """`contact`, serialized."""
        return self.contact.SerializeToString()

    @property
    def declined_by(self) -> Mapping[str, None]:
        """The agents who declined or missed this contact, in that order."""
        return NOBODY if self.declined is None else self.declined

    @property
    def decision(self) -> Decision:
        """The steps that fired and the offers made, for ExplainDecision."""
        if self.recorded is None:
            self.recorded = Decision()
        return self.recorded

    def __lt__(self, other: Contact) -> bool:
        """First queued first (a queue's `oldest` heap); queued_at and seq never change."""
        return (self.queued_at, self.seq) < (other.queued_at, other.seq)

    def decline(self, agent_id: str) -> None:
        if self.declined is None:
            self.declined = {}
        self.declined[agent_id] = None

    def set_callback(self) -> None:
        """The customer turned this contact into a callback."""
        if contact_pb2.Contact.FromString(self.serialized).contact_id:  # an older contact
            message = self.contact
            message.callback = True
            self.serialized = message.SerializeToString()
        self.callback = True

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (None, {slot: value}): how pickle saves a slotted object
            state = state[1]
        state = dict(state)
        if "contact" in state:  # pickled before it had slots
            message: contact_pb2.Contact = state.pop("contact")
            state.update(
                serialized=message.SerializeToString(),
                contact_id=message.contact_id,
                tenant=message.tenant,
                channel=message.channel,
                language=message.language,
                skills=tuple(message.skills),
                callback=message.callback,
                declined=state.pop("declined_by") or None,
                recorded=state.pop("decision"),
            )
        state.pop("aged", None)  # an unused field of older snapshots
        self.oldest_in = ""  # pickled before the field: an entry may be pushed again (harmless)
        self.trace = ""
        self.served = None
        # Older snapshots hold `traceparent` and the `Served` fields by name: their properties
        # set them.
        _restore(self, state)


def without_kept_fields(message: contact_pb2.Contact) -> bytes:
    """The serialized message as a `Contact` keeps it: without the fields it keeps beside
    (id, tenant, channel, language, skills, callback), which `Contact.contact` puts back."""
    stripped = contact_pb2.Contact()
    stripped.CopyFrom(message)
    for name in ("contact_id", "tenant", "channel", "language", "skills", "callback"):
        stripped.ClearField(name)
    return stripped.SerializeToString()


def bucket_entry(c: Contact) -> tuple[int, float, int, str, int]:
    """A waiting contact's entry in its bucket's heap: highest priority first, then first queued
    (its bucket's contacts share a queue, so this is also the order of their service-level
    deadlines), then first arrived; the version tells a stale entry. Its numbers are the
    contact's own objects: an entry allocates nothing but itself."""
    return (-c.priority, c.queued_at, c.seq, c.contact_id, c.version)


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: str
    tenant: str
    agent_id: str
    contact_id: str
    expires_at: float
    step: str = ""
    via_step_language: bool = False

    __setstate__ = _restore


@dataclass
class QueueStats:
    waiting: int = 0
    offered: int = 0
    assigned: int = 0
    oldest: list[Contact] = field(default_factory=list)  # a heap, first queued first
    window: deque[tuple[float, bool, float]] = field(default_factory=deque)  # t, answered, waited
    answered: int = 0
    abandoned: int = 0
    answered_in: int = 0
    abandoned_in: int = 0
    answer_wait_total: float = 0.0
    sweep: int = 0  # where `_sweep` goes on in `oldest` (a class default for older pickles)


@dataclass
class TenantState:
    config: TenantConfig
    surge_level: int = 0
    surge_queue: str = ""
    aged: dict[tuple[str, float], int] = field(default_factory=dict)  # unused (older snapshots)
    long_idle: dict[float, int] = field(default_factory=dict)  # idle threshold -> agents
    queued: dict[str, int] = field(default_factory=dict)  # queue -> customers queued (surge)
    # (surge level, queue) -> since when the queue has been over the level's number
    over_since: dict[tuple[int, str], float] = field(default_factory=dict)
    presence_counts: dict[Presence, int] = field(default_factory=dict)
    stats: dict[str, QueueStats] = field(default_factory=dict)
    # (identity kind, HMAC-SHA256 of its value) -> (agent, until); see Engine._sticky_id
    sticky: dict[tuple[int, bytes], tuple[str, float]] = field(default_factory=dict)

    def queue_stats(self, queue: str) -> QueueStats:
        qs = self.stats.get(queue)
        if qs is None:
            qs = self.stats[queue] = QueueStats()
        return qs

    def surge_actions(self) -> frozenset[str]:
        for level in self.config.surge:
            if level.level == self.surge_level:
                return level.actions
        return frozenset()


# ---- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    contact: Contact
    position: int


@dataclass(frozen=True)
class Offered:
    offer: Offer
    contact: Contact


@dataclass(frozen=True)
class OfferWithdrawn:
    offer: Offer
    reason: str
    contact: Contact | None = None  # None: the contact is no longer the router's
    requeued: bool = False  # the contact waits in its queue again


@dataclass(frozen=True)
class Assigned:
    contact: Contact
    agent: Agent
    waited: float
    # The serialized contact_pb2.Contact as assigned, for the agent's reply: should the contact
    # end in the same engine pass, its history entry no longer holds the personal data.
    message: bytes = b""


@dataclass(frozen=True)
class Ended:
    contact: Contact
    agent_id: str
    wrap_up_code: str
    talk: float
    hold: float
    wrap_up: float
    publish: bool = True  # False when the channel already announced the end


@dataclass(frozen=True)
class StepApplied:
    contact: Contact
    step: Step
    reason: str
    waited: float


@dataclass(frozen=True)
class SurgeChanged:
    tenant: str
    queue: str
    level: int
    previous: int
    reason: str
    actions: frozenset[str]
    queued: int = 0  # customers queued in the queue then
    abandonment_rate: float = 0.0  # the queue's loss rate then
    on_break: tuple[str, ...] = ()  # the tenant's agents on break then (to be told)


@dataclass(frozen=True)
class AgentChanged:
    agent: Agent
    reason: str
    by: str = ""  # who made the change when neither the agent nor the router did


@dataclass(frozen=True)
class Transferred:
    contact: Contact
    from_agent: str
    to_queue: str


@dataclass(frozen=True)
class HoldChanged:
    contact: Contact
    agent_id: str
    held: bool


Effect = (
    Queued
    | Offered
    | OfferWithdrawn
    | Assigned
    | Ended
    | StepApplied
    | SurgeChanged
    | AgentChanged
    | Transferred
    | HoldChanged
)
