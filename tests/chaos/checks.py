"""What the chaos suite checks once the load has stopped and the platform has settled, from the
sources themselves: the case store's SQLite file, the EVENTS stream, the router's own account of
each contact (ExplainDecision on the leader), the durable consumers, the audit chains, and what
every agent was told.

- lost: an accepted contact that JetStream or the case store does not have;
- duplicated: a contact recorded more than once (its `contact_added` audit entry);
- assigned twice: more than one ContactAssigned, more than one confirmed accept, an assignment
  naming an agent that did not accept that offer, or one offer id for two contacts or agents;
- disagreements: the case store, the router and the bus differ on a contact's final state;
- unfinished: an accepted contact that did not end (every agent wraps up every contact);
- undelivered: a durable consumer with pending or unacknowledged events, or parked events;
- broken chains: an audit chain that does not verify, or a case without its trail;
- dropped events: a consumer terminated an event (its log says "giving up" or "terminating");
- health lies: both router replicas reported SERVING at the same moment.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from nats.js import JetStreamContext
from nats.js import api as js_api

from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import events_pb2, router_pb2, router_pb2_grpc

CATEGORIES = (
    "lost",
    "duplicated",
    "assigned twice",
    "disagreements",
    "unfinished",
    "undelivered",
    "broken chains",
    "dropped events",
    "health lies",
)

# A contact's state in classes every side can name: waiting (queued or offered), assigned,
# ended, abandoned.
CASE_CLASS = {"queued": "waiting", "offered": "waiting", "assigned": "assigned"}
ROUTER_CLASS = {"waiting": "waiting", "offered": "waiting", "assigned": "assigned"}


def state_class(value: str, table: dict[str, str]) -> str:
    return table.get(value, value)


# ---- the case store ----------------------------------------------------------------------------


class CaseStore:
    """Read-only queries on the case service's SQLite file (WAL: never blocks its writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            return list(conn.execute(sql, tuple(args)))
        finally:
            conn.close()

    def progress(self) -> tuple[int, int, int] | None:
        """(contacts recorded, contacts ended, events applied), or None while the store cannot be
        read."""
        try:
            [(total, ended)] = self._query(
                "SELECT count(*), coalesce(sum(status = 'ended'), 0) FROM contacts"
            )
            [(applied,)] = self._query("SELECT max(rowid) FROM processed_events")
        except sqlite3.Error:
            return None
        return int(total), int(ended), int(applied or 0)

    def contacts(self) -> dict[str, tuple[str, str]]:
        """contact id -> (status, agent id)."""
        return {
            cid: (status, agent or "")
            for cid, status, agent in self._query(
                "SELECT contact_id, status, agent_id FROM contacts"
            )
        }

    def contact_added(self) -> Counter[str]:
        """How many `contact_added` audit entries name each contact (1 when recorded once)."""
        out: Counter[str] = Counter()
        for (data,) in self._query("SELECT data FROM audit_entries WHERE action = 'contact_added'"):
            try:
                out[str(json.loads(data).get("contact_id", ""))] += 1
            except ValueError:
                out["<unreadable audit data>"] += 1
        return out


async def broken_chains(db_path: Path) -> tuple[int, list[str]]:
    """Every audit chain recomputed (as `switchboard case verify` does): (checked, problems)."""
    from sqlalchemy import select

    from switchboard.case import audit
    from switchboard.case.adapters import database
    from switchboard.case.adapters.orm import AuditEntry, Case

    engine = database.create_engine(f"sqlite+aiosqlite:///{db_path}")
    problems: list[str] = []
    try:
        async with database.sessionmaker(engine)() as session:
            checked, breaks = await audit.verify(session)
            problems += [f"{b.entity} {b.entity_id}: entry {b.seq}: {b.reason}" for b in breaks]
            with_trail = set(
                await session.scalars(
                    select(AuditEntry.entity_id).where(AuditEntry.entity == audit.CASE).distinct()
                )
            )
            for case_id in await session.scalars(select(Case.id)):
                if case_id not in with_trail:
                    problems.append(f"case {case_id}: its audit trail is missing")
    finally:
        await engine.dispose()
    return checked, problems


# ---- the bus -----------------------------------------------------------------------------------


@dataclass
class BusView:
    """Per contact, what the EVENTS stream holds about it (in stream order)."""

    created: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    assigned: dict[str, list[tuple[int, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # (seq, agent, offer)
    last: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # (seq, class, agent)
    offers: dict[str, set[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(set)
    )  # offer id -> {(contact, agent)}
    total: int = 0


ROUTING_CLASS: dict[type, str] = {
    events_pb2.ContactQueued: "waiting",
    events_pb2.ContactOffered: "waiting",
    events_pb2.ContactAssigned: "assigned",
    events_pb2.ContactEnded: "ended",
    events_pb2.ContactAbandoned: "abandoned",
}


async def read_bus(js: JetStreamContext, tenant: str) -> BusView:
    """Every contact and routing event of `tenant` in EVENTS, through throwaway consumers."""
    view = BusView()
    raw: list[tuple[int, Any]] = []
    for subject in (f"contact.{tenant}.>", f"routing.{tenant}.>"):
        sub = await js.pull_subscribe(
            subject,
            stream="EVENTS",
            config=js_api.ConsumerConfig(
                deliver_policy=js_api.DeliverPolicy.ALL,
                ack_policy=js_api.AckPolicy.ALL,
                max_ack_pending=-1,
                inactive_threshold=60.0,
            ),
        )
        try:
            while True:
                try:
                    msgs = await sub.fetch(1000, timeout=2)
                except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                    info = await sub.consumer_info()
                    if info.num_pending == 0:
                        break
                    continue
                for m in msgs:
                    spec = events.spec_by_name((m.headers or {}).get(events.TYPE_HEADER, ""))
                    if spec is not None:
                        raw.append((m.metadata.sequence.stream, spec.type.FromString(m.data)))
                await msgs[-1].ack()
        finally:
            await sub.unsubscribe()
    raw.sort(key=lambda pair: pair[0])
    view.total = len(raw)
    for seq, event in raw:
        if isinstance(event, events_pb2.ContactCreated):
            view.created[event.contact.contact_id].append(event.meta.event_id)
            continue
        cls = ROUTING_CLASS.get(type(event))
        if cls is None:
            continue
        cid = event.contact_id  # type: ignore[attr-defined]
        agent = getattr(event, "agent_id", "")
        if isinstance(event, events_pb2.ContactAssigned):
            view.assigned[cid].append((seq, event.agent_id, event.offer_id))
        if isinstance(event, events_pb2.ContactOffered):
            view.offers[event.offer_id].add((cid, event.agent_id))
        prev = view.last.get(cid)
        # A late queued/offered does not undo an assignment or an end (as the case store reads it).
        if prev is not None and prev[1] in ("assigned", "ended", "abandoned") and cls == "waiting":
            continue
        if prev is not None and prev[1] in ("ended", "abandoned"):
            continue
        view.last[cid] = (seq, cls, agent or (prev[2] if prev else ""))
    return view


async def consumers(js: JetStreamContext) -> tuple[list[str], dict[str, int]]:
    """Durable consumers on EVENTS with work left, and events parked in a dead-letter stream; and
    each durable consumer's backlog (pending + unacknowledged)."""
    out = []
    backlog: dict[str, int] = {}
    for info in await js.consumers_info("EVENTS"):
        if not info.config.durable_name:
            continue
        backlog[info.name] = (info.num_pending or 0) + (info.num_ack_pending or 0)
        if info.num_pending or info.num_ack_pending:
            out.append(
                f"consumer {info.name}: {info.num_pending} pending, "
                f"{info.num_ack_pending} delivered but unacknowledged"
            )
    for name in await js.streams_info():
        stream = name.config.name or ""
        if re.search(r"DLQ|DEAD", stream, re.I) and name.state.messages:
            out.append(f"stream {stream}: {name.state.messages} parked events")
    return out, backlog


# ---- the router --------------------------------------------------------------------------------


async def router_states(
    target: str, secret: str, tenant: str, contact_ids: Iterable[str]
) -> dict[str, tuple[str, str] | None]:
    """contact id -> (state, agent) as the leader's ExplainDecision gives it; None when the router
    does not know the contact, absent when it could not be asked."""
    token = auth.mint(secret, tenant, "chaos-supervisor", ["supervisor"])
    channel = sb_grpc.channel(target, token)
    stub = router_pb2_grpc.RouterServiceStub(channel)
    out: dict[str, tuple[str, str] | None] = {}
    gate = asyncio.Semaphore(16)

    async def ask(cid: str) -> None:
        async with gate:
            for _ in range(3):
                try:
                    d = await stub.ExplainDecision(
                        router_pb2.ExplainDecisionRequest(contact_id=cid), timeout=5
                    )
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        out[cid] = None
                        return
                    await asyncio.sleep(0.2)
                    continue
                out[cid] = (d.state, d.assigned_agent_id)
                return

    try:
        await asyncio.gather(*(ask(c) for c in contact_ids))
    finally:
        await channel.close()
    return out


# ---- logs --------------------------------------------------------------------------------------

DROPPED = re.compile(r"giving up on|terminating (?!malformed)")


def dropped_events(logs: Iterable[Path]) -> list[str]:
    out = []
    for log in logs:
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        out += [f"{log.stem}: {line.strip()}" for line in text.splitlines() if DROPPED.search(line)]
    return out


# ---- the verdict -------------------------------------------------------------------------------


@dataclass
class Findings:
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # Contact ids behind each category's problems (to find them in the logs).
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, category: str, contact_id: str, why: str) -> None:
        self.problems[category].append(f"{contact_id}: {why}" if contact_id else why)
        if contact_id:
            self.examples[category].append(contact_id)

    def count(self, category: str) -> int:
        if category in ("undelivered", "broken chains", "dropped events", "health lies"):
            return len(self.problems.get(category, []))
        return len(set(self.examples.get(category, [])))

    @property
    def ok(self) -> bool:
        return all(self.count(c) == 0 for c in CATEGORIES)


@dataclass
class Evidence:
    accepted: dict[str, str]  # contact id -> how it was accepted (bus, chat)
    attempts: list[Any]  # traffic.Attempt from every agent
    adopted: dict[str, set[str]]  # contact id -> agents the router said held it at sign-in
    wrapped: dict[str, set[str]]  # contact id -> agents whose wrap-up the router confirmed
    bus: BusView
    case: dict[str, tuple[str, str]]
    contact_added: Counter[str]
    router: dict[str, tuple[str, str] | None]
    router_asked: bool
    undelivered: list[str]
    chains: list[str]
    dropped: list[str]
    double_serving: list[str]
    # Events the case service's consumer had not applied yet: while it is behind, a contact it has
    # not recorded (or not moved on) is unfinished, not lost or in disagreement.
    case_backlog: int = 0


def evaluate(ev: Evidence) -> Findings:
    f = Findings()
    by_contact: dict[str, list[Any]] = defaultdict(list)
    offers: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for offer_id, pairs in ev.bus.offers.items():
        offers[offer_id] |= pairs
    for a in ev.attempts:
        by_contact[a.contact_id].append(a)
        offers[a.offer_id].add((a.contact_id, a.agent_id))
    contacts = set(ev.accepted) | set(ev.bus.created)
    for cid in sorted(contacts):
        _lost_or_doubled(f, ev, cid)
        _assignment(f, ev, cid, by_contact.get(cid, []))
        _final_state(f, ev, cid, by_contact.get(cid, []))
    for offer_id, pairs in sorted(offers.items()):
        if len(pairs) > 1:
            owners = ", ".join(f"{c}/{a}" for c, a in sorted(pairs))
            f.add("assigned twice", sorted(pairs)[0][0], f"offer id {offer_id} reused: {owners}")
    for line in ev.undelivered:
        f.add("undelivered", "", line)
    for line in ev.chains:
        f.add("broken chains", "", line)
    for line in ev.dropped:
        f.add("dropped events", "", line)
    for line in ev.double_serving:
        f.add("health lies", "", line)
    if ev.case_backlog:
        f.facts["INCONCLUSIVE"] = (
            f"the case store had not caught up ({ev.case_backlog} events pending in its "
            "consumer): contacts it has not applied yet count as unfinished, not lost"
        )
    f.facts.update(
        accepted=len(ev.accepted),
        in_stream=len(ev.bus.created),
        in_case_store=len(ev.case),
        stream_events=ev.bus.total,
    )
    return f


def _lost_or_doubled(f: Findings, ev: Evidence, cid: str) -> None:
    if cid in ev.accepted:
        if cid not in ev.bus.created:
            f.add("lost", cid, f"accepted ({ev.accepted[cid]}) but not in the EVENTS stream")
        if cid not in ev.case and ev.case_backlog:
            f.add("unfinished", cid, f"not in the case store yet ({ev.case_backlog} events wait)")
        elif cid not in ev.case:
            f.add("lost", cid, f"accepted ({ev.accepted[cid]}) but not in the case store")
    if ev.contact_added.get(cid, 0) > 1:
        f.add("duplicated", cid, f"recorded {ev.contact_added[cid]} times (contact_added)")


def _assignment(f: Findings, ev: Evidence, cid: str, attempts: list[Any]) -> None:
    assigned = ev.bus.assigned.get(cid, [])
    if len(assigned) > 1:
        named = ", ".join(f"{a} (offer {o}, seq {s})" for s, a, o in assigned)
        f.add("assigned twice", cid, f"ContactAssigned x{len(assigned)}: {named}")
    ok = [a for a in attempts if a.outcome == "ok"]
    confirmed = {(a.agent_id, a.offer_id) for a in ok}
    if len(confirmed) > 1:
        f.add(
            "assigned twice",
            cid,
            "accepts confirmed to "
            + ", ".join(f"{agent} (offer {offer})" for agent, offer in sorted(confirmed)),
        )
    tried = {(a.agent_id, a.offer_id) for a in attempts}
    for _seq, agent, offer in assigned:
        if (agent, offer) not in tried:
            f.add(
                "assigned twice",
                cid,
                f"ContactAssigned names {agent} (offer {offer}), who never accepted that offer",
            )
    if assigned and confirmed:
        names = {name for _s, name, _o in assigned}
        for agent, offer in confirmed:
            if agent not in names:
                f.add(
                    "assigned twice",
                    cid,
                    f"{agent}'s accept of offer {offer} was confirmed "
                    f"but ContactAssigned names {', '.join(sorted(names))}",
                )
    for agent in sorted(ev.adopted.get(cid, set())):
        if not any(a.agent_id == agent for a in attempts):
            f.add("assigned twice", cid, f"the router gave it to {agent}, who never accepted it")
    if confirmed and not assigned:
        agents = ", ".join(sorted(a for a, _ in confirmed))
        f.add(
            "disagreements", cid, f"{agents}'s accept was confirmed; no ContactAssigned on the bus"
        )


def _final_state(f: Findings, ev: Evidence, cid: str, attempts: list[Any]) -> None:
    case = ev.case.get(cid)
    case_cls = state_class(case[0], CASE_CLASS) if case else None
    bus = ev.bus.last.get(cid)
    bus_cls = bus[1] if bus else "new"
    reasons = []
    router_cls: str | None = None
    if ev.router_asked:
        if cid not in ev.router:
            reasons.append("the router did not answer ExplainDecision")
        elif ev.router[cid] is None:
            if cid in ev.accepted or case is not None:
                reasons.append("the router has no record of it")
        else:
            state, agent = ev.router[cid]  # type: ignore[misc]
            router_cls = state_class(state, ROUTER_CLASS)
            if case is not None and router_cls != case_cls:
                reasons.append(f"case store {case[0]}, router {state}")
            elif case is not None and router_cls in ("assigned", "ended") and case[1] != agent:
                reasons.append(f"case store agent {case[1] or '-'}, router agent {agent or '-'}")
    if case is not None and bus is not None and case_cls != bus_cls:
        reasons.append(f"case store {case[0]}, last routing event on the bus {bus_cls}")
    wrapped_by = ev.wrapped.get(cid, set())
    if wrapped_by and router_cls not in (None, "ended"):
        reasons.append(f"wrap-up by {', '.join(sorted(wrapped_by))} confirmed, router {router_cls}")
    for why in reasons:
        if ev.case_backlog and why.startswith("case store"):
            f.add("unfinished", cid, f"{why} (the case store is {ev.case_backlog} events behind)")
        else:
            f.add("disagreements", cid, why)
    if cid in ev.accepted:
        ended = case_cls == "ended" and (router_cls == "ended" or not ev.router_asked)
        if not ended:
            f.add(
                "unfinished",
                cid,
                f"case store {case[0] if case else '-'}, router {router_cls or '-'}, bus {bus_cls}",
            )
