"""The chat's abuse limits by who spends, not by socket: a visitor's sockets share one budget,
on one replica and across replicas; an address's new visitor tokens are limited; an agent's
events are limited too. On the limiter with a fake clock, and through real sockets and HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.chat.domain.rate_limit import Budget, Limiter, Throttled
from switchboard.testing.fakes import FakeClock
from switchboard.testing.waiting import eventually

BUDGETS = {"messages": Budget(1.0, 3, "messages"), "address": Budget(1.0, 5, "messages here")}


def test_a_charge_is_all_or_nothing_and_names_what_ran_out() -> None:
    limiter = Limiter(BUDGETS, FakeClock(0.0))
    for visitor in ("v1", "v1", "v1", "v2", "v2"):
        limiter.take([("messages", visitor), ("address", "10.0.0.1")])
    with pytest.raises(Throttled, match="too many messages here"):  # the address's 6th
        limiter.take([("messages", "v3"), ("address", "10.0.0.1")])
    limiter.take([("messages", "v3"), ("address", "10.0.0.2")])  # v3 paid nothing above
    with pytest.raises(Throttled, match="too many messages: "):
        limiter.take([("messages", "v1"), ("address", "10.0.0.9")])


def test_what_another_replica_spent_comes_off_the_same_bucket() -> None:
    clock = FakeClock(0.0)
    shared: list[tuple[str, str, float]] = []
    here = Limiter(BUDGETS, clock, share=lambda n, w, c: shared.append((n, w, c)))
    there = Limiter(BUDGETS, clock)
    here.take([("messages", "v1")])
    here.take([("messages", "v1")])
    for spend in shared:
        there.spent_elsewhere(*spend)
    there.take([("messages", "v1")])
    with pytest.raises(Throttled, match=r"retry in 1\.0 s"):
        there.take([("messages", "v1")])
    clock.advance(1.0)
    there.take([("messages", "v1")])
    there.spent_elsewhere("unknown-budget", "v1", 1.0)  # from a newer replica: ignored


async def _flood(sockets: list[Any], count: int) -> int:
    """Send `count` messages round-robin over `sockets`; how many were accepted."""
    accepted = 0
    for i in range(count):
        ack = await sockets[i % len(sockets)].call("message", {"text": f"spam {i}"})
        accepted += bool(ack["ok"])
    return accepted


async def test_a_visitors_sockets_share_one_budget(replicas: Any) -> None:
    _, connect = await replicas.start(message_burst=5, messages_per_second=0.01)
    first, _, _ = await connect.conversation()
    others = [await connect.customer(token=first.token) for _ in range(3)]
    for other in others:
        await other.next("session")
    # One message spent on the conversation; four more in the burst, whatever the socket.
    assert await _flood([first, *others], 20) == 4


async def test_a_visitor_on_two_replicas_has_one_budget(replicas: Any) -> None:
    _, a = await replicas.start(message_burst=5, messages_per_second=0.01)
    _, b = await replicas.start(message_burst=5, messages_per_second=0.01)
    on_a, _, _ = await a.conversation()
    assert await _flood([on_a], 10) == 4  # the burst is spent on replica A
    on_b = await b.customer(token=on_a.token)
    await on_b.next("session")

    async def refused_on_b() -> bool:
        ack = await on_b.call("typing", {"typing": True})  # a signal: its own budget
        assert ack["ok"], ack
        probe = await on_b.call("message", {"text": "again?"})
        return not probe["ok"] and probe["error"].startswith("too many messages")

    # Replica B learns what A spent (over NATS) and refuses; at most what was in flight passes.
    await eventually(refused_on_b, "replica B refusing the visitor A throttled", seconds=10)


async def test_an_address_gets_a_few_visitor_tokens_a_minute(replicas: Any) -> None:
    _, connect = await replicas.start(visitor_tokens_per_minute=3)
    statuses = [(await connect.visitor_token())["status"] for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = await connect.visitor_token()
    assert refused["status"] == 429
    assert refused["error"].startswith("too many new visitors from your address")


async def test_an_agents_events_are_limited(replicas: Any) -> None:
    _, connect = await replicas.start(agent_event_burst=3, agent_events_per_second=0.01)
    agent = await connect.agent("agent-1")
    acks = [await agent.call("typing", {"contact_id": "c-1", "typing": True}) for _ in range(5)]
    refused = [a for a in acks if not a["ok"] and a["error"].startswith("too many events")]
    assert len(refused) == 2, acks
