"""The surge protocol as the grid service desk runs it, on the engine with a simulated clock:
a level is raised when more than N customers stay queued in a queue continuously for T, and
cleared when M agents have been idle continuously for T'. Its actions refuse new breaks, tell
the agents already on break, and hold non-urgent outbound callbacks."""

from __future__ import annotations

import pytest

from switchboard.core.errors import FailedPrecondition
from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.testing.fakes import FakeClock
from switchboard.v1 import contact_pb2

from .engine_contacts import contact

# The grid desk's level 3, and a lower level 1 to show several levels at once.
CONFIG = """
tenants:
  acme:
    languages: [ko, en, ja, fr]
    urgent_priority: 5
    queues:
      - name: general
      - name: assets
    surge:
      - level: 3
        raise: {queued_over: 3, for: 3m}
        clear: {idle_agents: 3, for: 15m}
        actions: [refuse_breaks, notify_agents, pause_callbacks]
"""

TWO_LEVELS = """
tenants:
  acme:
    queues:
      - name: general
    surge:
      - level: 1
        raise: {queued_over: 1, for: 1m}
        clear: {idle_agents: 1, for: 5m}
        actions: [notify_agents]
      - level: 3
        raise: {queued_over: 3, for: 3m}
        clear: {idle_agents: 3, for: 15m}
        actions: [refuse_breaks, notify_agents, pause_callbacks]
"""


@pytest.fixture
def clock() -> FakeClock[float]:
    return FakeClock(1000.0)


@pytest.fixture
def engine(clock: FakeClock[float]) -> eng.Engine:
    return eng.Engine(clock, cfg.load_text(CONFIG, "test.yaml"))


def surges(effects: list[eng.Effect]) -> list[eng.SurgeChanged]:
    return [e for e in effects if isinstance(e, eng.SurgeChanged)]


def run(engine: eng.Engine, clock: FakeClock[float], seconds: float) -> list[eng.SurgeChanged]:
    """Move the clock on a second at a time, running the timers as the router does."""
    out: list[eng.SurgeChanged] = []
    end = clock.now + seconds
    while clock.now < end:
        clock.now = min(end, clock.now + 1.0)
        out += surges(engine.tick())
    return out


def online(engine: eng.Engine, agent_id: str, languages: dict[str, int]) -> list[eng.Effect]:
    _, effects = engine.sign_in("acme", agent_id, agent_id, languages, {})
    return effects + engine.set_connected("acme", agent_id, True)


def queue_french(engine: eng.Engine, *ids: str) -> None:
    """Customers nobody on shift can take (French): they stay queued."""
    for cid in ids:
        engine.add_contact(contact(cid, language="fr"))


def test_a_steady_queue_of_4_for_3_minutes_raises_level_3(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    queue_french(engine, "c1", "c2", "c3", "c4")
    assert run(engine, clock, 179) == []
    [raised] = run(engine, clock, 1)
    assert (raised.level, raised.previous, raised.queue, raised.queued) == (3, 0, "general", 4)
    assert "more than 3 queued" in raised.reason
    assert engine.tenant("acme").surge_level == 3


def test_a_queue_of_3_for_10_minutes_does_not(engine: eng.Engine, clock: FakeClock[float]) -> None:
    queue_french(engine, "c1", "c2", "c3")
    assert run(engine, clock, 600) == []
    assert engine.tenant("acme").surge_level == 0


def test_4_for_2_59_does_not(engine: eng.Engine, clock: FakeClock[float]) -> None:
    queue_french(engine, "c1", "c2", "c3", "c4")
    assert run(engine, clock, 179) == []
    engine.withdraw_contact("c4", "abandoned")
    assert run(engine, clock, 600) == []


def test_dipping_to_3_resets_the_timer(engine: eng.Engine, clock: FakeClock[float]) -> None:
    queue_french(engine, "c1", "c2", "c3", "c4")
    assert run(engine, clock, 120) == []
    engine.withdraw_contact("c1", "abandoned")  # 3 queued: the condition no longer holds
    assert run(engine, clock, 10) == []
    queue_french(engine, "c5")  # 4 again: the 3 minutes start over
    assert run(engine, clock, 179) == []
    [raised] = run(engine, clock, 1)
    assert raised.level == 3


def test_each_queue_is_counted_on_its_own(engine: eng.Engine, clock: FakeClock[float]) -> None:
    queue_french(engine, "c1", "c2")
    for cid in ("a1", "a2"):
        engine.add_contact(contact(cid, language="fr", queue="assets"))
    assert run(engine, clock, 600) == []


def test_offered_customers_are_still_queued(engine: eng.Engine, clock: FakeClock[float]) -> None:
    # An offer on the table does not answer the customer: 4 are still queued.
    queue_french(engine, "c1", "c2", "c3", "c4")
    online(engine, "fr-1", {"fr": 5})
    assert engine.agent("acme", "fr-1").offer_id
    [raised] = run(engine, clock, 180)
    assert raised.queued == 4


def test_a_steady_queue_of_10_each_answered_in_2_5_minutes_raises_it(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    # A customer arrives every 15 s and each is answered after 150 s: 10 are always queued,
    # nobody waits 3 minutes, and the level goes up 3 minutes after the 4th was queued.
    online(engine, "fr-1", {"fr": 5})
    engine.set_presence("acme", "fr-1", eng.Presence.OFFLINE, "", force=True)
    raised: list[eng.SurgeChanged] = []
    fourth_at = 0.0
    for i in range(30):
        engine.add_contact(contact(f"c{i}", language="fr", channel=contact_pb2.CHANNEL_VOICE))
        if i == 3:
            fourth_at = clock.now
        if i >= 10:  # the agent answers the oldest, which has waited 150 s
            engine.set_presence("acme", "fr-1", eng.Presence.AVAILABLE, "")
            offer = engine.offers[engine.agent("acme", "fr-1").offer_id or ""]
            waited = clock.now - engine.contacts[offer.contact_id].queued_at
            assert waited == 150, offer.contact_id
            engine.accept("acme", "fr-1", offer.offer_id)
            engine.set_presence("acme", "fr-1", eng.Presence.OFFLINE, "", force=True)
            engine.wrap_up("acme", "fr-1", offer.contact_id, "")
        before = clock.now
        raised += run(engine, clock, 15)
        if raised:
            break
    assert [r.level for r in raised] == [3]
    assert before - fourth_at < 180 <= clock.now - fourth_at
    assert all(c.status != eng.Status.ABANDONED for c in engine.contacts.values())


def _raise(engine: eng.Engine, clock: FakeClock[float]) -> None:
    queue_french(engine, "c1", "c2", "c3", "c4")
    [raised] = run(engine, clock, 180)
    assert raised.level == 3
    for cid in ("c1", "c2", "c3", "c4"):
        engine.withdraw_contact(cid, "abandoned")


def test_3_agents_idle_for_15_minutes_clear_it(engine: eng.Engine, clock: FakeClock[float]) -> None:
    _raise(engine, clock)
    for agent_id in ("ko-1", "ko-2", "ko-3"):
        online(engine, agent_id, {"ko": 5})
    assert run(engine, clock, 899) == []
    [cleared] = run(engine, clock, 1)
    assert (cleared.level, cleared.previous) == (0, 3)
    assert "3 agents idle" in cleared.reason
    assert engine.tenant("acme").surge_level == 0


def test_2_idle_agents_do_not_clear_it(engine: eng.Engine, clock: FakeClock[float]) -> None:
    _raise(engine, clock)
    for agent_id in ("ko-1", "ko-2"):
        online(engine, agent_id, {"ko": 5})
    assert run(engine, clock, 3600) == []
    assert engine.tenant("acme").surge_level == 3


def test_taking_a_contact_restarts_an_agents_idle_time(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    _raise(engine, clock)
    for agent_id in ("ko-1", "ko-2", "ko-3"):
        online(engine, agent_id, {"ko": 5})
    assert run(engine, clock, 600) == []
    [offer] = [e for e in engine.add_contact(contact("k1")) if isinstance(e, eng.Offered)]
    engine.accept("acme", offer.offer.agent_id, offer.offer.offer_id)
    assert run(engine, clock, 30) == []
    engine.wrap_up("acme", offer.offer.agent_id, "k1", "")
    # 15 minutes after the first three came: only two have been idle all that time
    assert run(engine, clock, 300) == []
    assert run(engine, clock, 599) == []
    [cleared] = run(engine, clock, 1)  # 15 minutes after the wrap-up
    assert cleared.level == 0


def test_it_does_not_clear_while_the_queue_still_meets_the_raise_condition(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    queue_french(engine, "c1", "c2", "c3", "c4")
    for agent_id in ("ko-1", "ko-2", "ko-3"):
        online(engine, agent_id, {"ko": 5})
    [raised] = run(engine, clock, 180)
    assert raised.level == 3
    assert run(engine, clock, 1800) == []  # idle, but the French customers are still queued
    engine.withdraw_contact("c1", "abandoned")
    [cleared] = run(engine, clock, 1)
    assert cleared.level == 0


def test_breaks_are_refused_and_agents_on_break_are_told(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    online(engine, "ko-1", {"ko": 5})
    online(engine, "ko-2", {"ko": 5})
    online(engine, "ko-3", {"ko": 5})
    engine.set_presence("acme", "ko-1", eng.Presence.BREAK, "rest")
    engine.set_presence("acme", "ko-2", eng.Presence.BREAK, "lunch")
    queue_french(engine, "c1", "c2", "c3", "c4")
    [raised] = run(engine, clock, 180)
    assert "notify_agents" in raised.actions
    assert raised.on_break == ("ko-1", "ko-2")
    with pytest.raises(FailedPrecondition, match="surge level 3 in queue 'general'"):
        engine.set_presence("acme", "ko-3", eng.Presence.BREAK, "rest")


def test_the_loss_rate_goes_with_the_level(engine: eng.Engine, clock: FakeClock[float]) -> None:
    online(engine, "fr-1", {"fr": 5})
    [offer] = [
        e for e in engine.add_contact(contact("a", language="fr")) if isinstance(e, eng.Offered)
    ]
    engine.accept("acme", "fr-1", offer.offer.offer_id)
    queue_french(engine, "gone")
    engine.withdraw_contact("gone", "abandoned")
    queue_french(engine, "c1", "c2", "c3", "c4")
    [raised] = run(engine, clock, 180)
    assert raised.abandonment_rate == pytest.approx(0.5)  # 1 abandoned of 2 that left


def test_non_urgent_callbacks_are_held_until_it_clears(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    _raise(engine, clock)
    engine.add_contact(contact("cb", callback=True))
    for agent_id in ("ko-1", "ko-2", "ko-3"):
        online(engine, agent_id, {"ko": 5})
    assert engine.contacts["cb"].status == eng.Status.WAITING  # held back
    urgent = engine.add_contact(contact("cb-urgent", callback=True, priority=5))
    assert [e for e in urgent if isinstance(e, eng.Offered)]  # an urgent one goes
    engine.withdraw_contact("cb-urgent", "gone")
    clock.now += 900
    effects = engine.tick()
    assert [e.level for e in surges(effects)] == [0]
    assert any(isinstance(e, eng.Offered) and e.contact.contact_id == "cb" for e in effects)


def test_several_levels_go_up_and_down_in_turn(clock: FakeClock[float]) -> None:
    engine = eng.Engine(clock, cfg.load_text(TWO_LEVELS, "test.yaml"))
    queue_french(engine, "c1", "c2")
    [one] = run(engine, clock, 60)
    assert (one.level, one.previous, one.actions) == (1, 0, frozenset({"notify_agents"}))
    queue_french(engine, "c3", "c4")
    [three] = run(engine, clock, 180)
    assert (three.level, three.previous) == (3, 1)
    engine.withdraw_contact("c4", "abandoned")  # 3 queued: level 1's condition still holds
    online(engine, "ko-1", {"ko": 5})
    online(engine, "ko-2", {"ko": 5})
    online(engine, "ko-3", {"ko": 5})
    [down] = run(engine, clock, 900)
    assert (down.level, down.previous) == (1, 3)
    for cid in ("c1", "c2", "c3"):
        engine.withdraw_contact(cid, "abandoned")
    [normal] = run(engine, clock, 1)
    assert (normal.level, normal.previous) == (0, 1)
