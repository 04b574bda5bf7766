"""The router's application layer: every input goes through `Router.run`, which runs the engine
under one lock and appends the input to the journal; once JetStream has the journal entry, it
hands the offers to the agents' streams and then publishes the decisions as events.

A replica is either the leader (it takes inputs) or a hot standby (it replays the leader's journal
as it is written and refuses inputs with UNAVAILABLE). See ``switchboard.router.journal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.core import telemetry
from switchboard.core.errors import DomainError, InvalidArgument, Unavailable
from switchboard.router import metrics
from switchboard.router.commands import encode_command
from switchboard.router.domain import engine as eng
from switchboard.router.domain.config import RouterConfig, TenantConfig
from switchboard.router.journal import Entry, Fenced, Journal, JournalTrimmed, Lease, Snapshots
from switchboard.router.notifier import RoutingNotifier, surge_event
from switchboard.v1 import events_pb2, router_pb2
from switchboard.v1 import router_journal_pb2 as commands_pb

logger = logging.getLogger(__name__)

_V = TypeVar("_V")

# An agent's stream: offers; on an AgentSession also surge notices, the agent's own state, its
# offers withdrawn and the answers to its actions (put there by the session); None when it is
# to end.
StreamItem = (
    router_pb2.Offer
    | events_pb2.SurgeLevelChanged
    | router_pb2.Agent
    | router_pb2.OfferWithdrawn
    | router_pb2.AgentSessionEvent
)
StreamQueue = asyncio.Queue[StreamItem | None]

REPUBLISH = 2000  # decisions a new leader publishes again, in case the old one died mid-way
NO_FULL_COLLECTIONS = 2**31 - 1  # gc threshold: young collections before a full one (never)
REPUBLISH_SECONDS = 60.0  # ... of the last minute of journal time (the bus de-duplicates 120 s)


class ManualClock:
    """The engine's clock: set from the wall clock for each input, from the journal on replay.

    A new engine's clock starts at zero, not at the wall clock: replaying a journal must run each
    entry at the time it was decided, and a clock already at "now" would pin every replayed
    entry to the time of the replay (so time-dependent choices, like the longest-idle agent,
    would come out differently)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, t: float) -> None:
        self.now = max(self.now, t)


def new_engine(config: RouterConfig | None = None) -> eng.Engine:
    """A fresh engine. Recovery starts from an empty configuration: the configuration the journal
    recorded (``apply_file_config`` entries) is the one replay must use, not today's file."""
    return eng.Engine(ManualClock(0.0), config or RouterConfig({}))


def decision_check(effects: list[eng.Effect]) -> tuple[str, ...]:
    """What an input decided that others rely on (offers and assignments, by id), kept with its
    journal entry so that a replay can prove it reached the same decisions."""
    check: list[str] = []
    for effect in effects:
        if isinstance(effect, eng.Offered):
            check.append(f"o:{effect.offer.offer_id}:{effect.offer.agent_id}")
        elif isinstance(effect, eng.Assigned):
            check.append(f"a:{effect.contact.contact_id}:{effect.agent.agent_id}")
        elif isinstance(effect, eng.Ended):
            check.append(f"e:{effect.contact.contact_id}")
    return tuple(check)


def _outcome_unheard(task: asyncio.Future[Any]) -> None:
    """The end of an input whose caller stopped waiting: its failure was already handled (a
    step-down) or is the caller's own (a domain error); only the unexpected is logged."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, Unavailable | DomainError):
        logger.error("router input failed after its caller gave up", exc_info=exc)


@dataclass
class _Input:
    """An input waiting for the engine: the call, the term it arrived in, and its outcome."""

    name: str
    args: tuple[Any, ...]
    when: Callable[[eng.Engine], bool] | None
    term: int
    outcome: asyncio.Future[Any]


@dataclass
class _Decided:
    item: _Input
    result: Any
    effects: list[eng.Effect]
    at: float


@dataclass
class _Batch:
    """One engine pass: what it decided, and the journal's commands for it."""

    decided: list[_Decided]
    commands: list[commands_pb.RouterCommand]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(decided: list[_Decided], why: str) -> None:
    for d in decided:
        if not d.item.outcome.done():
            d.item.outcome.set_exception(Unavailable(why))


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def presence_message(agent: eng.Agent) -> router_pb2.Agent:
    """What an agent's session is told of its state: who, and its presence (the rest of the
    profile is the agent's own, from its sign-in)."""
    return router_pb2.Agent(
        agent_id=agent.agent_id,
        tenant=agent.tenant,
        presence=int(agent.presence),  # type: ignore[arg-type]
        presence_reason=agent.presence_reason,
        presence_since=_ts(agent.presence_since),
        wrap_up_until=_ts(agent.wrap_up_until) if agent.wrap_up_until else None,
        missed_offers=agent.missed,
        presence_set_by=agent.presence_by,
    )


def agent_message(agent: eng.Agent) -> router_pb2.Agent:
    """The whole agent: its presence (as its session is told it) and its profile and work."""
    message = presence_message(agent)
    message.display_name = agent.display_name
    message.languages.extend(
        router_pb2.LanguageSkill(language=k, proficiency=v) for k, v in agent.languages.items()
    )
    message.skills.extend(router_pb2.Skill(name=k, proficiency=v) for k, v in agent.skills.items())
    message.capacity.extend(
        router_pb2.ChannelCapacity(channel=ch, max_contacts=n)  # type: ignore[arg-type]
        for ch, n in sorted(agent.capacity.items())
    )
    message.active_contact_ids.extend(sorted(agent.active))
    message.idle_since.CopyFrom(_ts(agent.idle_since))
    message.has_pending_offer = agent.offer_id is not None
    message.connected = agent.connected
    return message


class Router:
    def __init__(
        self,
        engine: eng.Engine,
        notifier: RoutingNotifier,
        journal: Journal | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.notifier = notifier
        self.journal = journal
        self.wall = wall
        self.leader = journal is None
        # Called once when this replica must stop leading: it lost the lease, was fenced out of
        # the journal, or cannot be sure what the journal or the bus holds (a write timed out).
        self.on_doubt: Callable[[str], None] = lambda why: None
        self._lock = asyncio.Lock()
        self._streams: dict[tuple[str, str], StreamQueue] = {}
        # Agents whose stream a team lead or supervisor opened with their own token: told of
        # surge changes (the notify_agents action) whatever their presence.
        self._leads: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._published: asyncio.Future[list[asyncio.Future[Any]]] | None = None
        self._inputs: list[_Input] = []  # waiting for the next engine pass
        self._committer: asyncio.Future[None] | None = None
        self._writing: asyncio.Future[Any] | None = None  # the journal entry being written
        self._completed: asyncio.Future[None] | None = None  # the last batch's completion
        self._delivered: asyncio.Future[None] | None = None  # the last batch's offers delivered
        self._term = 0  # bumped at every step-down: a publication of an older term is dropped
        self._recent: deque[tuple[float, eng.Effect]] = deque(maxlen=REPUBLISH)
        self.entries_since_snapshot = 0
        self.applied_seq = 0
        self.divergences = 0  # replayed entries whose decisions differ from what was recorded

    @property
    def term(self) -> int:
        """This replica's term: it changes at every step-down."""
        return self._term

    @property
    def clock(self) -> ManualClock:
        clock = self.engine.clock
        assert isinstance(clock, ManualClock)
        return clock

    # ---- inputs ----------------------------------------------------------------------------------

    async def run(
        self, name: str, *args: Any, when: Callable[[eng.Engine], bool] | None = None
    ) -> Any:
        """Run one engine input and carry out its effects, in decision order.

        Inputs are decided in the order they arrive and journaled in groups (group commit):
        while one journal entry is being written, the inputs that arrive meanwhile wait, and are
        then decided together in one engine pass and written as the next entry. An input's
        events go out only once JetStream has its journal entry, in decision order, so nothing
        is ever published that a replay of the journal would not decide again. Its offers are
        delivered once its journal entry is acknowledged, before its events are sent (recovery
        publishes again what a dead leader had not got acknowledged); the call returns once
        JetStream has acknowledged its events too. An input that arrives while nothing else is
        in flight is decided at once, in the caller's own step.

        A caller may stop waiting (a gRPC deadline cancels its handler), but an input once
        queued is carried through to the end: cancelled half-way, the engine would have decided
        something that is never journaled or never published.

        `when`, if given, is asked just before the input is decided, after every input that
        arrived earlier: False skips the input (nothing decided, nothing journaled). A bus
        handler that depends on the engine's state asks there, not before (the router's
        consumer runs a batch's handlers concurrently)."""
        if not self.leader:
            raise Unavailable("this router replica is the standby; the leader takes requests")
        item = _Input(name, args, when, self._term, asyncio.get_running_loop().create_future())
        if self._idle() and not self._lock.locked():
            # Nothing else in flight: decided here, in the caller's own step, rather than by a
            # task started for it; its journal write and the rest go on in that task, which
            # carries it through even if the caller stops waiting. (The lock is free, so
            # acquiring it hardly ever waits; if it does, whatever comes meanwhile came later,
            # and is decided after this input, which holds its place in the lock's queue.)
            await self._lock.acquire()
            try:
                decided = self._decide([item])
            except BaseException:
                self._lock.release()
                raise
            if decided.decided:
                self._committer = asyncio.ensure_future(self._commit_loop(decided))
            else:  # refused or skipped: nothing to write
                self._lock.release()
            return await self._outcome(item)
        return await self._queued(item)

    async def durable(self, view: Callable[[], _V]) -> _V:
        """`view` of the engine's state, returned once JetStream holds the journal entry of every
        decision it shows: a read (queue statistics, the agents, a contact's position or its
        decision) never shows what a replica dying before that entry was acknowledged would undo.

        The view is taken when no decided input is waiting for its journal entry to be sent
        (between engine passes: the decision lock is free), then the last entry sent is awaited
        (about one JetStream round trip; decisions go on meanwhile). Unavailable if that entry
        was not written: the replica steps down and recovers from the journal."""
        async with self._lock:
            shown = view()
            written = self._writing
        if written is not None:
            if not written.done():
                await asyncio.wait({written})  # not cancelled with the reader
            if written.cancelled() or written.exception() is not None:
                raise Unavailable("this router replica could not journal its state; try again")
        return shown

    async def _queued(self, item: _Input) -> Any:
        """Queue `item` for the next engine pass and wait for its outcome."""
        self._inputs.append(item)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_loop())
        return await self._outcome(item)

    @staticmethod
    async def _outcome(item: _Input) -> Any:
        try:
            return await asyncio.shield(item.outcome)
        except asyncio.CancelledError:
            item.outcome.add_done_callback(_outcome_unheard)
            raise

    def _idle(self) -> bool:
        """No input waits to be decided, and no journal entry is being written."""
        return (
            not self._inputs
            and (self._committer is None or self._committer.done())
            and (self._writing is None or self._writing.done())
        )

    async def _commit_loop(self, first: _Batch | None = None) -> None:
        """Write `first` (decided by its caller, which holds the lock for it), then decide and
        write what waits, one journal entry at a time."""
        if first is not None:
            await self._commit_guarded([d.item for d in first.decided], first)
        while self._inputs:
            writing = self._writing
            if writing is not None and not writing.done():
                # Group commit: one entry in flight; what arrives meanwhile goes in the next.
                await asyncio.wait({writing})
            batch, self._inputs = self._inputs, []
            await self._commit_guarded(batch)

    async def _commit_guarded(self, batch: list[_Input], decided: _Batch | None = None) -> None:
        try:
            await self._commit(batch, decided)
        except BaseException as exc:  # the loop itself stopping: nobody is left waiting
            for item in batch:
                if not item.outcome.done():
                    item.outcome.set_exception(
                        Unavailable("the router stopped before deciding; try again")
                    )
            if isinstance(exc, asyncio.CancelledError):
                raise
            logger.exception("router commit failed")

    async def _commit(self, batch: list[_Input], prepared: _Batch | None = None) -> None:
        """Decide `batch` in one engine pass (unless `prepared`: decided already, under the
        lock, which is then held), write it as one journal entry, and hand its publication and
        completion to tasks of their own."""
        if prepared is None:
            await self._lock.acquire()
            try:
                prepared = self._decide(batch)
            except BaseException:
                self._lock.release()
                raise
        decided = prepared.decided
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            if not decided:
                return
            written: asyncio.Future[Any] | None = None
            if self.journal is not None:
                try:
                    written = await self.journal.append(prepared.commands)
                except Exception as exc:  # the engine moved on without its journal entry
                    self.step_down(f"journal append failed: {exc!r}")
                    _fail(decided, "this router replica lost its journal; try again")
                    return
                self.entries_since_snapshot += 1
            self._writing = written
            publication = asyncio.ensure_future(
                self._publish_in_order(self._published, written, delivered, decided, self._term)
            )
            self._published = publication
        finally:
            self._lock.release()
        self._completed = asyncio.ensure_future(
            self._complete(
                decided,
                written,
                publication,
                self._delivered,
                delivered,
                self._completed,
                self._term,
            )
        )
        # Set however the completion ends (cancelled before its first step, say): the
        # publication waits for it.
        self._completed.add_done_callback(lambda _: _resolve(delivered))
        self._delivered = delivered

    def _decide(self, batch: list[_Input]) -> _Batch:
        """Run `batch` through the engine (the caller holds the lock): what it decided, and
        the journal's commands for it."""
        decided: list[_Decided] = []
        unavailable = self._unavailable()
        commands: list[commands_pb.RouterCommand] = []
        for item in batch:
            if unavailable is None and item.term != self._term:
                unavailable = "this router replica stepped down; the leader takes requests"
            if unavailable is not None:
                item.outcome.set_exception(Unavailable(unavailable))
                continue
            if item.when is not None and not item.when(self.engine):
                item.outcome.set_result(None)
                continue
            try:
                # Encoded before the engine runs it: a call the journal cannot hold is
                # refused while it has changed nothing.
                command = (
                    encode_command(item.name, 0.0, item.args) if self.journal is not None else None
                )
                self.clock.advance(self.wall())
                at = self.clock.now
                result = getattr(self.engine, item.name)(*item.args)
            except Exception as exc:  # a DomainError here changed nothing
                item.outcome.set_exception(exc)
                continue
            effects: list[eng.Effect] = result[1] if isinstance(result, tuple) else result
            if command is not None:
                command.at = at
                command.check.extend(decision_check(effects))
                commands.append(command)
            decided.append(_Decided(item, result, effects, at))
        return _Batch(decided, commands)

    def _unavailable(self) -> str | None:
        if not self.leader:
            return "this router replica stepped down; the leader takes requests"
        if self.journal is not None and not self.journal.connected:
            # Refused before the engine changes anything: nothing to resolve afterwards.
            return "the router cannot reach its journal (NATS); try again"
        return None

    async def _complete(
        self,
        decided: list[_Decided],
        written: asyncio.Future[Any] | None,
        publication: asyncio.Future[list[asyncio.Future[Any]]],
        previous_delivered: asyncio.Future[None] | None,
        delivered: asyncio.Future[None],
        previous: asyncio.Future[None] | None,
        term: int,
    ) -> None:
        """Carry a batch through to its agents and its callers.

        Its offers go to the agents' streams as soon as JetStream has its journal entry (after
        the batch before it's offers), before its events are sent: the journal makes
        the decision durable, and a router that dies before the events are acknowledged
        publishes them again when it recovers (`republish_recent`, with the same event ids, so
        JetStream keeps each once). Its callers get their results, and its contact events are
        acknowledged, only once JetStream has acknowledged its events too, after the batch
        before it."""
        try:
            if previous_delivered is not None:
                await asyncio.wait({previous_delivered})
            if written is not None and not written.done():
                # Awaited directly: the offer goes out in the loop's turn the acknowledgement
                # wakes this task in (asyncio.wait would take one more). Nothing cancels this
                # task but the loop's end. A failure steps down in `_publish_in_order`.
                with contextlib.suppress(Exception):
                    await written
            durable = written is None or (not written.cancelled() and written.exception() is None)
            if durable and term == self._term:  # a replica that stepped down delivers nothing
                for d in decided:
                    self._deliver(d.effects, d.at)
                self._wake.set()
        finally:
            delivered.set_result(None)
        try:
            acks = await publication
        except Exception as exc:
            _fail(decided, str(exc) if isinstance(exc, Unavailable) else "try again")
            return
        if previous is not None:
            await asyncio.wait({previous})
        if acks:
            outcomes = await asyncio.gather(*acks, return_exceptions=True)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:
                # Journaled but maybe not published: a new term republishes the recent decisions.
                self.step_down(f"publishing decisions failed: {failed[0]!r}")
                _fail(decided, "the router could not publish its decision; try again")
                return
        for d in decided:
            if not d.item.outcome.done():
                d.item.outcome.set_result(d.result)

    async def _publish_in_order(
        self,
        previous: asyncio.Future[Any] | None,
        written: asyncio.Future[Any] | None,
        delivered: asyncio.Future[None],
        decided: list[_Decided],
        term: int,
    ) -> list[asyncio.Future[Any]]:
        """Send the events of `decided` once the journal holds them, after those of the entry
        before, and once its offers are on the agents' streams (the agents need not wait for
        the events' sending)."""
        if written is not None:
            try:
                await written
            except Fenced as exc:
                self.step_down(str(exc), cause="fenced")
                raise Unavailable("this router replica lost the lead") from None
            except Exception as exc:
                # Unknown outcome (no ack in time, connection lost): the journal, re-read after
                # stepping down, says whether the entry landed.
                self.step_down(f"journal write failed: {exc!r}")
                raise Unavailable("this router replica lost its journal; try again") from None
        if previous is not None:
            await asyncio.wait({previous})
            if previous.cancelled() or previous.exception() is not None:
                # Its own run stepped down; a publication cut short (the loop stopping) did not.
                if term == self._term:
                    self.step_down("an earlier decision was not published")
                raise Unavailable("an earlier decision was not published; try again")
        if not delivered.done():
            await asyncio.wait({delivered})
        if term != self._term:
            raise Unavailable("this router replica stepped down; try again")
        try:
            for d in decided:
                for effect in d.effects:
                    await self.notifier.publish(effect, d.at)
        except BaseException:
            self.notifier.drop_unsent()  # not to go out with a later publication
            raise
        return await self.notifier.flush()

    def step_down(self, why: str, cause: str = "doubt") -> None:
        """Stop deciding: the journal or the bus may not hold what this replica believes."""
        if self.leader:
            logger.critical("router replica steps down: %s", why)
            metrics.STEP_DOWNS.labels(cause).inc()
        self.leader = False
        self._term += 1
        self.on_doubt(why)

    async def settled(self) -> bool:
        """Wait until every input decided so far is journaled and its events acknowledged by
        JetStream; False if any failed. (A snapshot taken sooner could cover a decision whose
        events are then lost, and recovery from it would never publish them again.)"""
        return await _settled(self._published)

    def _deliver(self, effects: list[eng.Effect], at: float) -> None:
        for effect in effects:
            if isinstance(effect, eng.Offered):
                self._push_offer(effect.offer, effect.contact)
            elif isinstance(effect, eng.OfferWithdrawn):
                self._push(
                    effect.offer.tenant,
                    effect.offer.agent_id,
                    router_pb2.OfferWithdrawn(offer_id=effect.offer.offer_id, reason=effect.reason),
                )
            elif isinstance(effect, eng.AgentChanged):
                # Its state now (a later change in the same pass is told again: the last wins).
                agent = effect.agent
                self._push(agent.tenant, agent.agent_id, presence_message(agent))
            elif isinstance(effect, eng.SurgeChanged) and "notify_agents" in (
                effect.actions | self._lowered_actions(effect)
            ):
                self._push_surge(effect, at)

    def _lowered_actions(self, effect: eng.SurgeChanged) -> frozenset[str]:
        """The actions of the level a change leaves (its end is told as its start was)."""
        for level in self.engine.tenant(effect.tenant).config.surge:
            if level.level == effect.previous:
                return level.actions
        return frozenset()

    def _push_surge(self, effect: eng.SurgeChanged, at: float) -> None:
        """Tell the agents on break (their break is to end) and the team leads and
        supervisors whose streams are open."""
        notice = surge_event(effect, at)
        told = {(effect.tenant, a) for a in effect.on_break}
        told |= {lead for lead in self._leads if lead[0] == effect.tenant}
        for tenant, agent_id in sorted(told):
            self._push(tenant, agent_id, notice)

    def _push(self, tenant: str, agent_id: str, item: StreamItem) -> None:
        queue = self._streams.get((tenant, agent_id))
        if queue is not None:
            queue.put_nowait(item)

    def _push_offer(self, offer: eng.Offer, c: eng.Contact) -> None:
        queue = self._streams.get((offer.tenant, offer.agent_id))
        if queue is None or offer.offer_id not in self.engine.offers:
            return  # no stream, or the offer was withdrawn before it could be delivered
        queue.put_nowait(
            router_pb2.Offer(
                offer_id=offer.offer_id,
                agent_id=offer.agent_id,
                contact=c.contact,
                expires_at=_ts(offer.expires_at),
                traceparent=c.traceparent,
                queue=c.queue,
                step=offer.step,
            )
        )

    def now(self) -> float:
        """The current time for read-only views (statistics, positions)."""
        self.clock.advance(self.wall())
        return self.clock.now

    # ---- timers ----------------------------------------------------------------------------------

    async def tick_forever(self) -> None:
        """Run the engine's timers (offer expiry, routing steps, surge, wrap-up) when they are due."""
        while True:
            due = self.engine.next_due()
            if not self.leader:
                await asyncio.sleep(0.5)
                continue
            # At least a millisecond: wait_for with no time left would not yield to the loop.
            timeout = 1.0 if due is None else min(1.0, max(0.001, due - self.wall()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            due = self.engine.next_due()
            if self.leader and due is not None and due <= self.wall():
                try:
                    await self.run("tick")
                except Unavailable:
                    pass
                except Exception:
                    logger.exception("router tick failed")
                    await asyncio.sleep(0.5)

    # ---- bus handlers (idempotent) -----------------------------------------------------------

    async def on_contact_created(self, event: events_pb2.ContactCreated) -> None:
        contact = event.contact
        if not contact.contact_id:
            raise InvalidArgument("contact.contact_id")
        if contact.tenant != event.meta.tenant:
            raise InvalidArgument("contact.tenant", "differs from meta.tenant")
        if contact.survey_answer:
            # Nothing but a rating in answer to the satisfaction survey: the case service records
            # it; there is nothing for an agent to do, so it is neither queued nor counted.
            logger.info("contact %s answers a survey: not queued", contact.contact_id)
            return
        await self.run("add_contact", contact, telemetry.current_traceparent())

    async def on_contact_abandoned(self, event: events_pb2.ContactAbandoned) -> None:
        await self.run("withdraw_contact", event.contact_id, "abandoned")

    async def on_contact_ended(self, event: events_pb2.ContactEnded) -> None:
        if event.meta.source == "router":
            return  # our own wrap-up
        await self.run("channel_ended", event.contact_id)

    async def on_contact_transferred(self, event: events_pb2.ContactTransferred) -> None:
        if event.meta.source == "router":
            return

        def applies(engine: eng.Engine) -> bool:
            c = engine.contacts.get(event.contact_id)
            return c is not None and not (
                c.queue == event.to_queue and c.status == eng.Status.WAITING
            )

        await self.run(
            "transfer", event.meta.tenant, event.contact_id, event.to_queue, "", when=applies
        )

    async def on_contact_held(self, event: events_pb2.ContactHeld) -> None:
        if event.meta.source == "router":
            return

        def applies(engine: eng.Engine) -> bool:
            c = engine.contacts.get(event.contact_id)
            return c is not None and c.status == eng.Status.ASSIGNED

        await self.run(
            "set_hold", event.meta.tenant, "", event.contact_id, event.held, when=applies
        )

    # ---- agents' streams ---------------------------------------------------------------------

    async def connect(self, tenant: str, agent_id: str, lead: bool = False) -> StreamQueue:
        """Open an agent's stream of offers (and, on an AgentSession, surge notices); `lead`:
        a team lead or supervisor opened it for themselves."""
        self.engine.agent(tenant, agent_id)  # NotFound before anything else
        queue: StreamQueue = asyncio.Queue()
        old = self._streams.get((tenant, agent_id))
        if old is not None:
            old.put_nowait(None)  # a newer stream replaces an older one
        self._streams[(tenant, agent_id)] = queue
        if lead:
            self._leads.add((tenant, agent_id))
        else:
            self._leads.discard((tenant, agent_id))
        # The agent's state as the stream opens, before anything else on it; its changes follow.
        queue.put_nowait(presence_message(self.engine.agent(tenant, agent_id)))
        pending = self.engine.agent(tenant, agent_id).offer_id
        await self.run("set_connected", tenant, agent_id, True)
        if pending and pending in self.engine.offers:
            offer = self.engine.offers[pending]
            contact = self.engine.contacts.get(offer.contact_id)
            if contact is not None:
                self._push_offer(offer, contact)  # an offer made before a restart or failover
        return queue

    async def disconnect(self, tenant: str, agent_id: str, queue: StreamQueue) -> None:
        if self._streams.get((tenant, agent_id)) is not queue:
            return
        del self._streams[(tenant, agent_id)]
        self._leads.discard((tenant, agent_id))
        with contextlib.suppress(DomainError):
            await self.run("set_connected", tenant, agent_id, False)

    async def accept(self, tenant: str, agent_id: str, offer_id: str) -> eng.Assigned:
        effects = await self.run("accept", tenant, agent_id, offer_id)
        return next(e for e in effects if isinstance(e, eng.Assigned))

    # ---- what agents, supervisors and admins ask (the gRPC servicers' handlers) ---------------

    async def sign_in(
        self,
        tenant: str,
        agent_id: str,
        display_name: str,
        languages: dict[str, int],
        skills: dict[str, int],
        capacity: dict[int, int],
        presence: eng.Presence,
    ) -> eng.Agent:
        agent, _ = await self.run(
            "sign_in", tenant, agent_id, display_name, languages, skills, capacity, presence
        )
        return agent  # type: ignore[no-any-return]

    async def sign_out(self, tenant: str, agent_id: str, by: str = "") -> eng.Agent:
        """`by`: who signs the agent out when not the agent itself (a supervisor's id)."""
        agent, _ = await self.run("sign_out", tenant, agent_id, by)
        return agent  # type: ignore[no-any-return]

    async def set_presence(
        self, tenant: str, agent_id: str, presence: eng.Presence, reason: str, by: str = ""
    ) -> eng.Agent:
        """`by`: who sets it when not the agent itself (a supervisor's id)."""
        agent, _ = await self.run("set_presence", tenant, agent_id, presence, reason, False, by)
        return agent  # type: ignore[no-any-return]

    async def decline(self, tenant: str, agent_id: str, offer_id: str, reason: str) -> None:
        await self.run("decline", tenant, agent_id, offer_id, reason)

    async def wrap_up(self, tenant: str, agent_id: str, contact_id: str, code: str) -> None:
        await self.run("wrap_up", tenant, agent_id, contact_id, code)

    async def transfer(self, tenant: str, contact_id: str, queue: str, agent_id: str) -> None:
        await self.run("transfer", tenant, contact_id, queue, agent_id)

    async def set_hold(self, tenant: str, agent_id: str, contact_id: str, held: bool) -> None:
        await self.run("set_hold", tenant, agent_id, contact_id, held)

    async def apply_tenant_config(self, config: TenantConfig, actor: str = "") -> None:
        await self.run("apply_tenant_config", config, actor)

    def close_streams(self) -> None:
        for queue in self._streams.values():
            queue.put_nowait(None)
        self._streams.clear()
        self._leads.clear()

    # ---- recovery, standby, snapshots --------------------------------------------------------

    def apply_entry(self, entry: Entry) -> None:
        """Replay one journal entry (a standby, or recovery after a restart), in journal time."""
        for call in entry.calls:
            self.clock.advance(call.at)
            try:
                result = getattr(self.engine, call.name)(*call.args)
            except DomainError:
                result = []  # it failed for the leader too, and changed nothing
            effects = result[1] if isinstance(result, tuple) else result
            if call.check is not None and decision_check(effects) != call.check:
                self.divergences += 1
                metrics.REPLAY_DIVERGENCES.inc()
                logger.error(
                    "journal entry %d (%s) replayed to other decisions than were published: "
                    "%s != %s",
                    entry.seq,
                    call.name,
                    decision_check(effects),
                    call.check,
                )
            for effect in effects:
                self._recent.append((call.at, effect))
        self.applied_seq = entry.seq

    def reset(self, engine: eng.Engine, seq: int) -> None:
        """Start over from `engine` at journal sequence `seq` (recovery, after stepping down)."""
        replaced, self.engine = self.engine, engine
        if replaced is not engine:
            replaced.release()  # frozen, its cycles would never be collected
        self.applied_seq = seq
        self._published = None
        self._writing = None
        self._completed = None
        self._delivered = None
        self.entries_since_snapshot = 0

    async def republish_recent(self) -> None:
        """A new leader publishes the last decisions again: the old leader (or this replica, in
        an earlier term) may have journaled them but not published them. Event ids make the
        repeats harmless."""
        recent, self._recent = list(self._recent), deque(maxlen=REPUBLISH)
        # A decision is published within seconds of being journaled, or its leader steps down
        # and the next term publishes it again: only the last minute can be missing. Older
        # ones are not sent again (past JetStream's duplicate window they would be stored twice).
        since = (recent[-1][0] if recent else 0.0) - REPUBLISH_SECONDS
        for at, effect in recent:
            if at >= since and isinstance(
                effect, eng.Queued | eng.Offered | eng.Assigned | eng.Ended
            ):
                await self.notifier.publish(effect, at)
        acks = await self.notifier.flush()
        if acks:
            await asyncio.gather(*acks)

    async def snapshot(self, snapshots: Snapshots) -> int | None:
        """Write the engine's state and the journal sequence it covers (None: not now, an input
        up to that sequence failed, or this replica stepped down meanwhile).

        Serialising a large engine takes seconds (a million waiting contacts), and decisions
        would wait while it runs. So the state is copied on write instead: under the lock, only
        the journal sequence is read and a child process forked, which holds the engine as it
        was at that sequence and serialises it while this process goes on deciding. Waiting for
        the decisions up to that sequence to be journaled and their events acknowledged comes
        after the lock (the snapshot is dropped if any of them failed), so decisions wait only
        for the fork.

        Right before the fork every object is frozen out of the collector's generations
        (`gc.freeze`): a collection in this process, and none runs in the child, then no longer
        writes to the long-lived engine's objects, which would copy every page the child still
        shares, and the full collections on the offer path walk only what was created since the
        last snapshot (at 100,000 waiting contacts, a full collection took 65 to 300 ms, 0.3 to
        1.7 s while a child was alive)."""
        async with self._lock:
            if not self.leader:
                return None
            assert self.journal is not None
            seq = self.journal.last_seq
            term = self._term
            published = self._published
            entries, self.entries_since_snapshot = self.entries_since_snapshot, 0
            gc.freeze()
            child = _fork_serialiser(self.engine)
            data = b"" if child is not None else _serialise(self.engine)
        try:
            settled = await _settled(published)
        except BaseException:
            if child is not None:
                _discard(*child)
            raise
        if not settled or term != self._term:
            if child is not None:
                _discard(*child)
            self.entries_since_snapshot += entries
            return None
        try:
            if child is not None:
                data = await asyncio.to_thread(_collect, *child)
            await snapshots.save(data, seq)
        except BaseException:
            # Not written: the next turn of the snapshot loop tries again (until one is written,
            # the journal keeps its entries, personal data included).
            self.entries_since_snapshot += entries
            raise
        # The snapshot is stored and recorded: the journal keeps only what comes after it (and
        # with it the personal data of contacts that have ended since).
        try:
            await self.journal.trim(seq)
        except Exception as exc:  # the snapshot stands; the next one trims up to its own
            logger.warning("router journal not trimmed to snapshot %d: %r", seq, exc)
        return seq


def collect_young_only() -> None:
    """Freeze every object now alive out of the collector's generations, and stop automatic
    collections of the oldest generation: from here on the collector walks only young objects.

    A full collection walks every tracked object in the oldest generation, and a router
    holding 100,000 waiting contacts paused its decisions for 65 to 300 ms each time one ran
    (a million: about a second); between snapshots tens of objects a decision reach that
    generation. So the router never collects it automatically: whatever reaches it is frozen at
    the next snapshot (`Router.snapshot`) instead. The cost: cyclic garbage that survives two
    young collections is not reclaimed (the engine's own state makes none; objects it drops
    are freed by their reference counts)."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_FULL_COLLECTIONS)


async def _settled(last: asyncio.Future[list[asyncio.Future[Any]]] | None) -> bool:
    """Whether the publication `last`, and so every one before it, is done and its events are
    acknowledged (waiting for them); False if any failed."""
    if last is None:
        return True
    await asyncio.wait({last})
    if last.cancelled() or last.exception() is not None:
        return False
    acks = last.result()
    if acks:
        await asyncio.wait(acks)
        if any(a.cancelled() or a.exception() is not None for a in acks):
            return False
    return True


def _serialise(engine: eng.Engine) -> bytes:
    return pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL)


def _fork_serialiser(engine: eng.Engine) -> tuple[int, int] | None:
    """(pid, pipe) of a child process that writes `engine` serialised to the pipe and exits;
    None where processes cannot be forked (the caller serialises in-process)."""
    if not hasattr(os, "fork"):
        return None
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:  # out of memory or processes: serialise here instead
        logger.warning("router snapshot serialised in-process: fork failed: %r", exc)
        os.close(read)
        os.close(write)
        return None
    if pid == 0:  # the child: only serialise and write; nothing of the parent's I/O is touched
        status = 1
        try:
            gc.disable()  # short-lived: a collection would only write to pages shared with the parent
            signal.set_wakeup_fd(-1)  # signals are the parent's to handle
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            os.close(read)
            view = memoryview(_serialise(engine))
            while view:
                view = view[os.write(write, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    return pid, read


def _collect(pid: int, read: int) -> bytes:
    """What the forked serialiser wrote, once it has exited cleanly."""
    chunks = []
    try:
        while chunk := os.read(read, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the snapshot serialiser exited with status {status}")
    return b"".join(chunks)


def _discard(pid: int, read: int) -> None:
    """Stop a forked serialiser whose snapshot is not wanted; it is reaped in a thread (a large
    child takes a while to exit)."""
    os.close(read)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()


async def recover(journal: Journal, snapshots: Snapshots) -> tuple[eng.Engine, int]:
    """The engine as the journal says it is: the newest snapshot, or an empty engine, to which
    the caller replays every entry after the returned sequence."""
    loaded = await snapshots.load()
    key = await snapshots.sticky_key()
    if loaded is not None:
        data, seq = loaded
        engine: eng.Engine = pickle.loads(data)
        engine.use_sticky_key(key)
        logger.info("router snapshot at journal sequence %d loaded", seq)
        return engine, seq
    engine = new_engine()
    engine.use_sticky_key(key)
    return engine, 0


async def cancelled(task: asyncio.Task[Any], every: float = 0.5) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again while it runs: on Python
    3.11, asyncio.wait_for (under nats-py's next_msg) can turn a cancellation that arrives as
    its timeout fires into the timeout, which a loop that waits again then swallows; a standby
    waiting for its follower would then never take the lead."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


async def lead_or_follow(
    router: Router,
    journal: Journal,
    lease: Lease,
    became_leader: Callable[[], Any],
    poll: float = 0.5,
    keeping: Callable[[asyncio.Task[None]], Any] = lambda task: None,
    catch_up_seconds: float = 3.0,
    snapshots: Snapshots | None = None,
) -> None:
    """Follow the journal as a standby until the lease is ours; then catch up and lead.

    A replica that fell behind a snapshot (the entries it still needs were purged) loads the
    newest snapshot from `snapshots` and reads on from there (without it, JournalTrimmed).

    The lease is renewed from the moment it is taken (the task is handed to `keeping`), not
    once the replica leads: catching up and taking the lead can outlast the lease's TTL on a
    busy machine, and a lease left to expire meanwhile goes to the other replica, which then
    fences this one out, and so on, both taking turns and neither routing."""
    follower: asyncio.Task[None] | None = None

    async def reload(trimmed: JournalTrimmed) -> None:
        if snapshots is None:
            raise trimmed
        logger.info("router replica behind the journal's start (%s): loading a snapshot", trimmed)
        router.reset(*await recover(journal, snapshots))

    async def follow() -> None:
        while True:
            try:
                async for entry in journal.follow(router.applied_seq):
                    if entry.seq > router.applied_seq:
                        router.apply_entry(entry)
                return
            except JournalTrimmed as trimmed:
                await reload(trimmed)

    try:
        while True:
            try:
                if await lease.try_acquire():
                    break
            except Exception as exc:  # NATS unreachable: keep following, try again
                logger.warning("router lease check failed: %r", exc)
            if follower is None or follower.done():
                follower = asyncio.create_task(follow())
            await asyncio.sleep(poll)
    finally:
        if follower is not None:
            await cancelled(follower)
    term = router.term
    keeping(asyncio.create_task(keep_lease(router, lease)))

    async def catch_up() -> None:
        # To the end of the journal; read again if it grew meanwhile (a write of this
        # replica's earlier term that was still buffered when the connection dropped).
        while True:
            try:
                async with contextlib.aclosing(journal.read(router.applied_seq)) as entries:
                    async for entry in entries:
                        if entry.seq > router.applied_seq:
                            router.apply_entry(entry)
            except JournalTrimmed as trimmed:
                await reload(trimmed)
                continue
            tail = await journal.tail_seq()
            if tail <= router.applied_seq:
                return

    # A hot standby is a few entries behind. A request lost while a cluster stream elects a
    # leader would hold this for the client's whole timeout; past the deadline the replica
    # re-reads the journal instead (with deadlines of its own) and takes the lead again.
    await asyncio.wait_for(catch_up(), catch_up_seconds)
    if router.term != term:
        raise Unavailable("the lease was lost while catching up")
    journal.last_seq = router.applied_seq
    router.leader = True
    await became_leader()


async def keep_lease(router: Router, lease: Lease) -> None:
    """Renew the lease at a third of its TTL, for the rest of this term (from taking the lease
    to the next step-down); a failed renewal is retried until the lease would have expired,
    then the replica steps down (the standby may hold it by then)."""
    interval = max(0.2, lease.ttl / 3)
    last_ok = time.monotonic()
    term = router.term
    while router.term == term:
        await asyncio.sleep(interval)
        try:
            if await lease.renew():
                last_ok = time.monotonic()
                continue
            reason = "another replica holds it"
        except Exception as exc:
            reason = f"renewal failed: {exc}"
            if time.monotonic() - last_ok < lease.ttl * 0.8:
                logger.warning("router lease %s; retrying", reason)
                continue
        router.step_down(f"router lease lost ({reason})", cause="lease")
        return
