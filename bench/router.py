"""Router bench: the routing engine's decision rate and latency at 1,000, 10,000 and 100,000
agents, its memory per waiting contact, beside the raw JetStream publish+consume rate measured in
the same run.

The engine is pure (no I/O), so it is driven directly, on a manual clock, in this process:
- "agents waiting": half the agents busy; each cycle a contact arrives (add_contact -> offer to
  the best idle agent), is accepted, and the longest-running contact is wrapped up;
- "contacts waiting": every agent busy and a backlog waiting; each cycle an agent wraps up
  (wrap_up -> offer of the contact that most needs it), accepts, and a new contact queues.
Agents speak one of 4 languages and hold 2 of 4 skills at varying proficiencies (96 profiles).
Decision rates are per CPU second of this process (a rate per wall-clock second would count
whatever else the machine runs); latencies are wall clock (perf_counter), per call.

Snapshots: a Router (journal and bus acknowledging at once, in memory) holding 100,000 waiting
contacts goes on deciding (contacts arriving and abandoning, agents arriving) while it takes
snapshots; the figures are how long each snapshot held the decision lock (the fork) and the
longest wait of any decision while the serialising child was alive, beside the target of 10 ms,
and the longest decision over as long a time without a snapshot.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import pathlib
import time
import tracemalloc
from collections import deque

from bench import transport
from bench.stats import percentile
from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.router.handlers import ManualClock, Router, collect_young_only
from switchboard.router.notifier import RoutingNotifier
from switchboard.v1 import contact_pb2

SIZES = tuple(int(n) for n in os.environ.get("BENCH_ROUTER_AGENTS", "1000,10000,100000").split(","))
CYCLES = int(os.environ.get("BENCH_ROUTER_CYCLES", "3000"))
ROTATION = int(os.environ.get("BENCH_ROUTER_ROTATION", "2000"))
BACKLOG = int(os.environ.get("BENCH_ROUTER_BACKLOG", "10000"))
WAITING = int(os.environ.get("BENCH_ROUTER_WAITING", "100000"))
WAITING_LARGE = int(os.environ.get("BENCH_ROUTER_WAITING_LARGE", "1000000"))
RAW_MESSAGES = int(os.environ.get("BENCH_RAW_MESSAGES", "20000"))
SNAPSHOT_WAITING = int(os.environ.get("BENCH_ROUTER_SNAPSHOT_WAITING", "100000"))
SNAPSHOTS = int(os.environ.get("BENCH_ROUTER_SNAPSHOTS", "3"))
PAUSE_TARGET_MS = 10.0  # issue 14: no decision waits longer than this

TENANT = "bench"
LANGUAGES = ("ko", "zh", "en", "ja")
SKILLS = ("billing", "technical", "account", "complaint")
PAIRS = tuple(itertools.combinations(SKILLS, 2))
VOICE = contact_pb2.CHANNEL_VOICE


def _engine() -> tuple[eng.Engine, ManualClock]:
    tenant = cfg.TenantConfig(
        tenant=TENANT,
        languages=LANGUAGES,
        skills=SKILLS,
        queues={"general": cfg.QueueConfig("general")},
        capacity=dict(cfg.DEFAULT_CAPACITY),
        accept_timeout=dict(cfg.DEFAULT_ACCEPT_TIMEOUT),
        autopause_after=0,
        sticky_ttl=0.0,
    )
    clock = ManualClock(1_000_000.0)
    return eng.Engine(clock, cfg.RouterConfig({TENANT: tenant})), clock


def _sign_in(engine: eng.Engine, n: int, available: int | None = None) -> None:
    """n agents; the first `available` of them available, the others busy (on a call elsewhere:
    presence BUSY), all connected."""
    available = n if available is None else available
    for i in range(n):
        lang = LANGUAGES[i % 4]
        pair = PAIRS[(i // 4) % 6]
        profs = (3 + (i // 24) % 2, 3 + (i // 48) % 2)  # 4 proficiency mixes
        agent_id = f"a{i}"
        presence = eng.Presence.AVAILABLE if i < available else eng.Presence.BUSY
        engine.sign_in(
            TENANT,
            agent_id,
            agent_id,
            {lang: 5},
            dict(zip(pair, profs, strict=True)),
            None,
            presence,
        )
        engine.set_connected(TENANT, agent_id, True)


def _contact(i: int) -> contact_pb2.Contact:
    return contact_pb2.Contact(
        contact_id=f"c{i}",
        tenant=TENANT,
        channel=VOICE,
        language=LANGUAGES[i % 4],
        skills=[SKILLS[(i // 4) % 4]],
    )


def _offers(effects: list[eng.Effect]) -> list[eng.Offer]:
    return [e.offer for e in effects if isinstance(e, eng.Offered)]


def _size(n: int) -> dict[str, float]:
    engine, clock = _engine()
    t0 = time.perf_counter()
    _sign_in(engine, n, n // 2)
    sign_in_s = time.perf_counter() - t0
    ids = itertools.count()
    active: deque[tuple[str, str]] = deque()  # (agent, contact), oldest first

    def step() -> None:
        clock.now += 0.01
        if engine.due():
            engine.tick()

    def admit(count: int) -> None:
        """Add contacts that go straight to agents, and accept them."""
        for _ in range(count):
            step()
            c = _contact(next(ids))
            for offer in _offers(engine.add_contact(c)):
                engine.accept(TENANT, offer.agent_id, offer.offer_id)
                active.append((offer.agent_id, offer.contact_id))

    # -- agents waiting: half the agents idle, the others busy; ROTATION of the idle ones take
    # the contacts that are wrapped up in turn --------------------------------------------------
    admit(min(ROTATION, n // 4))
    offer_ns: list[float] = []
    cycle_ns: list[float] = []
    decisions = 0
    cpu = time.process_time()
    for _ in range(CYCLES):
        step()
        c = _contact(next(ids))
        t = time.perf_counter_ns()
        effects = engine.add_contact(c)
        t1 = time.perf_counter_ns()
        offered = _offers(effects)
        decisions += len(offered)
        offer_ns.append(t1 - t)
        for offer in offered:
            active.append((offer.agent_id, offer.contact_id))
            t2 = time.perf_counter_ns()
            engine.accept(TENANT, offer.agent_id, offer.offer_id)
            agent_id, contact_id = active.popleft()
            engine.wrap_up(TENANT, agent_id, contact_id, "done")
            cycle_ns.append(time.perf_counter_ns() - t2)
    idle_rate = decisions / (time.process_time() - cpu)

    # -- contacts waiting: every agent busy, a backlog queued -----------------------------------
    busy = {agent_id for agent_id, _ in active}
    for i in range(n // 2):
        if f"a{i}" not in busy:
            engine.set_presence(TENANT, f"a{i}", eng.Presence.BUSY, "")
    for _ in range(BACKLOG):
        step()
        engine.add_contact(_contact(next(ids)))
    freed_ns: list[float] = []
    decisions = 0
    cpu = time.process_time()
    for _ in range(CYCLES):
        step()
        agent_id, contact_id = active.popleft()
        t = time.perf_counter_ns()
        effects = engine.wrap_up(TENANT, agent_id, contact_id, "done")
        t1 = time.perf_counter_ns()
        freed_ns.append(t1 - t)
        for offer in _offers(effects):
            decisions += 1
            engine.accept(TENANT, offer.agent_id, offer.offer_id)
            active.append((offer.agent_id, offer.contact_id))
        engine.add_contact(_contact(next(ids)))
    waiting_rate = decisions / (time.process_time() - cpu)
    ms = 1e-6
    return {
        f"agents_{n}_profile_groups": float(len(engine.groups)),
        f"agents_{n}_sign_in_per_s": n / sign_in_s,
        f"agents_{n}_decisions_per_s_agents_waiting": idle_rate,
        f"agents_{n}_decisions_per_s_contacts_waiting": waiting_rate,
        f"agents_{n}_add_contact_to_offer_p50_ms": percentile(offer_ns, 50) * ms,
        f"agents_{n}_add_contact_to_offer_p99_ms": percentile(offer_ns, 99) * ms,
        f"agents_{n}_accept_wrap_up_cycle_p50_ms": percentile(cycle_ns, 50) * ms,
        f"agents_{n}_accept_wrap_up_cycle_p99_ms": percentile(cycle_ns, 99) * ms,
        f"agents_{n}_wrap_up_to_next_offer_p50_ms": percentile(freed_ns, 50) * ms,
        f"agents_{n}_wrap_up_to_next_offer_p99_ms": percentile(freed_ns, 99) * ms,
    }


def _memory_per_waiting_contact(count: int) -> dict[str, float]:
    """Bytes per contact queued (no agent free), proto message included: resident (the growth
    of this process's RSS over a backlog filled without tracing), then as tracemalloc counts
    them over another."""
    engine, clock = _engine()
    _sign_in(engine, 8)
    for i in range(8):
        engine.set_connected(TENANT, f"a{i}", False)
    gc.collect()
    rss0 = _rss()
    for i in range(count):
        clock.now += 0.001
        engine.add_contact(_contact(i))
    gc.collect()
    rss = (_rss() - rss0) / count
    engine.release()
    del engine
    engine, clock = _engine()
    _sign_in(engine, 8)
    for i in range(8):
        engine.set_connected(TENANT, f"a{i}", False)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        clock.now += 0.001
        engine.add_contact(_contact(i))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "memory_waiting_contacts": float(count),
        "memory_bytes_per_waiting_contact": (after - before) / count,
        "memory_rss_bytes_per_waiting_contact": rss,
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _large_backlog(count: int) -> dict[str, float]:
    """A backlog of `count` waiting contacts (resident memory, no tracing), then the latency of
    adding to it and of an agent arriving to it."""
    engine, clock = _engine()
    gc.collect()
    rss0 = _rss()
    t0 = time.perf_counter()
    for i in range(count):
        clock.now += 0.0001
        engine.add_contact(_contact(i))
    fill_s = time.perf_counter() - t0
    rss1 = _rss()
    add_ns: list[float] = []
    for i in range(count, count + 2000):
        clock.now += 0.0001
        t = time.perf_counter_ns()
        engine.add_contact(_contact(i))
        add_ns.append(time.perf_counter_ns() - t)
    arrive_ns: list[float] = []
    for i in range(500):
        clock.now += 0.0001
        lang, pair = LANGUAGES[i % 4], PAIRS[(i // 4) % 6]
        t = time.perf_counter_ns()
        engine.sign_in(TENANT, f"x{i}", "", {lang: 5}, {pair[0]: 3, pair[1]: 3})
        effects = engine.set_connected(TENANT, f"x{i}", True)
        arrive_ns.append(time.perf_counter_ns() - t)
        assert _offers(effects), "a new agent got no offer from the backlog"
    return {
        "backlog_waiting_contacts": float(count),
        "backlog_fill_contacts_per_s": count / fill_s,
        "backlog_rss_bytes_per_waiting_contact": (rss1 - rss0) / count,
        "backlog_add_contact_p50_ms": percentile(add_ns, 50) * 1e-6,
        "backlog_add_contact_p99_ms": percentile(add_ns, 99) * 1e-6,
        "backlog_agent_arrives_to_offer_p50_ms": percentile(arrive_ns, 50) * 1e-6,
        "backlog_agent_arrives_to_offer_p99_ms": percentile(arrive_ns, 99) * 1e-6,
    }


class _Acked:
    """The journal and the bus, in memory: every write acknowledged at once, nothing kept."""

    connected = True

    def __init__(self) -> None:
        self.last_seq = 0

    def _done(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def append(self, entry: object) -> asyncio.Future[None]:
        self.last_seq += 1
        return self._done()

    async def trim(self, seq: int) -> None:
        """The journal up to a durable snapshot is purged: nothing is kept here anyway."""

    async def publish_async(self, event: object, traceparent: str = "") -> asyncio.Future[None]:
        return self._done()


class _Discarded:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def save(self, engine_state: bytes, seq: int) -> None:
        self.sizes.append(len(engine_state))


class _TimedLock(asyncio.Lock):
    """The router's decision lock, recording how long the snapshot task holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshot_holds: list[float] = []
        self._at = 0

    async def acquire(self) -> bool:  # type: ignore[override]
        await super().acquire()
        self._at = time.perf_counter_ns()
        return True

    def release(self) -> None:
        task = asyncio.current_task()
        if task is not None and task.get_name() == "snapshot":
            self.snapshot_holds.append((time.perf_counter_ns() - self._at) * 1e-6)
        super().release()


async def _snapshot_pauses(count: int, snapshots: int) -> dict[str, float]:
    """Decisions go on (one at a time, each awaited) while the router takes `snapshots`
    snapshots of `count` waiting contacts; the longest wait, with and without a snapshot."""
    engine, clock = _engine()
    for i in range(count):
        clock.now += 0.0001
        engine.add_contact(_contact(i))
    acked = _Acked()
    router = Router(engine, RoutingNotifier(acked), acked, lambda: clock.now)  # type: ignore[arg-type]
    router.leader = True
    lock = _TimedLock()
    router._lock = lock
    threshold = gc.get_threshold()
    collect_young_only()  # as after recovery (bootstrap)
    ids, agents = itertools.count(count), itertools.count()

    async def decide() -> None:
        i = next(ids)
        clock.now += 0.0001
        if i % 20 == 0:  # an agent arrives, is offered a contact from the backlog, and leaves
            a = next(agents)
            lang, pair = LANGUAGES[a % 4], PAIRS[(a // 4) % 6]
            await router.run("sign_in", TENANT, f"x{a}", "", {lang: 5}, {pair[0]: 3, pair[1]: 3})
            await router.run("set_connected", TENANT, f"x{a}", True)
            await router.run("sign_out", TENANT, f"x{a}")  # no offers pile up to expire
        else:  # a contact arrives, an older one abandons: the backlog stays at `count`
            await router.run("add_contact", _contact(i), "")
            if f"c{i - count}" in router.engine.contacts:
                await router.run("withdraw_contact", f"c{i - count}", "abandoned")

    async def longest_wait(
        during: asyncio.Future[int | None] | None, seconds: float
    ) -> tuple[float, float]:
        """The longest wait of a decision, wall clock and this thread's CPU time (on a busy
        machine the wall clock also counts the time the process was not scheduled)."""
        longest = longest_cpu = 0.0
        until = time.perf_counter() + seconds
        while (during is not None and not during.done()) or (
            during is None and time.perf_counter() < until
        ):
            t, cpu = time.perf_counter_ns(), time.thread_time_ns()
            await decide()
            longest = max(longest, (time.perf_counter_ns() - t) * 1e-6)
            longest_cpu = max(longest_cpu, (time.thread_time_ns() - cpu) * 1e-6)
        return longest, longest_cpu

    saved = _Discarded()
    with_snapshot: list[tuple[float, float]] = []
    without: list[tuple[float, float]] = []
    took: list[float] = []
    try:
        await longest_wait(None, 1.0)  # warm up
        for _ in range(snapshots):
            t = time.perf_counter()
            taking = asyncio.create_task(router.snapshot(saved), name="snapshot")  # type: ignore[arg-type]
            with_snapshot.append(await longest_wait(taking, 0))
            await taking
            took.append(time.perf_counter() - t)
            without.append(await longest_wait(None, took[-1]))
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    return {
        "snapshot_waiting_contacts": float(count),
        "snapshot_bytes": float(saved.sizes[-1]),
        "snapshot_serialise_s_median": percentile(took, 50),
        "snapshot_lock_held_ms_median": percentile(lock.snapshot_holds, 50),
        "snapshot_lock_held_ms_max": max(lock.snapshot_holds),
        "snapshot_longest_decision_ms_median": percentile([w for w, _ in with_snapshot], 50),
        "snapshot_longest_decision_ms_max": max(w for w, _ in with_snapshot),
        "snapshot_longest_decision_cpu_ms_max": max(c for _, c in with_snapshot),
        "snapshot_pause_target_ms": PAUSE_TARGET_MS,
        "no_snapshot_longest_decision_ms_max": max(w for w, _ in without),
        "no_snapshot_longest_decision_cpu_ms_max": max(c for _, c in without),
    }


async def run(work: pathlib.Path, nats_url: str) -> dict[str, float]:
    del work
    out: dict[str, float] = {}
    raw = await transport.jetstream_publish_consume(nats_url, RAW_MESSAGES)
    out["raw_jetstream_publish_consume_msgs_per_s"] = raw
    for n in SIZES:
        t = time.perf_counter()
        out.update(_size(n))
        out[f"agents_{n}_bench_wall_s"] = time.perf_counter() - t
    for key in ("agents_waiting", "contacts_waiting"):
        for small, big in itertools.pairwise(SIZES):
            out[f"growth_{key}_rate_{small}_to_{big}"] = (
                out[f"agents_{big}_decisions_per_s_{key}"]
                / out[f"agents_{small}_decisions_per_s_{key}"]
            )
        largest = SIZES[-1]
        out[f"ratio_{key}_decisions_per_s_at_{largest}_over_raw_jetstream"] = (
            out[f"agents_{largest}_decisions_per_s_{key}"] / raw
        )
    for small, big in itertools.pairwise(SIZES):
        out[f"growth_add_contact_p50_{small}_to_{big}"] = (
            out[f"agents_{big}_add_contact_to_offer_p50_ms"]
            / out[f"agents_{small}_add_contact_to_offer_p50_ms"]
        )
    t = time.perf_counter()
    out.update(_memory_per_waiting_contact(WAITING))
    out["memory_bench_wall_s"] = time.perf_counter() - t
    if WAITING_LARGE:
        t = time.perf_counter()
        out.update(_large_backlog(WAITING_LARGE))
        out["backlog_bench_wall_s"] = time.perf_counter() - t
    if SNAPSHOT_WAITING:
        t = time.perf_counter()
        out.update(await _snapshot_pauses(SNAPSHOT_WAITING, SNAPSHOTS))
        out["snapshot_bench_wall_s"] = time.perf_counter() - t
    return out


if __name__ == "__main__":  # python -m bench.router: the router figures alone
    import asyncio
    import tempfile

    from switchboard.core.embedded_nats import NatsServer

    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(pathlib.Path(tmp) / "nats").start()
        try:
            started = time.perf_counter()
            figures = asyncio.run(run(pathlib.Path(tmp), server.url))
        finally:
            server.stop()
    for key, value in figures.items():
        print(f"  {key:<64} {value:>16,.3f}")
    print(f"  {'(wall clock, s)':<64} {time.perf_counter() - started:>16,.1f}")
