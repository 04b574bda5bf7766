"""The load of the chaos suite: a ledger of contacts published at a steady rate (most on the bus,
a share through chat's Socket.IO visitor API as a customer would), and agents over real gRPC
that accept offers and wrap up, and find the leader again whenever the router fails over.

A contact counts as accepted only once the platform has acknowledged it: JetStream's ack for a
bus publish (retried with the same event id until then, so JetStream de-duplicates), the chat's
message ack for a visitor. Every agent records what it accepted, as the router confirmed it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import socketio

from switchboard.core import events
from switchboard.core.bus import Bus
from switchboard.testing.agents import AgentClient
from switchboard.v1 import contact_pb2, events_pb2, router_pb2

LANGUAGES = ["ko", "zh", "en", "ja"]
LANGUAGE_WEIGHTS = [40, 25, 20, 15]
SKILLS = ["billing", "technical", "account"]
# Give up on one contact after this long: well inside JetStream's 120 s duplicate window, so a
# retry of the same event is always de-duplicated.
PUBLISH_DEADLINE = 60.0
SIGN_IN_SECONDS = 5.0
# How often an agent compares its contacts with the router's list of them.
RECONCILE_SECONDS = 3.0
# Outcomes of an RPC that leave its effect unknown: the agent reconnects and re-reads its state.
IN_DOUBT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
}


def now() -> float:
    return time.monotonic()


class Timeline:
    """When the platform was seen doing its work, by kind: published (JetStream acked a contact),
    chat (a visitor's contact was acked), accepted (the router confirmed an agent's accept),
    wrapped (a wrap-up), recorded (the case store's contacts changed)."""

    def __init__(self) -> None:
        self.marks: dict[str, list[float]] = defaultdict(list)
        self._changed = asyncio.Event()

    def mark(self, kind: str, at: float | None = None) -> None:
        bisect.insort(self.marks[kind], now() if at is None else at)
        self._changed.set()

    def first_after(self, kind: str, t0: float) -> float | None:
        marks = self.marks.get(kind, [])
        i = bisect.bisect_right(marks, t0)
        return marks[i] if i < len(marks) else None

    def between(self, kind: str, t0: float, t1: float) -> list[float]:
        """The marks of `kind` after t0, up to and including t1."""
        marks = self.marks.get(kind, [])
        return marks[bisect.bisect_right(marks, t0) : bisect.bisect_right(marks, t1)]

    async def wait_for(self, kinds: list[str], after: float, timeout: float) -> bool:
        """True once every kind has a mark after `after`; False after `timeout` seconds."""
        deadline = now() + timeout
        while True:
            if all(self.first_after(k, after) is not None for k in kinds):
                return True
            left = deadline - now()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))


# ---- the ledger --------------------------------------------------------------------------------


@dataclass
class Entry:
    n: int
    via: str  # bus | chat
    contact_id: str  # a chat contact's id is known once chat acknowledges it
    scheduled: float
    acked: float | None = None
    attempts: int = 0
    error: str = ""


class Ledger:
    """Publishes contacts at `rate` per second until `count` are out and `more()` says stop."""

    def __init__(
        self,
        bus: Bus,
        tenant: str,
        run_id: str,
        timeline: Timeline,
        chat_url: str = "",
        chat_share: float = 0.0,
        seed: int = 1,
    ) -> None:
        self.bus = bus
        self.tenant = tenant
        self.run_id = run_id
        self.timeline = timeline
        self.chat_url = chat_url
        self.chat_share = chat_share if chat_url else 0.0
        self.rng = random.Random(seed)
        self.entries: list[Entry] = []
        self.errors: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self.done = asyncio.Event()

    @property
    def accepted(self) -> list[Entry]:
        return [e for e in self.entries if e.acked is not None]

    async def run(self, count: int, rate: float, more: Callable[[], bool]) -> None:
        start = now()
        n = 0
        try:
            while n < count or more():
                due = start + n / rate
                if due > now():
                    await asyncio.sleep(due - now())
                self._spawn(n)
                n += 1
            if self._tasks:
                await asyncio.wait(set(self._tasks))
        finally:
            self.done.set()

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, n: int) -> None:
        language = self.rng.choices(LANGUAGES, LANGUAGE_WEIGHTS)[0]
        skill = self.rng.choice(SKILLS) if self.rng.random() < 0.5 else ""
        if self.rng.random() < self.chat_share:
            entry = Entry(n, "chat", "", now())
            work = self._visitor(entry, language, skill)
        else:
            entry = Entry(n, "bus", f"chaos-{self.run_id}-{n:05d}", now())
            work = self._publish(entry, self._event(entry, language, skill))
        self.entries.append(entry)
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _event(self, entry: Entry, language: str, skill: str) -> events_pb2.ContactCreated:
        channel = contact_pb2.CHANNEL_CHAT
        contact = contact_pb2.Contact(
            contact_id=entry.contact_id,
            tenant=self.tenant,
            channel=channel,
            language=language,
            skills=[skill] if skill else [],
            customer_name=f"Chaos customer {entry.n}",
            identities=[
                contact_pb2.CustomerIdentity(
                    kind=contact_pb2.IDENTITY_KIND_EMAIL,
                    value=f"chaos-{self.run_id}-{entry.n}@example.com",
                )
            ],
            content=[contact_pb2.ContentPart(content_type="text/plain", text="ledger contact")],
            conversation_id=entry.contact_id,
        )
        contact.created_at.GetCurrentTime()
        return events_pb2.ContactCreated(
            meta=events.new_meta(self.tenant, channel, "chaos-ledger"), contact=contact
        )

    async def _publish(self, entry: Entry, event: events_pb2.ContactCreated) -> None:
        """Until JetStream acks it: the same event (same id) every time."""
        deadline = entry.scheduled + PUBLISH_DEADLINE
        pause = 0.2
        while now() < deadline:
            entry.attempts += 1
            try:
                await self.bus.publish(event, timeout=2.0)
            except Exception as exc:
                entry.error = f"{type(exc).__name__}: {exc}"[:200]
                self.errors[type(exc).__name__] += 1
                # Back off: during an outage every unacknowledged contact is waiting to retry.
                await asyncio.sleep(pause * self.rng.uniform(0.5, 1.5))
                pause = min(pause * 2, 2.0)
                continue
            entry.acked = now()
            self.timeline.mark("published", entry.acked)
            return

    async def _visitor(self, entry: Entry, language: str, skill: str) -> None:
        """A customer on the web chat: a visitor token, the /customer socket, one message; a
        message without an ack is sent again by the same visitor (as the widget does)."""
        token = ""
        deadline = entry.scheduled + PUBLISH_DEADLINE
        auth = {
            "name": f"Chaos visitor {entry.n}",
            "email": f"chaos-{self.run_id}-visitor-{entry.n}@example.com",
            "language": language,
            **({"topic": skill} if skill else {}),
        }
        while now() < deadline:
            entry.attempts += 1
            sio = socketio.AsyncClient(reconnection=False)
            try:
                if not token:
                    token = await self._visitor_token()
                await sio.connect(
                    self.chat_url,
                    namespaces=["/customer"],
                    auth={"token": token, **auth},
                    transports=["websocket"],
                    wait_timeout=5,
                )
                ack = await sio.call(
                    "message", {"text": "ledger visitor"}, namespace="/customer", timeout=10
                )
                if not isinstance(ack, dict) or not ack.get("ok"):
                    raise RuntimeError(f"refused: {ack}")
                entry.contact_id = str(ack["contact_id"])
                entry.acked = now()
                self.timeline.mark("chat", entry.acked)
                return
            except Exception as exc:
                entry.error = f"{type(exc).__name__}: {exc}"[:200]
                self.errors[f"chat {type(exc).__name__}"] += 1
                await asyncio.sleep(0.3)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sio.disconnect(), 3)

    async def _visitor_token(self) -> str:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(
                f"{self.chat_url}/api/visitor-token", json={"tenant": self.tenant}
            ) as r:
                if r.status != 200:
                    raise RuntimeError(f"visitor-token: HTTP {r.status}")
                return str((await r.json())["token"])


# ---- agents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One AcceptOffer: ok (the router confirmed it), refused (a definite no), unknown (no answer)."""

    agent_id: str
    offer_id: str
    contact_id: str
    outcome: str
    detail: str
    at: float


@dataclass
class AgentRecord:
    agent_id: str
    attempts: list[Attempt] = field(default_factory=list)
    adopted: dict[str, str] = field(default_factory=dict)  # contact -> why it was with us
    wrapped: dict[str, float] = field(default_factory=dict)
    wrap_refused: dict[str, str] = field(default_factory=dict)
    targets: Counter[str] = field(default_factory=Counter)  # sign-ins per replica
    errors: Counter[str] = field(default_factory=Counter)  # "<rpc> <code>: <details>"
    log: list[tuple[float, str]] = field(default_factory=list)  # what happened when (bounded)

    def note(self, text: str) -> None:
        if len(self.log) < 2000:
            self.log.append((now(), text))

    @property
    def reconnects(self) -> int:
        return max(0, self.targets.total() - 1)

    @property
    def accepted(self) -> list[Attempt]:
        return [a for a in self.attempts if a.outcome == "ok"]


def profiles(count: int, seed: int = 7) -> list[tuple[str, dict[str, int], dict[str, int]]]:
    """(agent id, languages, skills): everyone speaks Korean (most contacts are); the other
    languages are spread so each is spoken by about half the agents."""
    rng = random.Random(seed)
    others = LANGUAGES[1:]
    out = []
    for i in range(count):
        spoken = {"ko", others[i % 3]} | ({others[(i + 1) % 3]} if i % 2 else set())
        languages = {lang: rng.randint(2, 5) for lang in sorted(spoken)}
        skills = {s: rng.randint(3, 5) for s in [*SKILLS, "complaint"]}
        out.append((f"chaos-agent-{i + 1:02d}", languages, skills))
    return out


class Agent:
    """An agent that stays signed in to whichever router replica leads, accepts every offer, and
    wraps each contact up after a short random talk time."""

    def __init__(
        self,
        agent_id: str,
        languages: dict[str, int],
        skills: dict[str, int],
        targets: dict[str, str],
        secret: str,
        tenant: str,
        timeline: Timeline,
        talk: tuple[float, float] = (0.1, 0.5),
        seed: int = 0,
    ) -> None:
        self.agent_id = agent_id
        self.languages = languages
        self.skills = skills
        self.targets = targets
        self.secret = secret
        self.tenant = tenant
        self.timeline = timeline
        self.talk = talk
        self.rng = random.Random(seed)
        self.record = AgentRecord(agent_id)
        self.client: AgentClient | None = None
        self.replica = ""  # the replica `client` talks to
        self._suspect = asyncio.Event()  # a call said this replica does not lead: sign in again
        self._preferred = next(iter(targets))
        self._wrapups: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    client = await self._connect(stop)
                except Exception as exc:  # never let the agent's own loop die: note it, go on
                    self.record.errors[f"agent loop {type(exc).__name__}: {exc}"[:160]] += 1
                    await asyncio.sleep(0.25)
                    continue
                if client is None:
                    continue
                try:
                    await self._serve(client, stop)
                except Exception as exc:
                    self.record.errors[f"agent loop {type(exc).__name__}: {exc}"[:160]] += 1
                finally:
                    self.client = None
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.close(), 3)
        finally:
            self.client = None

    async def finish(self, timeout: float) -> None:
        """Let the wrap-ups in flight finish (bounded), then cancel what is left."""
        pending = [t for t in self._wrapups.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        self._stopping = True
        for t in self._wrapups.values():
            t.cancel()

    @property
    def wrapping(self) -> int:
        return sum(1 for t in self._wrapups.values() if not t.done())

    async def _connect(self, stop: asyncio.Event) -> AgentClient | None:
        """Sign in at the leader: try each replica (a standby refuses), a fresh channel each time
        so no gRPC reconnect back-off hides a replica that is back."""
        order = [self._preferred] + [r for r in self.targets if r != self._preferred]
        for replica in order:
            if stop.is_set():
                return None
            client = AgentClient(self.targets[replica], self.secret, self.tenant, self.agent_id)
            try:
                # Bounded well below the channel's 10 s default, so a replica that hangs is left
                # for the other one quickly (sign-in and the stream's start take well under 1 s).
                agent = await asyncio.wait_for(
                    client.sign_in(self.languages, self.skills, name=self.agent_id), SIGN_IN_SECONDS
                )
            except Exception as exc:
                what = (
                    f"{exc.code().name}: {exc.details()}"
                    if isinstance(exc, grpc.aio.AioRpcError)
                    else f"{type(exc).__name__}: {exc}"
                )
                self.record.errors[f"SignIn {replica} {what}"[:160]] += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 3)
                continue
            self._preferred = replica
            self.record.targets[replica] += 1
            self.client, self.replica = client, replica
            self._suspect.clear()
            self.record.note(f"signed in at {replica}, active {list(agent.active_contact_ids)}")
            # Contacts the router says are with us: wrap up any we are not already wrapping up
            # (an accept whose answer was lost, or one the router gave us on its own).
            for contact_id in agent.active_contact_ids:
                if contact_id not in self._wrapups:
                    self.record.adopted[contact_id] = f"active at sign-in on {replica}"
                    self._wrap_later(contact_id)
            return client
        await asyncio.sleep(0.25)
        return None

    async def _serve(self, client: AgentClient, stop: asyncio.Event) -> None:
        look = now() + RECONCILE_SECONDS
        while not stop.is_set():
            if client._task is not None and client._task.done():
                self.record.note(f"offer stream from {self.replica} ended")
                return  # the offer stream ended: the replica stopped, or stepped down
            if self._suspect.is_set():
                self.record.note(f"{self.replica} refused a wrap-up as not leading")
                return  # a wrap-up was refused as by a replica that does not lead
            if now() >= look:
                look = now() + RECONCILE_SECONDS
                await self._reconcile(client)
            try:
                offer = await asyncio.wait_for(client.offers.get(), 0.5)
            except TimeoutError:
                continue
            if not await self._accept(client, offer):
                return

    async def _reconcile(self, client: AgentClient) -> None:
        """What the desk shows: the contacts the router says are ours. One whose accept had no
        answer may have been assigned after all; it is wrapped up like any other."""
        try:
            listed = await client.stub.ListAgents(router_pb2.ListAgentsRequest(), timeout=3)
        except Exception:
            return
        for agent in listed.agents:
            if agent.agent_id != self.agent_id:
                continue
            for contact_id in agent.active_contact_ids:
                if contact_id not in self._wrapups:
                    self.record.adopted[contact_id] = "listed as ours by the leader"
                    self._wrap_later(contact_id)

    async def _accept(self, client: AgentClient, offer: router_pb2.Offer) -> bool:
        """Accept `offer`; False when the outcome is unknown (then the agent reconnects)."""
        contact_id = offer.contact.contact_id
        metadata = (("traceparent", offer.traceparent),) if offer.traceparent else None
        try:
            assignment = await client.stub.AcceptOffer(
                router_pb2.AcceptOfferRequest(agent_id=self.agent_id, offer_id=offer.offer_id),
                metadata=metadata,
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            in_doubt = exc.code() in IN_DOUBT
            detail = f"{exc.code().name}: {exc.details()}"
            self.record.errors[f"AcceptOffer {self.replica} {detail}"[:160]] += 1
            self.record.note(f"AcceptOffer {offer.offer_id} ({contact_id}): {detail}")
            self._attempt(offer, "unknown" if in_doubt else "refused", detail)
            return not in_doubt
        except asyncio.CancelledError:
            if _cancelled():
                raise
            self._attempt(offer, "unknown", "call cancelled: its channel closed")
            return False
        except Exception as exc:
            self._attempt(offer, "unknown", type(exc).__name__)
            return False
        detail = "" if assignment.contact_id == contact_id else f"for {assignment.contact_id}"
        self._attempt(offer, "ok", detail)
        self.record.note(f"accepted {offer.offer_id} ({contact_id}) at {self.replica}")
        self.timeline.mark("accepted")
        self._wrap_later(contact_id)
        return True

    def _attempt(self, offer: router_pb2.Offer, outcome: str, detail: str) -> None:
        self.record.attempts.append(
            Attempt(self.agent_id, offer.offer_id, offer.contact.contact_id, outcome, detail, now())
        )

    def _wrap_later(self, contact_id: str) -> None:
        if contact_id in self._wrapups or self._stopping:
            return
        self._wrapups[contact_id] = asyncio.create_task(self._wrap_up(contact_id))

    async def _wrap_up(self, contact_id: str) -> None:
        await asyncio.sleep(self.rng.uniform(*self.talk))
        deadline = now() + 120
        last = "no replica to ask"
        try:
            while now() < deadline:
                client, replica = self.client, self.replica
                if client is None:
                    await asyncio.sleep(0.1)
                    continue
                try:
                    await client.stub.WrapUp(
                        router_pb2.WrapUpRequest(
                            agent_id=self.agent_id, contact_id=contact_id, wrap_up_code="chaos"
                        ),
                        timeout=5,
                    )
                except grpc.aio.AioRpcError as exc:
                    last = f"{replica} {exc.code().name}: {exc.details()}"
                    self.record.errors[f"WrapUp {last}"[:160]] += 1
                    self.record.note(f"WrapUp {contact_id}: {last}")
                    if exc.code() in IN_DOUBT:
                        if exc.code() == grpc.StatusCode.UNAVAILABLE and client is self.client:
                            self._suspect.set()  # find the leader again
                        await asyncio.sleep(0.2)
                        continue
                    self.record.wrap_refused[contact_id] = last
                    return
                except asyncio.CancelledError:
                    if _cancelled():
                        raise
                    # grpc.aio cancels the calls of a channel that closes: the agent reconnected.
                    last = f"{replica} call cancelled: its channel closed"
                    self.record.note(f"WrapUp {contact_id}: {last}")
                    await asyncio.sleep(0.1)
                    continue
                except Exception as exc:
                    last = f"{replica} {type(exc).__name__}: {exc}"
                    self.record.note(f"WrapUp {contact_id}: {last}")
                    await asyncio.sleep(0.1)
                    continue
                self.record.wrapped[contact_id] = now()
                self.timeline.mark("wrapped")
                return
            self.record.wrap_refused[contact_id] = f"no answer for 120 s; last: {last}"
        except asyncio.CancelledError:
            self.record.wrap_refused[contact_id] = f"still trying when the agents stopped: {last}"
            raise


def _cancelled() -> bool:
    """Whether the running task itself is being cancelled (not merely a call inside it)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def agent_records(agents: list[Agent]) -> list[dict[str, Any]]:
    """Everything each agent was told, for report files."""
    return [
        {
            "agent_id": ag.agent_id,
            "sign_ins": dict(ag.record.targets),
            "attempts": [
                {
                    "offer_id": a.offer_id,
                    "contact_id": a.contact_id,
                    "outcome": a.outcome,
                    "detail": a.detail,
                    "at": round(a.at, 3),
                }
                for a in ag.record.attempts
            ],
            "adopted": ag.record.adopted,
            "wrapped": sorted(ag.record.wrapped),
            "wrap_refused": ag.record.wrap_refused,
            "errors": dict(ag.record.errors),
            "log": [(round(t, 3), text) for t, text in ag.record.log],
        }
        for ag in agents
    ]


def agent_summary(agents: list[Agent]) -> dict[str, Any]:
    attempts = [a for ag in agents for a in ag.record.attempts]
    return {
        "accepted": sum(1 for a in attempts if a.outcome == "ok"),
        "refused": sum(1 for a in attempts if a.outcome == "refused"),
        "unknown": sum(1 for a in attempts if a.outcome == "unknown"),
        "wrapped": sum(len(ag.record.wrapped) for ag in agents),
        "reconnects": sum(ag.record.reconnects for ag in agents),
        "adopted": sum(len(ag.record.adopted) for ag in agents),
        "wrap-ups refused": sum(len(ag.record.wrap_refused) for ag in agents),
    }
