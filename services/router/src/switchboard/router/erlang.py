"""Erlang B and Erlang C: the queueing formulas a contact centre staffs by (M/M/N, no abandonment).

Erlang C is computed from Erlang B by the stable recurrence B(0) = 1,
B(k) = A·B(k-1) / (k + A·B(k-1)), then C = N·B / (N - A·(1 - B)): no factorials or powers, so it
holds for thousands of agents.
"""

from __future__ import annotations

import math


def erlang_b(agents: int, load: float) -> float:
    """Blocking probability of `agents` servers offered `load` erlangs (no queue)."""
    if agents < 0 or load < 0:
        raise ValueError("agents and load must be non-negative")
    b = 1.0
    for k in range(1, agents + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(agents: int, load: float) -> float:
    """Probability that a contact waits at all, `agents` servers offered `load` erlangs."""
    if load >= agents:
        return 1.0
    b = erlang_b(agents, load)
    return agents * b / (agents - load * (1.0 - b))


def service_level(agents: int, load: float, handle: float, threshold: float) -> float:
    """Share of contacts answered within `threshold` s (mean handling time `handle` s)."""
    if load >= agents:
        return 0.0
    return 1.0 - erlang_c(agents, load) * math.exp(-(agents - load) * threshold / handle)


def average_speed_of_answer(agents: int, load: float, handle: float) -> float:
    """Mean wait in seconds over all contacts (ASA)."""
    if load >= agents:
        return math.inf
    return erlang_c(agents, load) * handle / (agents - load)
