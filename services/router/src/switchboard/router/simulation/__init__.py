"""A discrete-event simulation of a contact centre, driving the real routing engine.

Contacts arrive as a Poisson process; each needs a language and one skill; handling times are
exponential. Time is simulated: the engine's clock is a `ManualClock` set to each event's time,
and the engine's own timers (routing steps, accept timeouts) run through `Engine.tick` whenever
simulated time passes `Engine.next_due`. Agents accept every offer at once and wrap up when the
handling time has passed, so what is measured is the routing alone.

The same arrivals (and the same work per contact) are replayed against each router, so the
routers' figures differ by their decisions, not by their luck (common random numbers).
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.router.handlers import ManualClock
from switchboard.v1 import contact_pb2

TENANT = "sim"
QUEUE = "sim"
# With `proficiency_speed`, an agent's handling time is the contact's work times this factor of
# its proficiency in the contact's skill; an agent without the skill (a relaxation step let it
# take the contact) takes half as long again.
SPEED = {1: 1.2, 2: 1.1, 3: 1.0, 4: 0.9, 5: 0.8}
OFF_SKILL = 1.5

Assign = Callable[[float, int, str, bool], None]  # (time, contact, agent, relaxed by a step)


@dataclass
class AgentSpec:
    agent_id: str
    languages: dict[str, int]
    skills: dict[str, int]


@dataclass
class Workload:
    """Who works, what arrives and how much: the input every router is given."""

    agents: list[AgentSpec]
    cells: list[tuple[str, str]]  # (language, skill) a contact may need, equally likely
    load: float  # offered load in erlangs (arrival rate x mean handling time)
    handle: float  # mean handling time, s
    threshold: float  # service-level threshold, s
    contacts: int  # contacts per run
    warmup: int  # the first contacts, left out of the figures (the centre starts empty)
    proficiency_speed: bool = False

    @property
    def rate(self) -> float:
        return self.load / self.handle

    def factor(self, agent: AgentSpec, cell: int) -> float:
        if not self.proficiency_speed:
            return 1.0
        prof = agent.skills.get(self.cells[cell][1], 0)
        return SPEED[prof] if prof else OFF_SKILL


@dataclass(frozen=True)
class Arrival:
    at: float
    cell: int
    work: float  # an Exp(1) draw: handling time = work x mean handling time x agent factor


def arrivals(workload: Workload, seed: int) -> list[Arrival]:
    rng = random.Random(seed)
    out: list[Arrival] = []
    t = 0.0
    n = len(workload.cells)
    for _ in range(workload.contacts):
        t += rng.expovariate(workload.rate)
        out.append(Arrival(t, rng.randrange(n), rng.expovariate(1.0)))
    return out


# ---- routers ---------------------------------------------------------------------------------


class EngineRouter:
    """The real engine, on a simulated clock; every offer is accepted at once."""

    def __init__(
        self,
        workload: Workload,
        assign: Assign,
        steps: Sequence[cfg.Step] = (),
        min_proficiency: int = 1,
    ) -> None:
        self.workload, self.assign = workload, assign
        self.clock = ManualClock(0.0)
        languages = tuple(dict.fromkeys(lang for lang, _ in workload.cells))
        skills = tuple(dict.fromkeys(skill for _, skill in workload.cells))
        tenant = cfg.TenantConfig(
            tenant=TENANT,
            languages=languages,
            skills=skills,
            queues={
                QUEUE: cfg.QueueConfig(
                    QUEUE,
                    min_proficiency=min_proficiency,
                    sl_threshold=workload.threshold,
                    steps=tuple(steps),
                )
            },
            default_queue=QUEUE,
            capacity=dict(cfg.DEFAULT_CAPACITY),
            accept_timeout=dict(cfg.DEFAULT_ACCEPT_TIMEOUT),
            autopause_after=0,
            sticky_ttl=0.0,
        )
        self.engine = eng.Engine(self.clock, cfg.RouterConfig({TENANT: tenant}))
        for a in workload.agents:
            self.engine.sign_in(TENANT, a.agent_id, a.agent_id, a.languages, a.skills)
            self._carry_out(self.engine.set_connected(TENANT, a.agent_id, True))

    def _carry_out(self, effects: list[eng.Effect]) -> None:
        work = deque(effects)
        while work:
            e = work.popleft()
            if isinstance(e, eng.Offered):
                work.extend(self.engine.accept(TENANT, e.offer.agent_id, e.offer.offer_id))
            elif isinstance(e, eng.Assigned):
                index = int(e.contact.contact_id[1:])
                self.assign(self.clock.now, index, e.agent.agent_id, bool(e.contact.step_name))

    def advance(self, t: float) -> None:
        """Run the engine's timers due up to simulated time `t`."""
        while (due := self.engine.next_due()) is not None and due <= t:
            self.clock.now = max(self.clock.now, due)
            self._carry_out(self.engine.tick())

    def arrive(self, t: float, index: int, cell: int) -> None:
        self.clock.now = t
        language, skill = self.workload.cells[cell]
        contact = contact_pb2.Contact(
            contact_id=f"c{index}",
            tenant=TENANT,
            channel=contact_pb2.CHANNEL_VOICE,
            language=language,
            skills=[skill],
        )
        self._carry_out(self.engine.add_contact(contact))

    def finish(self, t: float, index: int, agent_id: str) -> None:
        self.clock.now = t
        self._carry_out(self.engine.wrap_up(TENANT, agent_id, f"c{index}", "done"))


class NaiveRouter:
    """The baseline: a contact goes to the longest-idle agent with its language and skill, and a
    freed agent takes the contact that has waited longest among those it can take. No
    proficiency ranking, no relaxation."""

    def __init__(self, workload: Workload, assign: Assign) -> None:
        self.workload, self.assign = workload, assign
        n = len(workload.cells)
        self.idle: list[list[tuple[float, int, str, int]]] = [[] for _ in range(n)]
        self.waiting: list[deque[tuple[float, int]]] = [deque() for _ in range(n)]
        self.cells_of: dict[str, list[int]] = {}
        self.version: dict[str, int] = {}
        self.busy: set[str] = set()
        self.arrived: dict[int, float] = {}
        self._seq = 0
        for a in workload.agents:
            self.cells_of[a.agent_id] = [
                i
                for i, (lang, skill) in enumerate(workload.cells)
                if lang in a.languages and skill in a.skills
            ]
            self.version[a.agent_id] = 0
            self._idle(0.0, a.agent_id)

    def _idle(self, t: float, agent_id: str) -> None:
        self.busy.discard(agent_id)
        self.version[agent_id] += 1
        for cell in self.cells_of[agent_id]:
            self._seq += 1
            heapq.heappush(self.idle[cell], (t, self._seq, agent_id, self.version[agent_id]))

    def advance(self, t: float) -> None:
        return None

    def arrive(self, t: float, index: int, cell: int) -> None:
        heap = self.idle[cell]
        while heap:
            _, _, agent_id, version = heapq.heappop(heap)
            if agent_id not in self.busy and self.version[agent_id] == version:
                self.busy.add(agent_id)
                self.assign(t, index, agent_id, False)
                return
        self.waiting[cell].append((t, index))

    def finish(self, t: float, index: int, agent_id: str) -> None:
        best: deque[tuple[float, int]] | None = None
        for cell in self.cells_of[agent_id]:
            q = self.waiting[cell]
            if q and (best is None or q[0] < best[0]):
                best = q
        if best is None:
            self._idle(t, agent_id)
            return
        _, waiting_index = best.popleft()
        self.assign(t, waiting_index, agent_id, False)


# ---- running ---------------------------------------------------------------------------------

BATCHES_PER_RUN = 20


@dataclass
class Run:
    """One router over one arrival sequence."""

    batches: list[tuple[float, float, float, float]]  # (SL, ASA, work - 1, gap x rate - 1)
    waits: list[float]  # every measured contact's wait, in arrival order
    threshold: float
    relaxed: int  # contacts assigned after a routing step relaxed their requirements
    contacts_per_s: float  # simulation speed (wall clock), for information
    handling: float  # mean handling time of the measured contacts, s


def simulate(
    workload: Workload, seed: int, make_router: Callable[[Workload, Assign], Router]
) -> Run:
    """Replay one seed's arrivals through a router until every contact has been handled."""
    plan = arrivals(workload, seed)
    agents = {a.agent_id: a for a in workload.agents}
    waits = [math.nan] * len(plan)
    handled = [0.0] * len(plan)
    relaxed = [False] * len(plan)
    ends: list[tuple[float, int, int, str]] = []  # (time, seq, contact, agent)
    seq = 0

    def assign(t: float, index: int, agent_id: str, by_step: bool) -> None:
        nonlocal seq
        if not math.isnan(waits[index]):
            raise AssertionError(f"contact {index} assigned twice")
        a = plan[index]
        waits[index] = t - a.at
        seq += 1
        handling = a.work * workload.handle * workload.factor(agents[agent_id], a.cell)
        handled[index] = handling
        relaxed[index] = by_step
        heapq.heappush(ends, (t + handling, seq, index, agent_id))

    router = make_router(workload, assign)
    started = time.perf_counter()
    i = 0
    while i < len(plan) or ends:
        t_arrive = plan[i].at if i < len(plan) else math.inf
        t_end = ends[0][0] if ends else math.inf
        t = min(t_arrive, t_end)
        router.advance(t)
        if t_end <= t_arrive:
            _, _, index, agent_id = heapq.heappop(ends)
            router.finish(t, index, agent_id)
        else:
            router.arrive(t, i, plan[i].cell)
            i += 1
    router.advance(math.inf)
    elapsed = time.perf_counter() - started
    missing = sum(1 for w in waits[workload.warmup :] if math.isnan(w))
    if missing:
        raise AssertionError(f"{missing} contacts were never assigned")
    batches = []
    first = workload.warmup
    size = (len(plan) - first) // BATCHES_PER_RUN
    for b in range(BATCHES_PER_RUN):
        lo, hi = first + b * size, first + (b + 1) * size
        chunk = waits[lo:hi]
        sl = sum(1 for w in chunk if w <= workload.threshold) / size
        work = sum(a.work for a in plan[lo:hi]) / size
        gap = (plan[hi - 1].at - plan[lo - 1].at) / size * workload.rate if lo else 1.0
        batches.append((sl, sum(chunk) / size, work - 1.0, gap - 1.0))
    measured = waits[first : first + size * BATCHES_PER_RUN]
    handling = statistics.mean(handled[first : first + len(measured)])
    return Run(
        batches,
        measured,
        workload.threshold,
        sum(relaxed[first : first + len(measured)]),
        len(plan) / elapsed,
        handling,
    )


class Router(Protocol):
    def advance(self, t: float) -> None: ...
    def arrive(self, t: float, index: int, cell: int) -> None: ...
    def finish(self, t: float, index: int, agent_id: str) -> None: ...


@dataclass
class Estimate:
    value: float
    half: float  # 95 % confidence half-width


@dataclass
class Figures:
    """Service level and average speed of answer over one or more runs."""

    contacts: int
    sl: Estimate
    asa: Estimate
    p90_wait: float
    relaxed_share: float
    contacts_per_s: float
    handling: float


def figures(runs: Sequence[Run]) -> Figures:
    """SL and ASA with 95 % confidence half-widths.

    Consecutive contacts' waits are correlated, so the uncertainty comes from batch means (20
    batches of consecutive contacts per run), not from per-contact variance. The estimates use
    two control variates whose expectations are known exactly: each batch's mean work per
    contact (expected 1) and its mean gap between arrivals x the arrival rate (expected 1).
    Service level moves with the load a batch happened to get; regressing the batch figures on
    those controls and reading the fit at their expected values removes that noise (about a
    third of the variance is left), without bias.
    """
    batches = [b for run in runs for b in run.batches]
    waits = [w for run in runs for w in run.waits]
    return Figures(
        contacts=len(waits),
        sl=_controlled([b[0] for b in batches], batches),
        asa=_controlled([b[1] for b in batches], batches),
        p90_wait=sorted(waits)[int(0.9 * (len(waits) - 1))],
        relaxed_share=sum(r.relaxed for r in runs) / len(waits),
        contacts_per_s=statistics.mean(r.contacts_per_s for r in runs),
        handling=statistics.mean(r.handling for r in runs),
    )


def _controlled(ys: list[float], batches: list[tuple[float, float, float, float]]) -> Estimate:
    """Least squares of y on (1, x1, x2); the intercept is the estimate at the controls'
    expected values (x = 0), its standard error from the residuals."""
    rows = [(1.0, b[2], b[3]) for b in batches]
    k = len(ys)
    if k < 6:
        mean = statistics.mean(ys)
        half = _t95(k - 1) * statistics.stdev(ys) / math.sqrt(k) if k > 1 else math.inf
        return Estimate(mean, half)
    xtx = [[sum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
    xty = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(3)]
    inv = _inverse3(xtx)
    beta = [sum(inv[i][j] * xty[j] for j in range(3)) for i in range(3)]
    residual = sum(
        (y - sum(b * x for b, x in zip(beta, r, strict=True))) ** 2
        for r, y in zip(rows, ys, strict=True)
    )
    s2 = residual / (k - 3)
    return Estimate(beta[0], _t95(k - 3) * math.sqrt(s2 * inv[0][0]))


def _inverse3(m: list[list[float]]) -> list[list[float]]:
    (a, b, c), (d, e, f), (g, h, i) = m
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    adj = [
        [e * i - f * h, c * h - b * i, b * f - c * e],
        [f * g - d * i, a * i - c * g, c * d - a * f],
        [d * h - e * g, b * g - a * h, a * e - b * d],
    ]
    return [[x / det for x in row] for row in adj]


def _t95(df: int) -> float:
    """Two-sided 95 % Student t quantile: exact to two decimals below df = 10, and within 0.003
    from there up (Cornish-Fisher expansion around z = 1.96)."""
    table = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
    if df in table:
        return table[df]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
