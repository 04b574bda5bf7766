"""The discrete-event simulation: Erlang C itself, and the real engine against it."""

from __future__ import annotations

import math

import pytest

from switchboard.router import erlang
from switchboard.router import simulation as sim
from switchboard.router.simulation import scenarios


def test_erlang_b_and_c_match_textbook_values() -> None:
    # 10 agents offered 8 erlangs: B = 0.1217, C = 0.4092 (the textbook staffing example).
    assert erlang.erlang_b(10, 8.0) == pytest.approx(0.12166, abs=1e-5)
    assert erlang.erlang_c(10, 8.0) == pytest.approx(0.40918, abs=1e-5)
    # M/M/1: the chance of waiting is the utilisation.
    assert erlang.erlang_c(1, 0.5) == pytest.approx(0.5)
    # ASA = C x AHT / (N - A); SL(20 s) = 1 - C exp(-(N - A) T / AHT).
    assert erlang.average_speed_of_answer(10, 8.0, 180.0) == pytest.approx(36.826, abs=1e-3)
    assert erlang.service_level(10, 8.0, 180.0, 20.0) == pytest.approx(0.67235, abs=1e-5)
    # Overload: everyone waits, nobody within the threshold.
    assert erlang.erlang_c(10, 10.0) == 1.0
    assert erlang.service_level(10, 12.0, 180.0, 20.0) == 0.0


def test_erlang_c_is_stable_for_large_centres() -> None:
    # Factorials and powers would overflow here; the Erlang B recurrence does not.
    c = erlang.erlang_c(5000, 4950.0)
    assert 0.0 < c < 1.0
    assert not math.isnan(c)


def test_engine_service_level_agrees_with_erlang_c() -> None:
    workload = scenarios.single_skill(agents=10, load=8.0, contacts=21_000, warmup=1_000)
    run = sim.simulate(workload, seed=11, make_router=sim.EngineRouter)
    result = sim.figures([run])
    expected = erlang.service_level(10, 8.0, scenarios.HANDLE, scenarios.THRESHOLD)
    standard_error = result.sl.half / sim._t95(len(run.batches) - 3)
    # Tolerance: 20,000 measured contacts in 20 batch means give a standard error of about
    # 0.8 pp for the service level (the control-variate estimate; consecutive waits are
    # correlated, so batches, not contacts, are the independent samples). A correct engine
    # lands within 3 standard errors of Erlang C with probability 99.7 %; a router that left
    # agents idle while contacts wait, or served them out of order, misses by far more.
    assert standard_error < 0.015, "the run is too short to test anything"
    assert abs(result.sl.value - expected) <= 3 * standard_error, (result.sl, expected)


def test_engine_and_naive_router_agree_when_every_agent_is_alike() -> None:
    # One skill, identical agents: any work-conserving first-come router gives every contact the
    # same wait, so the engine must reproduce the baseline exactly.
    workload = scenarios.single_skill(agents=4, load=3.0, contacts=3_000, warmup=0)
    engine_run = sim.simulate(workload, seed=5, make_router=sim.EngineRouter)
    naive_run = sim.simulate(workload, seed=5, make_router=sim.NaiveRouter)
    assert engine_run.waits == pytest.approx(naive_run.waits)


def test_relaxation_step_lets_other_skills_answer() -> None:
    workload = scenarios.multi_skill(contacts=4_000)
    strict = sim.simulate(workload, seed=3, make_router=sim.EngineRouter)
    relaxed = sim.simulate(
        workload,
        seed=3,
        make_router=lambda w, a: sim.EngineRouter(w, a, steps=scenarios.RELAX_STEPS),
    )
    assert strict.relaxed == 0
    assert relaxed.relaxed > 0
    # Pooling agents of a language after the step shortens the mean wait on the same arrivals.
    assert sum(relaxed.waits) < sum(strict.waits)
