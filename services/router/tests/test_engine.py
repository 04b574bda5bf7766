"""The routing engine's decisions, with a controllable clock and no I/O."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound
from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as model
from switchboard.testing.fakes import FakeClock
from switchboard.v1 import contact_pb2

CONFIG = """
defaults:
  accept_timeout: {voice: 20s, chat: 20s, email: 20s, fax: 20s}
  sticky_ttl: 0s
"""


def contact(
    cid: str,
    language: str = "ko",
    skills: tuple[str, ...] = (),
    priority: int = 0,
    tenant: str = "acme",
    channel: int = contact_pb2.CHANNEL_CHAT,
) -> contact_pb2.Contact:
    return contact_pb2.Contact(
        contact_id=cid,
        tenant=tenant,
        channel=channel,  # type: ignore[arg-type]
        language=language,
        skills=list(skills),
        priority=priority,
    )


def online(
    engine: model.Engine,
    agent_id: str,
    languages: dict[str, int],
    skills: dict[str, int] | None = None,
    tenant: str = "acme",
    **kw: object,
) -> list[model.Effect]:
    _, effects = engine.sign_in(tenant, agent_id, agent_id, languages, skills or {}, **kw)  # type: ignore[arg-type]
    return effects + engine.set_connected(tenant, agent_id, True)


def offers(effects: list[model.Effect]) -> list[model.Offered]:
    return [e for e in effects if isinstance(e, model.Offered)]


@pytest.fixture
def clock() -> FakeClock[float]:
    return FakeClock(1000.0)


@pytest.fixture
def engine(clock: FakeClock[float]) -> model.Engine:
    return model.Engine(clock, cfg.load_text(CONFIG, "test.yaml"))


def test_korean_contact_goes_to_the_korean_speaker(
    engine: model.Engine, clock: FakeClock[float]
) -> None:
    online(engine, "zh-agent", {"zh": 5})
    clock.now += 10  # the Chinese speaker has been idle longer, and still must not get it
    online(engine, "ko-agent", {"ko": 4})
    effects = engine.add_contact(contact("c1", "ko-KR"))
    assert isinstance(effects[0], model.Queued)
    [offer] = offers(effects)
    assert offer.offer.agent_id == "ko-agent"


def test_no_agent_with_the_language_leaves_the_contact_waiting(engine: model.Engine) -> None:
    online(engine, "en-agent", {"en": 5})
    assert offers(engine.add_contact(contact("c1", "ja"))) == []
    assert engine.contacts["c1"].status == model.Status.WAITING
    [offer] = offers(online(engine, "ja-agent", {"ja": 3}))
    assert offer.contact.contact_id == "c1"


def test_best_proficiency_then_longest_idle(engine: model.Engine, clock: FakeClock[float]) -> None:
    online(engine, "weak", {"ko": 2})
    clock.now += 1
    online(engine, "strong-recent", {"ko": 5})
    clock.now += 1
    online(engine, "strong-newest", {"ko": 5})
    [offer] = offers(engine.add_contact(contact("c1")))
    assert offer.offer.agent_id == "strong-recent"


def test_skills_are_required(engine: model.Engine) -> None:
    online(engine, "generalist", {"ko": 5})
    online(engine, "billing", {"ko": 3}, {"billing": 4})
    [offer] = offers(engine.add_contact(contact("c1", skills=("billing",))))
    assert offer.offer.agent_id == "billing"


def test_decline_reoffers_to_the_next_and_never_twice_at_once(engine: model.Engine) -> None:
    online(engine, "a", {"ko": 5})
    online(engine, "b", {"ko": 4})
    [first] = offers(engine.add_contact(contact("c1")))
    assert first.offer.agent_id == "a"
    assert len(engine.offers) == 1
    [second] = offers(engine.decline("acme", "a", first.offer.offer_id, "busy"))
    assert second.offer.agent_id == "b"
    assert len(engine.offers) == 1
    with pytest.raises(FailedPrecondition):
        engine.accept("acme", "a", first.offer.offer_id)


def test_accept_timeout_reoffers_and_late_accept_fails(
    engine: model.Engine, clock: FakeClock[float]
) -> None:
    online(engine, "a", {"ko": 5})
    online(engine, "b", {"ko": 4})
    [first] = offers(engine.add_contact(contact("c1")))
    clock.now += 21
    with pytest.raises(FailedPrecondition, match="expired"):
        engine.accept("acme", "a", first.offer.offer_id)
    [second] = offers(engine.tick())
    assert second.offer.agent_id == "b"
    with pytest.raises(FailedPrecondition, match="accept timeout"):
        engine.accept("acme", "a", first.offer.offer_id)


def test_unknown_offer_and_agent_are_not_found(engine: model.Engine) -> None:
    online(engine, "a", {"ko": 5})
    with pytest.raises(NotFound):
        engine.accept("acme", "a", "nope")
    with pytest.raises(NotFound):
        engine.set_presence("acme", "ghost", model.Presence.AVAILABLE, "")


def test_another_tenants_agent_never_gets_the_contact(engine: model.Engine) -> None:
    online(engine, "other", {"ko": 5}, tenant="globex")
    assert offers(engine.add_contact(contact("c1"))) == []


def test_freed_agent_takes_the_most_urgent_then_oldest(
    engine: model.Engine, clock: FakeClock[float]
) -> None:
    engine.add_contact(contact("old"))
    clock.now += 1
    engine.add_contact(contact("urgent", priority=5))
    clock.now += 1
    engine.add_contact(contact("new"))
    [offer] = offers(online(engine, "a", {"ko": 3}))
    assert offer.contact.contact_id == "urgent"


def test_capacity_and_wrap_up(engine: model.Engine) -> None:
    online(engine, "a", {"ko": 3}, capacity={contact_pb2.CHANNEL_CHAT: 1})
    [offer] = offers(engine.add_contact(contact("c1")))
    engine.accept("acme", "a", offer.offer.offer_id)
    assert offers(engine.add_contact(contact("c2"))) == []  # full
    effects = engine.wrap_up("acme", "a", "c1", "solved")
    assert any(isinstance(e, model.Ended) for e in effects)
    [next_offer] = offers(effects)
    assert next_offer.contact.contact_id == "c2"
    with pytest.raises(FailedPrecondition):
        engine.wrap_up("acme", "a", "c1", "again")


def test_abandoned_contact_is_removed_at_once(engine: model.Engine) -> None:
    online(engine, "a", {"ko": 3})
    [offer] = offers(engine.add_contact(contact("c1")))
    effects = engine.withdraw_contact("c1", "abandoned")
    assert [type(e) for e in effects] == [model.OfferWithdrawn]
    assert "c1" not in engine.contacts
    assert engine.agents[("acme", "a")].offer_id is None
    assert offers(engine.add_contact(contact("c2")))[0].offer.agent_id == "a"
    assert offer.offer.offer_id not in engine.offers


def test_redelivered_contact_is_ignored(engine: model.Engine) -> None:
    assert engine.add_contact(contact("c1"))
    assert engine.add_contact(contact("c1")) == []


def test_break_withdraws_the_offer_and_available_resumes(engine: model.Engine) -> None:
    online(engine, "a", {"ko": 3})
    [offer] = offers(engine.add_contact(contact("c1")))
    _, effects = engine.set_presence("acme", "a", model.Presence.BREAK, "lunch")
    assert isinstance(effects[0], model.OfferWithdrawn)
    assert engine.contacts["c1"].status == model.Status.WAITING
    assert offer.offer.offer_id not in engine.offers
    # back from the break, the only agent who speaks Korean gets the contact again
    _, effects = engine.set_presence("acme", "a", model.Presence.AVAILABLE, "")
    assert offers(effects)[0].contact.contact_id == "c1"


def test_a_lone_agent_who_declines_is_not_offered_the_same_contact_in_that_step(
    engine: model.Engine,
) -> None:
    online(engine, "a", {"ko": 3})
    [offer] = offers(engine.add_contact(contact("c1")))
    assert offers(engine.decline("acme", "a", offer.offer.offer_id, "")) == []
    assert engine.contacts["c1"].status == model.Status.WAITING
    # a new contact comes first for the decliner; the declined one follows
    [nxt] = offers(engine.add_contact(contact("c2")))
    assert nxt.contact.contact_id == "c2"


def test_proficiency_out_of_range_names_the_field(engine: model.Engine) -> None:
    with pytest.raises(InvalidArgument, match="proficiency"):
        engine.sign_in("acme", "a", "A", {"ko": 9}, {})


def test_language_matching() -> None:
    assert model.language_matches("ko", "ko-KR")
    assert model.language_matches("zh-Hans", "zh")
    assert not model.language_matches("zh-Hans", "zh-Hant")
    assert not model.language_matches("ko", "ja")


def test_a_waiting_contact_costs_less_than_a_kilobyte(
    engine: model.Engine, clock: FakeClock[float]
) -> None:
    """Memory, not time: what the engine keeps for each contact waiting in a large backlog, its
    message and trace context included, as tracemalloc counts it."""
    for i, language in enumerate(("ko", "zh", "en", "ja")):
        online(engine, f"a{i}", {language: 5}, {"billing": 3})
        engine.set_presence("acme", f"a{i}", model.Presence.BREAK, "")
    count = 20_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            clock.now += 0.001
            message = contact(f"c{i}", ("ko", "zh", "en", "ja")[i % 4], (("billing",), ())[i % 2])
            message.queue = "general"
            engine.add_contact(message, traceparent=f"00-{i:032x}-{i:016x}-01")
        gc.collect()
        per_contact = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert engine.queue_snapshot("acme", "general")[0].waiting == count
    assert per_contact <= 1000, f"{per_contact:.0f} bytes per waiting contact"


def test_a_waiting_contact_as_the_channels_send_it_costs_less_than_a_kilobyte() -> None:
    """Memory, not time: a backlog of contacts shaped as the channels send them (a 32-hex id, the
    customer's identity, a thread id, a creation time, trace context) in the shipped
    configuration's queue, whose routing steps each keep a timer pending, as tracemalloc counts
    what the engine keeps for each."""
    clock = FakeClock(1_000_000.0)
    engine = model.Engine(clock, cfg.embedded_default())
    languages = ("ko", "zh", "en", "ja")
    for i, language in enumerate(languages):
        online(engine, f"a{i}", {language: 5}, {"billing": 3}, tenant="demo")
        engine.set_presence("demo", f"a{i}", model.Presence.BREAK, "")
    count = 20_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            clock.now += 0.001
            message = contact_pb2.Contact(
                contact_id=f"{i:032x}",
                tenant="demo",
                channel=contact_pb2.CHANNEL_CHAT,
                identities=[
                    contact_pb2.CustomerIdentity(
                        kind=contact_pb2.IDENTITY_KIND_EMAIL, value=f"customer{i}@example.com"
                    )
                ],
                language=languages[i % 4],
                skills=(["billing"], [])[i % 2],
                queue="general",
                conversation_id=f"{i + 1:032x}",
            )
            message.created_at.FromSeconds(1_700_000_000 + i)
            engine.add_contact(message, traceparent=f"00-{i:032x}-{i:016x}-01")
        gc.collect()
        per_contact = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert engine.queue_snapshot("demo", "general")[0].waiting == count
    assert len(engine.timers) >= count  # each waits for its queue's first routing step
    # Under a kilobyte, with an eighth of it to spare for what a contact may carry besides.
    assert per_contact < 896, f"{per_contact:.0f} bytes per waiting contact"


def test_a_contact_reads_back_as_the_channel_sent_it(
    engine: model.Engine, clock: FakeClock[float]
) -> None:
    """The engine keeps some fields beside the serialized message rather than in it; the
    message read back, offered and assigned is the one the channel sent, trace context too."""
    message = contact("c1", "ko-KR", ("billing", "account"), priority=2)
    message.identities.add(kind=contact_pb2.IDENTITY_KIND_PHONE, value="+821012345678")
    message.subject = "invoice"
    message.conversation_id = "thread-1"
    message.created_at.FromSeconds(1_700_000_000)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    engine.add_contact(message, traceparent=traceparent)
    engine.add_contact(contact("c2"), traceparent="not-w3c")
    held = engine.contacts["c1"]
    assert held.contact == message
    assert held.traceparent == traceparent
    assert engine.contacts["c2"].traceparent == "not-w3c"
    assert engine.contacts["c2"].contact == contact("c2")
    message.callback = True
    engine.add_contact(message)  # the customer asked to be called back instead
    assert held.callback and held.contact == message
    engine.add_contact(contact("c3", "en"))
    [offer] = offers(online(engine, "a", {"ko": 5}, {"billing": 3, "account": 3}))
    assert offer.contact.contact_id == "c1"
    [assigned] = [
        e for e in engine.accept("acme", "a", offer.offer.offer_id) if isinstance(e, model.Assigned)
    ]
    assert contact_pb2.Contact.FromString(assigned.message) == message
    assert held.agent_id == "a" and held.assigned_at == clock.now and held.served is not None
    assert engine.contacts["c3"].agent_id == "" and engine.contacts["c3"].served is None
