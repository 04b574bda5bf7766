"""A chaos scenario: the platform as real processes, a ledger of contacts and agents working
through it, faults injected in turn during the load (each process restarted half a second
later), then — once everything has settled — every contact checked (see checks.py).

    report = await run_scenario(Scenario("single", directory, faults=FULL_FAULTS))
    print(report.render())

Recovery is read off a timeline of what the platform was seen doing (a contact published, an
accept confirmed, the case store recording) and of health checks polled every 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import resource
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import checks
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from processes import ROUTER_SERVICE, NatsNode, Platform, PlatformConfig, Proc
from report import Fault, FaultResult, Report
from traffic import Agent, Ledger, Timeline, agent_records, agent_summary, now, profiles

logger = logging.getLogger("chaos")
T = TypeVar("T")

KILL, TERM = signal.SIGKILL, signal.SIGTERM
# Every fault of the single-server trial, in turn.
FULL_FAULTS = [
    Fault("router", KILL),
    Fault("case", KILL),
    Fault("router", TERM),
    Fault("chat", KILL),
    Fault("case", TERM),
    Fault("nats", KILL),
    Fault("nats", TERM),
]
# The three-node cluster with R3 streams: the EVENTS leader's node crashes, then the router
# journal's node is restarted gracefully.
CLUSTER_FAULTS = [Fault("node", KILL), Fault("node", TERM)]
# `make test`'s short version.
SHORT_FAULTS = [Fault("router", KILL), Fault("case", KILL), Fault("nats", TERM)]

CASE_CONSUMER = "case"  # the case service's durable consumer (CASE_CONSUMER's default)
ROUTER_FAILOVER_LIMIT = 5.0  # from the leader's death to the first new assignment
NATS_RECOVERY_LIMIT = 10.0  # from NATS back to every service routing and recording again


@dataclass
class Scenario:
    name: str
    directory: Path
    faults: list[Fault] = field(default_factory=lambda: list(FULL_FAULTS))
    contacts: int = 3000
    rate: float = 100.0
    agents: int = 16
    nodes: int = 1  # 3: a JetStream cluster with R3 streams
    chat_share: float = 0.1  # contacts sent through chat's visitor socket
    restart_delay: float = 0.5
    recovery_timeout: float = 20.0  # how long the next fault waits for the last one's recovery
    # Settling waits for the case store to catch up (bounded), and gives up sooner when nothing
    # moves at all: no event applied, no consumer progress, no agent working.
    settle_timeout: float = 1200.0
    stall_timeout: float = 45.0
    talk: tuple[float, float] = (0.1, 0.5)
    lease_ttl: float = 2.0
    # The router's default: the first leader dies before its first snapshot, so recovery replays
    # the journal from the start (where issue 13's double assignments came from).
    snapshot_interval: float = 30.0
    accept_timeout: float = 10.0
    seed: int = 1

    @property
    def title(self) -> str:
        where = "single nats-server" if self.nodes == 1 else f"{self.nodes}-node NATS cluster, R3"
        return (
            f"{self.name} · {where} · {self.contacts} contacts at {self.rate:g}/s · "
            f"{self.agents} agents · {self.chat_share:.0%} via chat"
        )


async def run_scenario(s: Scenario) -> Report:
    """Run one scenario end to end; every process is stopped before this returns."""
    s.directory.mkdir(parents=True, exist_ok=True)
    report = Report(s.title, s.directory)
    platform = Platform(
        PlatformConfig(
            s.directory,
            nodes=s.nodes,
            lease_ttl=s.lease_ttl,
            snapshot_interval=s.snapshot_interval,
            accept_timeout=s.accept_timeout,
        )
    )
    run = _Run(s, platform, report)
    try:
        await run.go()
    except Exception as exc:
        logger.exception("scenario %s failed", s.name)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        report.error = (
            f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno} "
            f"in {where.name}; traceback in harness.log)"
        )
    finally:
        await run.cleanup()
    with contextlib.suppress(Exception):
        (s.directory / "report.json").write_text(json.dumps(report.as_json(), indent=2))
        run.save()
    return report


async def _read(what: str, make: Callable[[], Awaitable[T]], tries: int = 3) -> T:
    """One source for the checks, read with a deadline and a few tries."""
    for attempt in range(1, tries + 1):
        try:
            return await asyncio.wait_for(make(), 120)
        except Exception as exc:
            logger.warning("reading %s failed (try %d): %r", what, attempt, exc)
            if attempt == tries:
                raise RuntimeError(f"could not read {what}: {type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(2)
    raise AssertionError("unreachable")


class _Run:
    def __init__(self, s: Scenario, platform: Platform, report: Report) -> None:
        self.s = s
        self.platform = platform
        self.report = report
        self.timeline = Timeline()
        self.case = checks.CaseStore(platform.config.directory / "case.db")
        self.agents: list[Agent] = []
        self.ledger: Ledger | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.agent_tasks: list[asyncio.Task[None]] = []
        self.stop_agents = asyncio.Event()
        self.faults_done = asyncio.Event()
        self.double_serving: list[str] = []
        self.together_since: float | None = None
        self.load_start = 0.0

    # ---- the scenario --------------------------------------------------------------------------

    async def go(self) -> None:
        s, p = self.s, self.platform
        started = now()
        await p.start()
        self.report.facts["platform started in"] = f"{now() - started:.1f}s"
        self._background(self._watch_health())
        self._background(self._watch_case())
        for i, (agent_id, languages, skills) in enumerate(profiles(s.agents, s.seed)):
            agent = Agent(
                agent_id,
                languages,
                skills,
                p.router_targets,
                p.config.secret,
                p.config.tenant,
                self.timeline,
                s.talk,
                seed=s.seed * 1000 + i,
            )
            self.agents.append(agent)
            self.agent_tasks.append(asyncio.create_task(agent.run(self.stop_agents)))
        await self._agents_signed_in(30)
        assert p.bus is not None
        self.ledger = Ledger(
            p.bus,
            p.config.tenant,
            f"{re.sub(r'[^a-z0-9]+', '-', s.name.lower())}-{int(time.time())}",
            self.timeline,
            p.chat_url,
            s.chat_share,
            s.seed,
        )
        self.load_start = now()
        load = asyncio.create_task(
            self.ledger.run(s.contacts, s.rate, lambda: not self.faults_done.is_set())
        )
        self.tasks.append(load)
        try:
            await self._inject_faults()
        finally:
            self.faults_done.set()
        await load
        load_seconds = now() - self.load_start
        settle_start = now()
        stalled = await self._settle()
        await self._stop_agents()
        await self._drained(15)
        self._facts(load_seconds, now() - settle_start, stalled)
        for result in self.report.faults:
            self._measure(result)
        self.report.findings = await self._check()
        self.report.checked = True

    def save(self) -> None:
        """The agents' records and the timeline beside the logs."""
        d = self.s.directory
        (d / "agents.json").write_text(json.dumps(agent_records(self.agents), indent=1))
        marks = {
            k: [round(t - self.load_start, 3) for t in v] for k, v in self.timeline.marks.items()
        }
        (d / "timeline.json").write_text(json.dumps(marks))

    async def _agents_signed_in(self, timeout: float) -> None:
        deadline = now() + timeout
        while now() < deadline:
            if all(a.client is not None for a in self.agents):
                return
            await asyncio.sleep(0.1)
        missing = [a.agent_id for a in self.agents if a.client is None]
        raise RuntimeError(f"agents never signed in: {', '.join(missing)}")

    def _background(self, coro: object) -> None:
        self.tasks.append(asyncio.create_task(coro))  # type: ignore[arg-type]

    # ---- faults --------------------------------------------------------------------------------

    async def _inject_faults(self) -> None:
        s = self.s
        gap = max(3.0, (s.contacts / s.rate) / (len(s.faults) + 1))
        last: FaultResult | None = None
        for i, fault in enumerate(s.faults):
            if last is not None:
                await self._recovered(last)
            planned = self.load_start + gap * (i + 1)
            if planned > now():
                await asyncio.sleep(planned - now())
            last = await self._inject(fault)
            self.report.faults.append(last)
        if last is not None:
            await self._recovered(last)

    def _evidence(self, fault: Fault) -> list[str]:
        """The timeline kinds that show the platform has recovered from `fault`."""
        chat = ["chat"] if self.s.chat_share > 0 else ["serving:chat"]
        return {
            "router": ["accepted"],
            "case": ["recorded"],
            "chat": chat,
        }.get(fault.target, ["accepted", "recorded", *chat])

    async def _recovered(self, result: FaultResult) -> None:
        since = result.t0 if result.fault.target == "router" else result.back
        kinds = self._evidence(result.fault)
        await self.timeline.wait_for(kinds, since, self.s.recovery_timeout)
        await asyncio.sleep(1.0)  # let it run a moment before the next fault

    async def _inject(self, fault: Fault) -> FaultResult:
        p = self.platform
        note = ""
        if fault.target == "router":
            leader = await p.leader()
            if not leader:
                note = f"no single leader (health {await p.router_health()}); hit router-a"
                leader = "router-a"
            proc: Proc = p.routers[leader]
        elif fault.target == "case":
            assert p.case is not None
            proc = p.case
        elif fault.target == "chat":
            assert p.chat is not None
            proc = p.chat
        elif fault.target == "nats":
            proc = p.nats[0]
        else:
            proc, note = await self._cluster_node(fault)
        for other in p.services:
            if other is not proc:
                other.note(f"{fault.label} of {proc.name}")
        t0 = now()
        graceful: bool | None = None
        if fault.sig == signal.SIGKILL:
            await proc.kill()
        else:
            graceful = await proc.terminate(grace=15)
        exited = now()
        await asyncio.sleep(self.s.restart_delay)
        proc.start()
        if isinstance(proc, NatsNode) and not await proc.ready(30):
            note = (note + "; " if note else "") + "not ready 30 s after restart"
        return FaultResult(
            fault, proc.name, proc.log, t0 - self.load_start, t0, exited, now(), graceful, note=note
        )

    async def _cluster_node(self, fault: Fault) -> tuple[NatsNode, str]:
        """SIGKILL: the node leading EVENTS. SIGTERM: the node leading the router's journal."""
        p = self.platform
        assert p.bus is not None
        names = ["EVENTS"]
        if fault.sig == signal.SIGTERM:
            with contextlib.suppress(Exception):
                streams = [i.config.name or "" for i in await p.bus.js.streams_info()]
                journals = [
                    n for n in streams if n.startswith("ROUTER_") and n != "ROUTER_SNAPSHOTS"
                ]
                names = journals[:1] + names
        for stream in names:
            with contextlib.suppress(Exception):
                info = await asyncio.wait_for(p.bus.js.stream_info(stream), 3)
                leader = info.cluster.leader if info.cluster else None
                for node in p.nats:
                    if node.name == leader and node.alive:
                        replicas = info.config.num_replicas
                        return node, f"leader of {stream} (R{replicas})"
        return p.nats[0], "no stream leader found"

    def _measure(self, r: FaultResult) -> None:
        tl, s = self.timeline, self.s

        def since(kind: str, t: float) -> float | None:
            mark = tl.first_after(kind, t)
            return None if mark is None else mark - r.t0

        def after_back(kind: str) -> float | None:
            mark = tl.first_after(kind, r.back)
            return None if mark is None else mark - r.back

        target = r.fault.target
        if target == "router":
            others = [
                since(f"serving:{n}", r.exited) for n in self.platform.routers if n != r.process
            ]
            again = since(f"serving:{r.process}", r.back)
            served = [v for v in [*others, again] if v is not None]
            r.measures["serving"] = min(served) if served else None
            # The outage: the longest stretch without an assignment from the fault until the
            # first one after the old leader is gone (a leader stopped with SIGTERM may still
            # assign while it drains; the gap comes after).
            r.measures["no assignment for"] = self._gap("accepted", r.t0, r.exited)
            r.judged, r.limit = "no assignment for", ROUTER_FAILOVER_LIMIT
        elif target == "case":
            r.measures["recording"] = since("recorded", r.back)
        elif target == "chat":
            r.measures["serving"] = since("serving:chat", r.back)
            if s.chat_share > 0:
                r.measures["visitors"] = since("chat", r.back)
        else:
            if target == "node":
                # A cluster should carry on without the node: the longest stretch without an
                # acknowledged publish, from the fault until one after the node is back.
                r.measures["publish gap"] = self._gap("published", r.t0, r.back)
            r.measures["publishing"] = after_back("published")
            r.measures["assigning"] = after_back("accepted")
            r.measures["recording"] = after_back("recorded")
            if s.chat_share > 0:
                r.measures["visitors"] = after_back("chat")
            parts = [
                r.measures[k] for k in ("assigning", "recording", "visitors") if k in r.measures
            ]
            r.measures["routing again"] = (
                None if any(v is None for v in parts) else max(v for v in parts if v is not None)
            )
            r.judged, r.limit = "routing again", NATS_RECOVERY_LIMIT

    def _gap(self, kind: str, t0: float, after: float) -> float | None:
        """The longest stretch without a `kind` mark from t0 until the first one after `after`."""
        first = self.timeline.first_after(kind, after)
        if first is None:
            return None
        points = [t0, *self.timeline.between(kind, t0, first)]
        return max(b - a for a, b in itertools.pairwise(points))

    # ---- watching ------------------------------------------------------------------------------

    async def _watch_health(self) -> None:
        """Poll every service's gRPC health; SERVING is a timeline mark. Two router replicas
        SERVING at once is a lie one of them tells. One channel per target, reconnecting within
        0.5 s of a restart (gRPC's default back-off would hide a server that is back)."""
        p = self.platform
        targets = {n: (t, ROUTER_SERVICE) for n, t in p.router_targets.items()}
        targets["case"] = (p.case_target, "")
        targets["chat"] = (p.chat_target, "")
        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ]
        channels = {
            n: grpc.aio.insecure_channel(t, options=options) for n, (t, _) in targets.items()
        }
        stubs = {n: health_pb2_grpc.HealthStub(c) for n, c in channels.items()}

        async def status(name: str) -> bool:
            request = health_pb2.HealthCheckRequest(service=targets[name][1])
            try:
                reply = await stubs[name].Check(request, timeout=0.5)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        try:
            while True:
                started = now()
                answers = await asyncio.gather(*(status(n) for n in targets))
                serving = {n for n, ok in zip(targets, answers, strict=True) if ok}
                for name in serving:
                    self.timeline.mark(f"serving:{name}", started)
                routers = serving & set(p.router_targets)
                if len(routers) > 1 and self.together_since is None:
                    self.together_since = started
                elif len(routers) <= 1 and self.together_since is not None:
                    self._both_serving(self.together_since, started)
                    self.together_since = None
                for proc in p.processes:
                    proc.sample_cpu()
                await asyncio.sleep(max(0.0, 0.2 - (now() - started)))
        finally:
            for channel in channels.values():
                with contextlib.suppress(Exception):
                    await channel.close()

    def _both_serving(self, since: float, until: float) -> None:
        at = since - self.load_start if self.load_start else 0.0
        self.double_serving.append(
            f"router-a and router-b both SERVING for {until - since:.1f}s from {at:.1f}s into the load"
        )

    async def _watch_case(self) -> None:
        last = None
        while True:
            progress = await asyncio.to_thread(self.case.progress)
            if progress is not None and progress != last:
                if last is not None:
                    self.timeline.mark("recorded")
                last = progress
            await asyncio.sleep(0.1)

    # ---- settling ------------------------------------------------------------------------------

    async def _pending(self) -> int | None:
        bus = self.platform.bus
        if bus is None:
            return None
        try:
            infos = await asyncio.wait_for(bus.js.consumers_info("EVENTS"), 3)
        except Exception:
            return None
        return sum(
            (i.num_pending or 0) + (i.num_ack_pending or 0) for i in infos if i.config.durable_name
        )

    async def _settle(self) -> bool:
        """Wait until every accepted contact has ended in the case store, every wrap-up is done and
        every consumer is drained — or until nothing moves. True when it stalled."""
        assert self.ledger is not None
        accepted = len(self.ledger.accepted)
        deadline = now() + self.s.settle_timeout
        last_state: object = None
        last_move = now()
        while now() < deadline:
            progress = await asyncio.to_thread(self.case.progress)
            pending = await self._pending()
            wrapping = sum(a.wrapping for a in self.agents)
            ended = progress[1] if progress else 0  # (recorded, ended, events applied)
            if ended >= accepted and pending == 0 and wrapping == 0:
                return False
            state = (progress, pending, wrapping, len(self.timeline.marks["accepted"]))
            if state != last_state:
                last_state, last_move = state, now()
            elif now() - last_move > self.s.stall_timeout:
                return True
            await asyncio.sleep(1.0)
        return True

    async def _stop_agents(self) -> None:
        await asyncio.gather(*(a.finish(10) for a in self.agents))
        self.stop_agents.set()
        if self.agent_tasks:
            await asyncio.wait(self.agent_tasks, timeout=20)

    async def _drained(self, timeout: float) -> None:
        deadline = now() + timeout
        while now() < deadline:
            if await self._pending() == 0:
                return
            await asyncio.sleep(0.5)

    def _facts(self, load: float, settle: float, stalled: bool) -> None:
        assert self.ledger is not None
        entries = self.ledger.entries
        accepted = self.ledger.accepted
        via_chat = sum(1 for e in accepted if e.via == "chat")
        f = self.report.facts
        f["load"] = (
            f"{load:.1f}s: {len(entries)} contacts, {len(accepted)} acknowledged "
            f"({via_chat} by chat), {len(entries) - len(accepted)} never acknowledged"
        )
        if self.ledger.errors:
            f["publish retries"] = dict(self.ledger.errors.most_common(6))
        f["settled"] = f"{settle:.1f}s" + (" (stopped moving: gave up waiting)" if stalled else "")
        f["agents"] = agent_summary(self.agents)
        own = resource.getrusage(resource.RUSAGE_SELF)
        cpu = {proc.name: round(proc.cpu_seconds, 1) for proc in self.platform.processes}
        f["cpu seconds"] = cpu | {"harness": round(own.ru_utime + own.ru_stime, 1)}

    # ---- checks --------------------------------------------------------------------------------

    async def _check(self) -> checks.Findings:
        p = self.platform
        assert self.ledger is not None and p.bus is not None
        accepted = {e.contact_id: e.via for e in self.ledger.accepted}
        attempts = [a for ag in self.agents for a in ag.record.attempts]
        adopted: dict[str, set[str]] = {}
        wrapped: dict[str, set[str]] = {}
        for ag in self.agents:
            for cid in ag.record.adopted:
                adopted.setdefault(cid, set()).add(ag.agent_id)
            for cid in ag.record.wrapped:
                wrapped.setdefault(cid, set()).add(ag.agent_id)
        js, tenant, secret = p.bus.js, p.config.tenant, p.config.secret
        # Without the bus and the case store nothing can be judged: those raise. The rest is
        # reported as a failure of its own check when it cannot be read.
        bus = await _read("the EVENTS stream", lambda: checks.read_bus(js, tenant))
        case = await _read("the case store", lambda: asyncio.to_thread(self.case.contacts))
        added = await _read("the audit trail", lambda: asyncio.to_thread(self.case.contact_added))
        leader = await p.leader()
        universe = set(accepted) | set(bus.created)
        router: dict[str, tuple[str, str] | None] = {}
        if leader:
            target = p.router_targets[leader]
            try:
                router = await _read(
                    "the router",
                    lambda: checks.router_states(target, secret, tenant, universe),
                )
            except Exception as exc:
                leader = ""
                self.report.facts["router unreadable"] = f"{type(exc).__name__}: {exc}"
        backlog: dict[str, int] = {}
        try:
            undelivered, backlog = await _read("the consumers", lambda: checks.consumers(js))
        except Exception as exc:
            undelivered = [f"could not read the consumers: {type(exc).__name__}: {exc}"]
        try:
            _, chains = await _read(
                "the audit chains", lambda: checks.broken_chains(self.case.path)
            )
        except Exception as exc:
            chains = [f"could not verify the audit chains: {type(exc).__name__}: {exc}"]
        dropped = checks.dropped_events(proc.log for proc in p.services)
        if self.together_since is not None:
            self._both_serving(self.together_since, now())
            self.together_since = None
        findings = checks.evaluate(
            checks.Evidence(
                accepted,
                attempts,
                adopted,
                wrapped,
                bus,
                case,
                added,
                router,
                bool(leader),
                undelivered,
                chains,
                dropped,
                self.double_serving,
                backlog.get(CASE_CONSUMER, 0),
            )
        )
        if not leader:
            findings.add("disagreements", "", "no router leader to ask at the end")
        inconclusive = findings.facts.pop("INCONCLUSIVE", "")
        self.report.facts["checked"] = findings.facts | {"router asked": leader or "no leader"}
        if inconclusive:
            self.report.facts["INCONCLUSIVE"] = inconclusive
        return findings

    async def cleanup(self) -> None:
        self.stop_agents.set()
        self.faults_done.set()
        if self.ledger is not None:
            self.ledger.cancel()
        tasks = self.tasks + self.agent_tasks
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        try:
            await asyncio.wait_for(self.platform.stop(), 60)
        finally:
            self.platform.kill_now()
