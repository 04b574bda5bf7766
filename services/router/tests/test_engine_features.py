"""Routing steps, sticky routing, surge protocol, autopause, explanations, transfer, hold and
run-time configuration — the engine with a controllable clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.core.errors import FailedPrecondition, InvalidArgument
from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.testing.fakes import FakeClock
from switchboard.v1 import contact_pb2

from .engine_contacts import contact

CONFIG = (Path(__file__).parent / "fixtures" / "engine_features.yaml").read_text()


@pytest.fixture
def clock() -> FakeClock[float]:
    return FakeClock(1000.0)


@pytest.fixture
def engine(clock: FakeClock[float]) -> eng.Engine:
    return eng.Engine(clock, cfg.load_text(CONFIG, "test.yaml"))


def online(engine: eng.Engine, agent_id: str, languages: dict[str, int], **skills: int) -> None:
    engine.sign_in("acme", agent_id, agent_id, languages, dict(skills))
    engine.set_connected("acme", agent_id, True)


def offers(effects: list[eng.Effect]) -> list[eng.Offered]:
    return [e for e in effects if isinstance(e, eng.Offered)]


def advance(engine: eng.Engine, clock: FakeClock[float], seconds: float) -> list[eng.Effect]:
    clock.now += seconds
    return engine.tick()


def test_steps_relax_proficiency_then_language_then_overflow(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    online(engine, "ko-junior", {"ko": 2})
    online(engine, "en-agent", {"en": 5})
    assert offers(engine.add_contact(contact("c1"))) == []  # the queue wants proficiency 3
    effects = advance(engine, clock, 30)
    steps = [e for e in effects if isinstance(e, eng.StepApplied)]
    assert [s.step.name for s in steps] == ["accept-level-2"]
    [offer] = offers(effects)
    assert offer.offer.agent_id == "ko-junior"
    assert offer.offer.step == "accept-level-2"
    c, state, _ = engine.explain("acme", "c1")
    assert state == "offered"
    assert c.decision.steps[0][0] == "accept-level-2"
    assert "waited 30s" in c.decision.steps[0][2]


def test_added_language_step_is_recorded_on_the_offer(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    online(engine, "en-agent", {"en": 5})
    engine.add_contact(contact("c1"))
    assert offers(advance(engine, clock, 30)) == []
    [offer] = offers(advance(engine, clock, 30))
    assert offer.offer.agent_id == "en-agent"
    assert offer.offer.via_step_language
    assert offer.offer.step == "english-too"


def test_overflow_moves_the_contact_to_the_other_queue(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    engine.add_contact(contact("c1", language="ja"))
    for _ in range(3):
        advance(engine, clock, 30)
    c = engine.contacts["c1"]
    assert c.queue == "english"
    assert [s[0] for s in c.decision.steps] == ["accept-level-2", "english-too", "overflow"]
    qs, longest = engine.queue_snapshot("acme", "english")
    assert qs.waiting == 1 and longest == pytest.approx(90)


def test_sticky_routing_prefers_the_last_agent(engine: eng.Engine, clock: FakeClock[float]) -> None:
    online(engine, "a", {"ko": 4})
    online(engine, "b", {"ko": 4})
    [first] = offers(engine.add_contact(contact("c1", phone="+821011112222")))
    agent = first.offer.agent_id
    engine.accept("acme", agent, first.offer.offer_id)
    engine.wrap_up("acme", agent, "c1", "done")
    clock.now += 20  # wrap-up ends: both agents free, the other idle longer
    engine.tick()
    [again] = offers(engine.add_contact(contact("c2", phone="+821011112222")))
    assert again.offer.agent_id == agent
    assert engine.explain("acme", "c2")[0].decision.attempts[0].candidates[0][3]  # sticky
    # After the TTL the customer is routed normally (longest idle).
    engine.decline("acme", agent, again.offer.offer_id, "")
    clock.now += 3600


def test_sticky_contact_waits_in_the_agents_list_when_it_is_busy(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    online(engine, "a", {"ko": 4})
    [o1] = offers(engine.add_contact(contact("c1", phone="+8210")))
    engine.accept("acme", "a", o1.offer.offer_id)
    engine.wrap_up("acme", "a", "c1", "")
    # a is in wrap-up; the returning customer and a stranger queue up
    engine.add_contact(contact("stranger"))
    clock.now += 1
    engine.add_contact(contact("c2", phone="+8210"))
    [o2] = offers(advance(engine, clock, 15))
    assert o2.contact.contact_id == "c2"  # its own customer first, though it came later


def test_autopause_after_missed_offers(engine: eng.Engine, clock: FakeClock[float]) -> None:
    online(engine, "a", {"ko": 4})
    engine.add_contact(contact("c1"))
    advance(engine, clock, 10)  # missed once; nobody else; it waits
    engine.add_contact(contact("c2"))
    effects = advance(engine, clock, 10)
    agent = engine.agent("acme", "a")
    assert agent.presence == eng.Presence.NOT_RESPONDING
    assert "missed 2 offers" in agent.presence_reason
    assert any(isinstance(e, eng.AgentChanged) for e in effects)
    with pytest.raises(InvalidArgument):
        engine.set_presence("acme", "a", eng.Presence.NOT_RESPONDING, "")
    _, back = engine.set_presence("acme", "a", eng.Presence.AVAILABLE, "")
    assert offers(back) and agent.missed == 0


def test_surge_level_3_refuses_breaks_pauses_callbacks_and_clears(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    online(engine, "ko-1", {"ko": 4})
    engine.set_presence("acme", "ko-1", eng.Presence.BREAK, "lunch")
    for i in range(4):
        engine.add_contact(contact(f"ja-{i}", language="ja", queue="other"))
    engine.add_contact(contact("cb", callback=True))
    effects = advance(engine, clock, 181)
    [surge] = [e for e in effects if isinstance(e, eng.SurgeChanged)]
    assert (surge.level, surge.previous, surge.queue) == (3, 0, "other")
    assert "pause_callbacks" in surge.actions
    online(engine, "ko-2", {"ko": 4})
    with pytest.raises(FailedPrecondition, match="surge level 3"):
        engine.set_presence("acme", "ko-2", eng.Presence.BREAK, "lunch")
    # the non-urgent callback is held back while the surge lasts
    assert engine.contacts["cb"].status == eng.Status.WAITING
    urgent = offers(engine.add_contact(contact("cb-urgent", callback=True, priority=5)))
    assert urgent and urgent[0].offer.agent_id == "ko-2"
    engine.decline("acme", "ko-2", urgent[0].offer.offer_id, "")
    engine.withdraw_contact("cb-urgent", "gone")
    # the Japanese contacts are answered; agents idle for 15 minutes clear the level
    online(engine, "ja-1", {"ja": 5})
    for _ in range(4):
        agent = engine.agent("acme", "ja-1")
        offer = engine.offers[agent.offer_id]  # type: ignore[index]
        engine.accept("acme", "ja-1", offer.offer_id)
        engine.wrap_up("acme", "ja-1", offer.contact_id, "")
        advance(engine, clock, 16)
    engine.set_presence("acme", "ko-1", eng.Presence.AVAILABLE, "")  # takes the callback? no:
    assert engine.contacts["cb"].status == eng.Status.WAITING  # still paused
    effects = advance(engine, clock, 15 * 60)
    [cleared] = [e for e in effects if isinstance(e, eng.SurgeChanged)]
    assert (cleared.level, cleared.previous) == (0, 3)
    assert "agents idle" in cleared.reason
    assert any(o.contact.contact_id == "cb" for o in offers(effects))


def test_explain_names_candidates_and_exclusions(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    online(engine, "ko-billing", {"ko": 5}, billing=4)
    online(engine, "ko-plain", {"ko": 5})
    online(engine, "zh-billing", {"zh": 5}, billing=5)
    online(engine, "ko-junior", {"ko": 2}, billing=4)
    engine.sign_in("acme", "ko-break", "ko-break", {"ko": 5}, {"billing": 5})
    engine.set_connected("acme", "ko-break", True)
    engine.set_presence("acme", "ko-break", eng.Presence.BREAK, "lunch")
    [offer] = offers(engine.add_contact(contact("c1", skills=("billing",))))
    assert offer.offer.agent_id == "ko-billing"
    c, _, _ = engine.explain("acme", "c1")
    attempt = c.decision.attempts[0]
    assert attempt.candidates[0][0] == "ko-billing"
    reasons = {agent: why for agent, why, _ in attempt.excluded}
    assert reasons["ko-plain"] == (eng.Why.SKILL,)
    assert reasons["zh-billing"] == (eng.Why.LANGUAGE,)
    assert reasons["ko-junior"] == (eng.Why.STEP,)
    assert reasons["ko-break"] == (eng.Why.PRESENCE,)
    assert attempt.excluded_total == 4
    engine.accept("acme", "ko-billing", offer.offer.offer_id)
    assert engine.explain("acme", "c1")[0].decision.attempts[0].outcome == "accepted"


def test_waiting_contact_explains_why_it_waits(engine: eng.Engine) -> None:
    online(engine, "en", {"en": 5})
    engine.add_contact(contact("c1", language="ja"))
    _, state, live = engine.explain("acme", "c1")
    assert state == "waiting" and live is not None
    assert live.excluded == [("en", (eng.Why.LANGUAGE,), "does not speak ja")]


def test_transfer_requeues_with_the_original_wait(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    online(engine, "ko", {"ko": 4})
    [offer] = offers(engine.add_contact(contact("c1")))
    engine.accept("acme", "ko", offer.offer.offer_id)
    clock.now += 50
    effects = engine.transfer("acme", "c1", "english", "ko")
    assert any(isinstance(e, eng.Transferred) for e in effects)
    c = engine.contacts["c1"]
    assert c.queue == "english" and c.status == eng.Status.WAITING
    assert engine.agent("acme", "ko").active == {}
    with pytest.raises(InvalidArgument, match="unknown queue"):
        engine.transfer("acme", "c1", "nowhere", "")


def test_hold_is_timed_into_the_end(engine: eng.Engine, clock: FakeClock[float]) -> None:
    online(engine, "ko", {"ko": 4})
    [offer] = offers(engine.add_contact(contact("c1", channel=contact_pb2.CHANNEL_VOICE)))
    engine.accept("acme", "ko", offer.offer.offer_id)
    clock.now += 10
    assert engine.set_hold("acme", "ko", "c1", True)
    clock.now += 25
    engine.set_hold("acme", "ko", "c1", False)
    clock.now += 5
    [ended] = [e for e in engine.wrap_up("acme", "ko", "c1", "ok") if isinstance(e, eng.Ended)]
    assert ended.hold == pytest.approx(25)
    assert ended.talk == pytest.approx(40)
    assert engine.agent("acme", "ko").presence == eng.Presence.WRAP_UP
    advance(engine, clock, 15)
    assert engine.agent("acme", "ko").presence == eng.Presence.AVAILABLE


def test_a_call_is_exclusive(engine: eng.Engine) -> None:
    online(engine, "ko", {"ko": 4})
    [offer] = offers(engine.add_contact(contact("v1", channel=contact_pb2.CHANNEL_VOICE)))
    engine.accept("acme", "ko", offer.offer.offer_id)
    assert offers(engine.add_contact(contact("chat1"))) == []
    assert offers(engine.add_contact(contact("v2", channel=contact_pb2.CHANNEL_VOICE))) == []


def test_new_configuration_keeps_waiting_contacts(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    engine.add_contact(contact("c1", queue="other"))
    engine.add_contact(contact("c2", queue="general"))
    text = """
languages: [ko]
queues:
  - name: general
"""
    engine.apply_tenant_config(cfg.load_tenant_text("acme", text))
    # `other` is gone: its contact is re-filed under the default queue; nothing is lost
    assert engine.contacts["c1"].queue == "general"
    assert engine.queue_snapshot("acme", "general")[0].waiting == 2
    assert engine.config_versions["acme"][0] == 1
    online(engine, "ko-junior", {"ko": 1})  # the new queue has no minimum proficiency 3
    assert engine.contacts["c1"].status == eng.Status.OFFERED


def test_an_agents_own_capacity_outlives_a_new_configuration(engine: eng.Engine) -> None:
    chat, email = contact_pb2.CHANNEL_CHAT, contact_pb2.CHANNEL_EMAIL
    engine.sign_in("acme", "own", "", {"ko": 5}, {}, {chat: 1})
    engine.sign_in("acme", "default", "", {"ko": 5}, {})
    text = "languages: [ko]\ncapacity: {chat: 4, email: 2}\nqueues:\n  - name: general\n"
    engine.apply_tenant_config(cfg.load_tenant_text("acme", text))
    assert engine.agents[("acme", "own")].capacity[chat] == 1  # its own, as signed in
    assert engine.agents[("acme", "own")].capacity[email] == 2  # the tenant's new default
    assert engine.agents[("acme", "default")].capacity[chat] == 4


def test_a_waiting_call_turned_callback_keeps_its_place(
    engine: eng.Engine, clock: FakeClock[float]
) -> None:
    engine.add_contact(contact("first", channel=contact_pb2.CHANNEL_VOICE))
    clock.now += 5
    engine.add_contact(contact("second", channel=contact_pb2.CHANNEL_VOICE))
    engine.add_contact(contact("first", channel=contact_pb2.CHANNEL_VOICE, callback=True))
    c = engine.contacts["first"]
    assert c.contact.callback and c.req is not None and c.req.pausable
    assert c.queued_at == 1000.0
    engine.sign_in("acme", "ko", "ko", {"ko": 4}, {})
    [offer] = offers(engine.set_connected("acme", "ko", True))
    assert offer.contact.contact_id == "first"
