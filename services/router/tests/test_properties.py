"""Property tests: random sequences of agent and contact events against the engine's invariants,
and replay determinism (the journal's foundation)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.core.errors import DomainError
from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.testing.fakes import FakeClock
from switchboard.v1 import contact_pb2

CONFIG = """
tenants:
  acme:
    languages: [ko, zh, en]
    skills: [billing, technical]
    capacity: {voice: 1, chat: 2, email: 3, fax: 3}
    accept_timeout: {voice: 10s, chat: 10s, email: 10s, fax: 10s}
    autopause_after: 3
    wrap_up_after: 5s
    sticky_ttl: 10m
    queues:
      - name: general
        min_proficiency: 2
        steps:
          - {name: relax, after: 20s, min_proficiency: 1}
          - {name: english, after: 40s, add_languages: [en]}
          - {name: any-skill, after: 60s, drop_skills: true}
      - name: vip
        steps:
          - {name: overflow, after: 30s, overflow_to: general}
    surge:
      - level: 3
        raise: {queued_over: 2, for: 50s}
        clear: {idle_agents: 1, for: 30s}
        actions: [refuse_breaks, pause_callbacks]
"""

LANGS = ["ko", "zh", "en", "ko-KR"]
SKILLS = ["billing", "technical"]
CHANNELS = [contact_pb2.CHANNEL_VOICE, contact_pb2.CHANNEL_CHAT, contact_pb2.CHANNEL_EMAIL]

_OPS = [
    st.tuples(
        st.just("agent"),
        st.integers(0, 5),
        st.dictionaries(st.sampled_from(["ko", "zh", "en"]), st.integers(1, 5), min_size=1),
        st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 5)),
    ),
    st.tuples(st.just("connect"), st.integers(0, 5), st.booleans()),
    st.tuples(
        st.just("presence"),
        st.integers(0, 5),
        st.sampled_from(
            [eng.Presence.AVAILABLE, eng.Presence.BREAK, eng.Presence.BUSY, eng.Presence.OFFLINE]
        ),
    ),
    st.tuples(
        st.just("contact"),
        st.sampled_from(LANGS),
        st.lists(st.sampled_from(SKILLS), max_size=2, unique=True),
        st.sampled_from(CHANNELS),
        st.sampled_from(["general", "vip"]),
        st.integers(0, 3),  # phone number (sticky)
        st.booleans(),  # callback
        st.integers(0, 6),  # priority
    ),
    st.tuples(st.just("accept"), st.integers(0, 10)),
    st.tuples(st.just("accept"), st.integers(0, 10)),
    st.tuples(st.just("accept"), st.integers(0, 10)),
    st.tuples(st.just("decline"), st.integers(0, 10)),
    st.tuples(st.just("wrap"), st.integers(0, 10)),
    st.tuples(st.just("abandon"), st.integers(0, 30)),
    st.tuples(st.just("transfer"), st.integers(0, 30), st.sampled_from(["general", "vip"])),
    st.tuples(st.just("time"), st.floats(0.5, 40)),
]
# Weighted: enough agents, contacts, accepts and time for the interesting states to happen.
AGENT, CONNECT, PRESENCE, CONTACT, ACCEPT, _, _, DECLINE, WRAP, ABANDON, TRANSFER, TIME = _OPS
# Weighted: enough agents, contacts, accepts and time for the interesting states to happen.
_WEIGHTED = [AGENT] * 3 + [CONNECT, PRESENCE] + [CONTACT] * 5 + [ACCEPT] * 5 + [DECLINE]
_WEIGHTED += [WRAP] * 3 + [ABANDON, TRANSFER] + [TIME] * 4
ops = st.integers(0, len(_WEIGHTED) - 1).flatmap(lambda i: _WEIGHTED[i])


def run(
    sequence: list[tuple[Any, ...]],
) -> tuple[eng.Engine, list[tuple[str, float, tuple[Any, ...]]]]:
    clock = FakeClock(1000.0)
    engine = eng.Engine(clock, cfg.load_text(CONFIG, "props.yaml"))
    log: list[tuple[str, float, tuple[Any, ...]]] = []
    added: list[str] = []

    def call(name: str, *args: Any) -> list[eng.Effect]:
        try:
            result = getattr(engine, name)(*args)
        except DomainError:
            return []
        log.append((name, clock.now, args))
        effects: list[eng.Effect] = result[1] if isinstance(result, tuple) else result
        for effect in effects:
            check_offer(engine, effect)
        return effects

    for op in sequence:
        kind = op[0]
        if kind == "agent":  # signs in and opens its offer stream
            call("sign_in", "acme", f"a{op[1]}", "", op[2], op[3])
            call("set_connected", "acme", f"a{op[1]}", True)
        elif kind == "connect":
            call("set_connected", "acme", f"a{op[1]}", op[2])
        elif kind == "presence":
            call("set_presence", "acme", f"a{op[1]}", op[2], "")
        elif kind == "contact":
            c = contact_pb2.Contact(
                contact_id=f"c{len(added)}",
                tenant="acme",
                channel=op[3],
                language=op[1],
                skills=op[2],
                queue=op[4],
                callback=op[6],
                priority=op[7],
            )
            c.identities.add(kind=contact_pb2.IDENTITY_KIND_PHONE, value=f"+8210{op[5]}")
            added.append(c.contact_id)
            call("add_contact", c)
        elif kind in ("accept", "decline"):
            live = sorted(engine.offers.values(), key=lambda o: o.offer_id)
            if live:
                offer = live[op[1] % len(live)]
                if kind == "accept":
                    call("accept", "acme", offer.agent_id, offer.offer_id)
                else:
                    call("decline", "acme", offer.agent_id, offer.offer_id, "")
        elif kind == "wrap":
            busy = sorted((a.agent_id, cid) for a in engine.agents.values() for cid in a.active)
            if busy:
                agent_id, cid = busy[op[1] % len(busy)]
                call("wrap_up", "acme", agent_id, cid, "done")
        elif kind == "abandon" and added:
            call("withdraw_contact", added[op[1] % len(added)], "abandoned")
        elif kind == "transfer" and added:
            call("transfer", "acme", added[op[1] % len(added)], op[2], "")
        elif kind == "time":
            clock.now += op[1]
            call("tick")
        check_state(engine, added)
    return engine, log


def check_offer(engine: eng.Engine, effect: eng.Effect) -> None:
    """No contact goes to an agent without its language unless a routing step allowed it."""
    if not isinstance(effect, eng.Offered):
        return
    agent = engine.agents[(effect.offer.tenant, effect.offer.agent_id)]
    c = effect.contact
    speaks = any(eng.language_matches(t, c.contact.language) for t in agent.languages)
    if not speaks:
        assert effect.offer.via_step_language
        assert any(
            eng.language_matches(t, extra) for t in agent.languages for extra in c.extra_languages
        )


def check_state(engine: eng.Engine, added: list[str]) -> None:
    offered_contacts: dict[str, int] = {}
    for offer_id, offer in engine.offers.items():
        agent = engine.agents[(offer.tenant, offer.agent_id)]
        assert agent.offer_id == offer_id  # the offer holds its agent
        offered_contacts[offer.contact_id] = offered_contacts.get(offer.contact_id, 0) + 1
    assert all(n == 1 for n in offered_contacts.values())  # never two offers at once
    for agent in engine.agents.values():
        # Not left reserved with no live offer.
        assert agent.offer_id is None or agent.offer_id in engine.offers
        # Never over capacity; a call is exclusive.
        for ch, cap in agent.capacity.items():
            assert agent.used(ch) <= cap
        if contact_pb2.CHANNEL_VOICE in agent.active.values():
            assert len(agent.active) == 1
    for cid in added:
        c = engine.contacts.get(cid)
        if c is None:
            assert cid in engine.history  # ended or abandoned
            continue
        assert c.status in (eng.Status.WAITING, eng.Status.OFFERED, eng.Status.ASSIGNED)
        if c.status == eng.Status.OFFERED:
            assert offered_contacts.get(cid) == 1
        elif c.status == eng.Status.ASSIGNED:
            assert cid in engine.agents[(c.tenant, c.agent_id)].active
        else:
            assert cid not in offered_contacts and c.req is not None
    waiting = sum(q.waiting for t in engine.tenants.values() for q in t.stats.values())
    assert waiting == sum(1 for c in engine.contacts.values() if c.status == eng.Status.WAITING)
    # The surge's customers queued: every contact not yet answered, callbacks aside; a queue is
    # in a level's period exactly while it is over the level's number.
    for tenant, state in engine.tenants.items():
        queued: dict[str, int] = {}
        for c in engine.contacts.values():
            if c.tenant == tenant and not c.callback and c.status != eng.Status.ASSIGNED:
                queued[c.queue] = queued.get(c.queue, 0) + 1
        assert {q: n for q, n in state.queued.items() if n} == queued
        for level in state.config.surge:
            over = {q for q, n in queued.items() if n > level.queued_over and level.watches(q)}
            assert {q for (lvl, q) in state.over_since if lvl == level.level} == over


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=20, max_size=100))
def test_invariants_hold_for_any_sequence(sequence: list[tuple[Any, ...]]) -> None:
    run(sequence)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=20, max_size=80))
def test_replaying_the_inputs_rebuilds_the_same_state(sequence: list[tuple[Any, ...]]) -> None:
    engine, log = run(sequence)
    clock = FakeClock(1000.0)
    replayed = eng.Engine(clock, cfg.load_text(CONFIG, "props.yaml"))
    for name, at, args in log:
        clock.now = at
        getattr(replayed, name)(*args)
    assert sorted(replayed.offers) == sorted(engine.offers)
    assert {k: (c.status, c.agent_id, c.queue) for k, c in replayed.contacts.items()} == {
        k: (c.status, c.agent_id, c.queue) for k, c in engine.contacts.items()
    }
    assert {k: (a.presence, sorted(a.active)) for k, a in replayed.agents.items()} == {
        k: (a.presence, sorted(a.active)) for k, a in engine.agents.items()
    }
