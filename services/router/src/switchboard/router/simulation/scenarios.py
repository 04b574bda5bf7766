"""`make simulate` (``python -m switchboard.router.simulation``): the routing engine against
queueing theory and against a naive router.

Scenarios (Poisson arrivals, exponential handling, see the package `switchboard.router.simulation`):

1. One language, one skill, N agents: the engine's service level against Erlang C.
2. Four languages x four skills, each agent one language and two skills, each contact a
   language and one skill: the service level against the fully pooled Erlang C bound, the
   per-language pools and separate per-cell pools; the naive baseline; the engine with a
   relaxation step.
3. The same centre where proficiency matters (experts handle faster): naive vs engine vs engine
   with relaxation steps.

Prints a table, writes a PNG chart; exits 1 if scenario 1 disagrees with Erlang C by more than
one percentage point.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from switchboard.router import erlang
from switchboard.router import simulation as sim
from switchboard.router.domain import config as cfg

LANGUAGES = ("ko", "zh", "en", "ja")
SKILLS = ("billing", "technical", "account", "complaint")
HANDLE = 180.0  # mean handling time, s (a voice call)
THRESHOLD = 20.0  # service level: answered within 20 s
TOLERANCE = 0.01  # scenario 1 must agree with Erlang C within one percentage point

# Scenario 1: 10 agents offered 8 erlangs (the textbook case: Erlang C = 0.409).
SINGLE_AGENTS, SINGLE_LOAD = 10, 8.0
# Scenarios 2 and 3: 4 agents per (language, pair of skills): 4 x 6 x 4 = 96 agents, 80 erlangs.
PER_PAIR, MULTI_LOAD = 4, 80.0
RELAX_AFTER = 10.0

RELAX_STEPS = (cfg.Step("any-skill", RELAX_AFTER, drop_skills=True),)
PROFICIENCY_STEPS = (cfg.Step("relax-proficiency", RELAX_AFTER, min_proficiency=1),)


def single_skill(agents: int, load: float, contacts: int, warmup: int = 1000) -> sim.Workload:
    team = [sim.AgentSpec(f"a{i}", {"en": 3}, {"billing": 3}) for i in range(agents)]
    return sim.Workload(team, [("en", "billing")], load, HANDLE, THRESHOLD, contacts, warmup)


def multi_skill(contacts: int, proficiency_speed: bool = False) -> sim.Workload:
    """4 languages x 4 skills; each agent speaks one language and holds two skills (every pair
    equally staffed), proficiencies drawn once (fixed seed) from 1-5."""
    rng = random.Random(7)
    team = []
    for lang in LANGUAGES:
        for pair in itertools.combinations(SKILLS, 2):
            for i in range(PER_PAIR):
                team.append(
                    sim.AgentSpec(
                        f"{lang}-{pair[0][:4]}-{pair[1][:4]}-{i}",
                        {lang: rng.randint(3, 5)},
                        {s: rng.randint(1, 5) for s in pair},
                    )
                )
    cells = [(lang, skill) for lang in LANGUAGES for skill in SKILLS]
    warmup = max(2000, contacts // 20)
    return sim.Workload(
        team, cells, MULTI_LOAD, HANDLE, THRESHOLD, contacts, warmup, proficiency_speed
    )


# ---- routers, by name (so runs can go to worker processes) --------------------------------------

ROUTERS: dict[str, Callable[[sim.Workload, sim.Assign], sim.Router]] = {
    "naive": sim.NaiveRouter,
    "engine": sim.EngineRouter,
    "engine+steps": functools.partial(sim.EngineRouter, steps=RELAX_STEPS),
    "engine+steps(prof)": functools.partial(
        sim.EngineRouter, steps=PROFICIENCY_STEPS, min_proficiency=3
    ),
}


@dataclass(frozen=True)
class Job:
    scenario: str
    router: str
    seed: int
    workload: sim.Workload


def _run(job: Job) -> tuple[str, str, sim.Run]:
    return job.scenario, job.router, sim.simulate(job.workload, job.seed, ROUTERS[job.router])


def run_all(jobs: list[Job], workers: int) -> dict[tuple[str, str], list[sim.Run]]:
    runs: dict[tuple[str, str], list[sim.Run]] = {}
    # Longest first, so the last job to finish is a short one.
    jobs = sorted(jobs, key=lambda j: -j.workload.contacts * (j.router != "naive"))
    if workers <= 1:
        results = [_run(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_run, jobs))
    for scenario, router, run in results:
        runs.setdefault((scenario, router), []).append(run)
    return runs


# ---- report ----------------------------------------------------------------------------------


def _pct(e: sim.Estimate) -> str:
    if math.isnan(e.half):  # an exact figure
        return f"{100 * e.value:6.2f}       "
    return f"{100 * e.value:6.2f} ± {100 * e.half:4.2f}"


def _secs(e: sim.Estimate) -> str:
    if math.isnan(e.half):
        return f"{e.value:7.2f}        "
    return f"{e.value:7.2f} ± {e.half:5.2f}"


def report(
    results: dict[tuple[str, str], sim.Figures], single: sim.Workload, multi: sim.Workload
) -> tuple[str, bool]:
    lines: list[str] = []
    n, a = len(single.agents), single.load
    erl_sl = erlang.service_level(n, a, HANDLE, THRESHOLD)
    erl_asa = erlang.average_speed_of_answer(n, a, HANDLE)
    f = results[("single", "engine")]
    diff = f.sl.value - erl_sl
    # Agreement: the difference is within the tolerance and the 95 % interval is narrower than
    # it (so the agreement is not an artefact of a short run).
    ok = abs(diff) <= TOLERANCE and f.sl.half < TOLERANCE
    lines += [
        f"Scenario 1: one skill, {n} agents, {a:g} erlangs, handling {HANDLE:g} s, "
        f"SL = answered within {THRESHOLD:g} s",
        f"  {'':34} {'SL %':>15} {'ASA s':>15}",
        f"  {'Erlang C':34} {_pct(sim.Estimate(erl_sl, math.nan)):>15} "
        f"{_secs(sim.Estimate(erl_asa, math.nan)):>15}",
        f"  {'engine (simulated)':34} {_pct(f.sl):>15} {_secs(f.asa):>15}",
        f"  difference {100 * diff:+.2f} pp ({'agrees' if ok else 'DISAGREES'} within "
        f"{100 * TOLERANCE:g} pp); with its 95 % interval, within "
        f"{100 * (abs(diff) + f.sl.half):.2f} pp",
        f"  {f.contacts:,} contacts measured; the engine simulated "
        f"{f.contacts_per_s:,.0f} contacts/s",
        "",
    ]
    cells = len(multi.cells)
    agents = len(multi.agents)
    per_cell = agents // cells
    refs = [
        (f"separate pools per cell (Erlang C, {per_cell} agents each)", per_cell, MULTI_LOAD / 16),
        (
            f"one pool per language (Erlang C, {agents // 4} agents each)",
            agents // 4,
            MULTI_LOAD / 4,
        ),
        (f"fully pooled bound (Erlang C, {agents} agents)", agents, MULTI_LOAD),
    ]
    header = f"  {'':52} {'SL %':>15} {'ASA s':>15} {'p90 s':>7} {'relaxed':>8} {'AHT s':>6}"
    for scenario, title in (
        ("multi", "Scenario 2: 4 languages x 4 skills, agents with 2 skills each, flat handling"),
        ("prof", "Scenario 3: the same centre, handling time by proficiency (5: x0.8 .. 1: x1.2,"),
    ):
        lines.append(title)
        if scenario == "prof":
            lines.append(f"  without the skill x{sim.OFF_SKILL}); reference bounds do not apply")
        lines.append(
            f"  {agents} agents, {MULTI_LOAD:g} erlangs, {cells} cells (language x skill), "
            f"relaxation step after {RELAX_AFTER:g} s"
        )
        lines.append(header)
        if scenario == "multi":
            c, rest = refs[0], refs[1:]
            lines.append(_ref_line(*c))
        for router in ROUTERS:
            fig = results.get((scenario, router))
            if fig is None:
                continue
            lines.append(
                f"  {_label(router):52} {_pct(fig.sl):>15} {_secs(fig.asa):>15} "
                f"{fig.p90_wait:7.1f} {100 * fig.relaxed_share:7.1f}% {fig.handling:6.1f}"
            )
        if scenario == "multi":
            for ref in rest:
                lines.append(_ref_line(*ref))
            engine = results[("multi", "engine")].sl.value
            lo, hi = (erlang.service_level(n_, a_, HANDLE, THRESHOLD) for _, n_, a_ in refs[::2])
            lines.append(
                f"  the engine closes {100 * (engine - lo) / (hi - lo):.0f} % of the gap between "
                f"separate cells and the fully pooled bound"
            )
        lines.append("")
    return "\n".join(lines), ok


def _label(router: str) -> str:
    return {
        "naive": "naive: longest idle, first come (simulated)",
        "engine": "engine, no steps (simulated)",
        "engine+steps": f"engine, any skill after {RELAX_AFTER:g} s (simulated)",
        "engine+steps(prof)": f"engine, proficiency >= 3, >= 1 after {RELAX_AFTER:g} s",
    }[router]


def _ref_line(label: str, n: int, a: float) -> str:
    sl = erlang.service_level(n, a, HANDLE, THRESHOLD)
    asa = erlang.average_speed_of_answer(n, a, HANDLE)
    return (
        f"  {label:52} {_pct(sim.Estimate(sl, math.nan)):>15} "
        f"{_secs(sim.Estimate(asa, math.nan)):>15}"
    )


def chart(
    results: dict[tuple[str, str], sim.Figures],
    single_runs_sl: list[tuple[float, float]],
    single: sim.Workload,
    multi: sim.Workload,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    n, a = len(single.agents), single.load
    ts = [t / 2 for t in range(0, 241)]
    ax = axes[0]
    ax.plot(ts, [100 * erlang.service_level(n, a, HANDLE, t) for t in ts], label="Erlang C")
    ax.plot(
        [t for t, _ in single_runs_sl],
        [100 * s for _, s in single_runs_sl],
        "o",
        label="engine, simulated",
    )
    ax.set(
        title=f"1 skill: {n} agents, {a:g} erlangs",
        xlabel="threshold T (s)",
        ylabel="% answered within T",
    )
    ax.grid(alpha=0.3)
    ax.legend()

    agents = len(multi.agents)
    refs = {
        "cells": erlang.service_level(agents // 16, MULTI_LOAD / 16, HANDLE, THRESHOLD),
        "language": erlang.service_level(agents // 4, MULTI_LOAD / 4, HANDLE, THRESHOLD),
        "pooled": erlang.service_level(agents, MULTI_LOAD, HANDLE, THRESHOLD),
    }
    for ax, (metric, unit) in zip(axes[1:], (("sl", "%"), ("asa", "s")), strict=True):
        names = [r for r in ROUTERS if ("multi", r) in results or ("prof", r) in results]
        width = 0.38
        for k, (scenario, label) in enumerate(
            (("multi", "flat handling"), ("prof", "handling by proficiency"))
        ):
            xs, ys, errs = [], [], []
            for i, r in enumerate(names):
                fig_ = results.get((scenario, r))
                if fig_ is None:
                    continue
                est = fig_.sl if metric == "sl" else fig_.asa
                scale = 100.0 if metric == "sl" else 1.0
                xs.append(i + (k - 0.5) * width)
                ys.append(scale * est.value)
                errs.append(scale * est.half)
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label=label)
        ax.set_xticks(range(len(names)), [_short(r) for r in names], fontsize=8)
        if metric == "sl":
            styles = {"cells": ":", "language": "-.", "pooled": "--"}
            for name, value in refs.items():
                ax.axhline(
                    100 * value, color="grey", ls=styles[name], lw=1, label=f"Erlang C, {name}"
                )
            ax.set(title=f"4 languages x 4 skills: SL ({THRESHOLD:g} s)", ylabel="%")
        else:
            ax.set(title="4 languages x 4 skills: average speed of answer", ylabel=unit)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(router: str) -> str:
    return {
        "naive": "naive",
        "engine": "engine",
        "engine+steps": f"engine\n+any skill {RELAX_AFTER:g}s",
        "engine+steps(prof)": f"engine prof>=3\n+any prof {RELAX_AFTER:g}s",
    }[router]


# ---- main ------------------------------------------------------------------------------------


def plan(scale: float, seeds: int) -> tuple[list[Job], sim.Workload, sim.Workload]:
    single = single_skill(SINGLE_AGENTS, SINGLE_LOAD, int(120_000 * scale))
    multi = multi_skill(int(25_000 * scale))
    prof = replace(multi, proficiency_speed=True)
    # Scenario 1 needs the tightest interval: twice the runs of the others.
    jobs = [Job("single", "engine", 1 + s, single) for s in range(2 * seeds)]
    for router in ("naive", "engine", "engine+steps"):
        jobs += [Job("multi", router, 101 + s, multi) for s in range(seeds)]
    for router in ("naive", "engine", "engine+steps(prof)"):
        jobs += [Job("prof", router, 101 + s, prof) for s in range(seeds)]
    return jobs, single, multi


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.router.simulation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--chart", type=Path, default=Path("simulation.png"))
    parser.add_argument("--scale", type=float, default=1.0, help="run length factor")
    parser.add_argument("--seeds", type=int, default=2, help="runs per router and scenario")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    jobs, single, multi = plan(args.scale, args.seeds)
    runs = run_all(jobs, args.workers)
    results = {key: sim.figures(value) for key, value in runs.items()}
    text, ok = report(results, single, multi)
    print(text)
    waits = [w for run in runs[("single", "engine")] for w in run.waits]
    points = [
        (float(t), sum(1 for w in waits if w <= t) / len(waits))
        for t in (0, 10, 20, 40, 60, 90, 120)
    ]
    chart(results, points, single, multi, args.chart)
    print(f"chart written to {args.chart}; {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1
