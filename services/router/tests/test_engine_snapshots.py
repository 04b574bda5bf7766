"""The engine as a snapshot keeps it: pickled and loaded, it goes on to make the same decisions,
with the same ids, as the engine that was pickled — also when the snapshot was written by a router
from before the engine's records had slots."""

from __future__ import annotations

import pathlib
import pickle
from typing import Any

from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.router.handlers import ManualClock
from switchboard.v1 import contact_pb2

from .engine_contacts import contact

# Written by `pickle.dumps(busy_engine(), protocol=pickle.HIGHEST_PROTOCOL)` with the engine of
# commit 84153a9, whose records had no slots and kept each contact's parsed protobuf.
BEFORE_SLOTS = pathlib.Path(__file__).parent / "fixtures" / "engine_snapshot_before_slots.pickle"
# `busy_engine()` pickled by the router whose contacts kept their whole message, their assignment
# fields and a traceparent string, and whose buckets' entries held each contact's deadline.
BEFORE_COMPACT = (
    pathlib.Path(__file__).parent / "fixtures" / "engine_snapshot_before_compact_contacts.pickle"
)

CONFIG = (pathlib.Path(__file__).parent / "fixtures" / "engine_features.yaml").read_text()

# What `what_happens_next` returned for the engine of commit 84153a9.
EXPECTED: list[tuple[Any, ...]] = [
    ("withdrawn", "c2", "ko-2", "accept timeout"),
    ("offered", "c6", "ko-2", "of-0-00000005-c6", ""),
    ("withdrawn", "c4", "ko-1", "accept timeout"),
    ("offered", "c4", "ko-1", "of-0-00000006-c4", ""),
    ("assigned", "c4", "ko-1", 21.0),
    ("offered", "c2", "ko-1", "of-0-00000007-c2", ""),
    ("assigned", "c6", "ko-2", 21.0),
    ("step", "c3", "accept-level-2", "general"),
    ("withdrawn", "c2", "ko-1", "accept timeout"),
    ("offered", "c2", "ko-2", "of-0-00000008-c2", ""),
    ("offered", "c3", "zh-1", "of-0-00000009-c3", "accept-level-2"),
    ("assigned", "c2", "ko-2", 37.0),
    ("assigned", "c3", "zh-1", 36.0),
    ("offered", "c5", "zh-1", "of-0-0000000a-c5", ""),
    ("offered", "c7", "ko-1", "of-0-0000000b-c7", ""),
    ("withdrawn", "c5", "zh-1", "accept timeout"),
    ("withdrawn", "c7", "ko-1", "accept timeout"),
    ("offered", "c7", "ko-2", "of-0-0000000c-c7", ""),
    ("explain", "c1", "ended", "general", "ko-1", 0, [("ko-1", "accepted")], False, "ko"),
    (
        "explain",
        "c2",
        "assigned",
        "general",
        "ko-2",
        0,
        [("ko-1", "declined"), ("ko-2", "timed_out"), ("ko-1", "timed_out"), ("ko-2", "accepted")],
        False,
        "ko",
    ),
    ("explain", "c3", "assigned", "general", "zh-1", 1, [("zh-1", "accepted")], False, "zh"),
    (
        "explain",
        "c4",
        "assigned",
        "general",
        "ko-1",
        0,
        [("ko-1", "timed_out"), ("ko-1", "accepted")],
        True,
        "ko",
    ),
    ("explain", "c5", "waiting", "english", "", 0, [("zh-1", "timed_out")], False, "en"),
    ("explain", "c6", "assigned", "general", "ko-2", 0, [("ko-2", "accepted")], False, "ko"),
    (
        "explain",
        "c7",
        "offered",
        "general",
        "",
        0,
        [("ko-1", "timed_out"), ("ko-2", "offered")],
        False,
        "ko",
    ),
    ("stats", "general", 0, 1, 4, 5, 0, 100.0),  # its offered contact still waits
    ("stats", "english", 1, 0, 0, 0, 0, 136.0),
    ("position", 1, 1, 20.0),
]


def busy_engine() -> eng.Engine:
    """Contacts in every state: ended, assigned, offered after a decline, waiting (one in an
    unknown queue, one a callback), and an agent in wrap-up."""
    clock = ManualClock(1000.0)
    engine = eng.Engine(clock, cfg.load_text(CONFIG, "test.yaml"))
    for agent_id, ko, billing in (("ko-1", 5, 4), ("ko-2", 4, 3)):
        engine.sign_in("acme", agent_id, "", {"ko": ko}, {"billing": billing})
        engine.set_connected("acme", agent_id, True)
        clock.now += 1
    engine.add_contact(contact("c1", skills=("billing",), phone="+8210"))
    offer_id = engine.agent("acme", "ko-1").offer_id
    assert offer_id is not None
    engine.accept("acme", "ko-1", offer_id)
    clock.now += 1
    [offered] = [
        e
        for e in engine.add_contact(contact("c2", skills=("billing",)))
        if isinstance(e, eng.Offered)
    ]
    engine.decline("acme", offered.offer.agent_id, offered.offer.offer_id, "busy")
    clock.now += 1
    engine.add_contact(contact("c3", language="zh"))
    engine.add_contact(contact("c4", skills=("billing",), callback=True, priority=2))
    engine.add_contact(contact("c5", queue="english", language="en"))
    engine.add_contact(contact("c6", queue="nosuch"))
    clock.now += 1
    engine.wrap_up("acme", "ko-1", "c1", "done")
    return engine


def what_happens_next(engine: eng.Engine) -> list[tuple[Any, ...]]:
    """Steps, offer timeouts, accepts, a new agent, a returning customer and a redelivery, then
    the explanations and statistics: what the engine decided, as plain values."""
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    out: list[tuple[Any, ...]] = []

    def note(effects: list[eng.Effect]) -> None:
        for e in effects:
            if isinstance(e, eng.Offered):
                c, o = e.contact, e.offer
                out.append(("offered", c.contact_id, o.agent_id, o.offer_id, o.step))
            elif isinstance(e, eng.Assigned):
                out.append(("assigned", e.contact.contact_id, e.agent.agent_id, e.waited))
            elif isinstance(e, eng.StepApplied):
                out.append(("step", e.contact.contact_id, e.step.name, e.contact.queue))
            elif isinstance(e, eng.OfferWithdrawn):
                out.append(("withdrawn", e.offer.contact_id, e.offer.agent_id, e.reason))

    def accept_all() -> None:
        for (tenant, agent_id), agent in sorted(engine.agents.items()):
            if agent.offer_id:
                note(engine.accept(tenant, agent_id, agent.offer_id))

    clock.now += 20
    note(engine.tick())
    accept_all()
    clock.now += 15
    note(engine.tick())
    engine.sign_in("acme", "zh-1", "", {"zh": 5, "en": 5}, {"billing": 5})
    note(engine.set_connected("acme", "zh-1", True))
    accept_all()
    note(engine.add_contact(contact("c7", skills=("billing",), phone="+8210")))
    note(engine.add_contact(contact("c4", skills=("billing",), callback=True, priority=2)))
    clock.now += 100
    note(engine.tick())
    for cid in ("c1", "c2", "c3", "c4", "c5", "c6", "c7"):
        c, state, _ = engine.explain("acme", cid)
        attempts = [(a.agent_id, a.outcome) for a in c.decision.attempts]
        message = c.contact
        out.append(
            (
                "explain",
                cid,
                state,
                c.queue,
                c.agent_id,
                len(c.decision.steps),
                attempts,
                message.callback,
                message.language,
            )
        )
    for queue in ("general", "english"):
        qs, longest = engine.queue_snapshot("acme", queue)
        out.append(
            (
                "stats",
                queue,
                qs.waiting,
                qs.offered,
                qs.assigned,
                qs.answered,
                qs.abandoned,
                longest,
            )
        )
    _, position, waiting, estimate = engine.position("acme", "c5")
    out.append(("position", position, waiting, estimate))
    return out


def test_a_pickled_engine_decides_as_the_one_pickled() -> None:
    engine = busy_engine()
    loaded = pickle.loads(pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL))
    assert what_happens_next(loaded) == EXPECTED
    assert what_happens_next(engine) == EXPECTED


def test_a_snapshot_from_before_slots_loads_and_decides_the_same() -> None:
    loaded = pickle.loads(BEFORE_SLOTS.read_bytes())
    waiting = loaded.contacts["c3"]
    assert (waiting.contact_id, waiting.tenant, waiting.language) == ("c3", "acme", "zh")
    assert loaded.contacts["c2"].declined_by  # its decline survived
    assert what_happens_next(loaded) == EXPECTED


def test_a_snapshot_from_before_compact_contacts_loads_and_decides_the_same() -> None:
    loaded = pickle.loads(BEFORE_COMPACT.read_bytes())
    waiting = loaded.contacts["c3"]
    assert waiting.contact.contact_id == "c3" and waiting.contact.language == "zh"
    assert waiting.traceparent == f"00-{waiting.seq:032x}-{waiting.seq:016x}-01"
    assert isinstance(waiting.trace, bytes)  # packed as it loaded
    offered = loaded.contacts["c2"]
    assert offered.served is None and offered.agent_id == "" and offered.declined_by
    assert what_happens_next(loaded) == EXPECTED


def test_a_snapshot_keeps_no_personal_data_of_ended_contacts_nor_clear_identities() -> None:
    clock = ManualClock(1000.0)
    engine = eng.Engine(clock, cfg.load_text(CONFIG, "test.yaml"))
    engine.use_sticky_key(b"k" * 32)
    for agent_id in ("ko-1", "ko-2"):
        engine.sign_in("acme", agent_id, "", {"ko": 5}, {"billing": 5})
        engine.set_connected("acme", agent_id, True)
        clock.now += 1
    ended = contact("c1", phone="+821012345678")
    ended.identities.add(kind=contact_pb2.IDENTITY_KIND_EMAIL, value="kim@example.com")
    ended.customer_name, ended.subject = "Kim Minji", "my parcel"
    ended.content.add(content_type="text/plain", text="my parcel never came")
    engine.add_contact(ended)
    offer_id = engine.agent("acme", "ko-1").offer_id
    assert offer_id is not None
    [assigned] = [e for e in engine.accept("acme", "ko-1", offer_id) if isinstance(e, eng.Assigned)]
    clock.now += 30
    engine.wrap_up("acme", "ko-1", "c1", "done")
    # Ended in the same engine pass as the accept: the agent's reply still shows who it was.
    assert contact_pb2.Contact.FromString(assigned.message) == ended
    abandoned = contact("c2", language="ja", phone="+819000000000")
    abandoned.content.add(content_type="text/plain", text="hello from osaka")
    engine.add_contact(abandoned)
    engine.withdraw_contact("c2", "abandoned")
    waiting = contact("c3", language="ja", phone="+819011112222")
    engine.add_contact(waiting)

    data = pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL)
    for personal in (
        b"+821012345678",
        b"kim@example.com",
        b"Kim Minji",
        b"my parcel",
        b"+819000000000",
        b"hello from osaka",
    ):
        assert personal not in data
    assert b"+819011112222" in data  # a waiting contact keeps what its offer shows the agent
    assert b"k" * 32 not in data  # the sticky key is kept apart

    loaded = pickle.loads(data)
    loaded.use_sticky_key(b"k" * 32)
    c, state, _ = loaded.explain("acme", "c1")  # explanations and statistics still work
    assert (state, c.agent_id, [a.outcome for a in c.decision.attempts]) == (
        "ended",
        "ko-1",
        ["accepted"],
    )
    assert (c.contact.language, c.contact.queue, c.contact.contact_id) == ("ko", "general", "c1")
    assert loaded.explain("acme", "c2")[1] == "abandoned"
    qs, _ = loaded.queue_snapshot("acme", "general")
    assert (qs.answered, qs.abandoned) == (1, 1)
    assert loaded.add_contact(contact("c1")) == []  # a re-delivery is still a no-op
    # ko-2 has been idle longer; the returning customer goes back to ko-1 all the same.
    clock = loaded.clock
    assert isinstance(clock, ManualClock)
    clock.now += 60
    loaded.tick()  # ko-1's wrap-up ends
    [offered] = [
        e
        for e in loaded.add_contact(contact("c4", phone="+821012345678"))
        if isinstance(e, eng.Offered)
    ]
    assert offered.offer.agent_id == "ko-1"
    assert loaded.explain("acme", "c4")[0].decision.attempts[0].candidates[0][3]  # sticky


def test_a_snapshot_from_before_keyed_hashes_keeps_its_customers_agents() -> None:
    """Written when the sticky map held identity values in clear and history whole contacts:
    loaded, the values become keyed hashes and history loses the personal data, and the
    returning customer still goes to the same agent."""
    loaded = pickle.loads(BEFORE_SLOTS.read_bytes())
    assert not loaded.history["c1"][0].contact.identities
    loaded.use_sticky_key(b"group key")
    assert b"+8210" not in pickle.dumps(loaded)  # c1 ended: its sticky entry held it last
    [key] = list(loaded.tenants["acme"].sticky)
    assert key == loaded._sticky_id(contact_pb2.IDENTITY_KIND_PHONE, "+8210")
    assert loaded._sticky_agent("acme", contact("x", phone="+8210").identities) == "ko-1"
    assert what_happens_next(loaded) == EXPECTED


def test_a_snapshot_whose_buckets_hold_deadlines_is_filed_again_on_load() -> None:
    """Buckets used to hold each contact's deadline (queued time + threshold) where they now hold
    its queued time: an older snapshot's entries would otherwise rank after every newer one."""
    clock = ManualClock(1000.0)
    engine = eng.Engine(clock, cfg.load_text(CONFIG, "test.yaml"))
    engine.add_contact(contact("first", "ko"))
    clock.now += 5
    for heap in engine.buckets.values():  # as the older router filed it
        threshold = engine.tenant("acme").config.queue("general").sl_threshold
        heap[:] = [(p, at + threshold, seq, cid, v) for p, at, seq, cid, v in heap]
    state = engine.__getstate__()
    del state["bucket_layout"]
    loaded = eng.Engine.__new__(eng.Engine)
    loaded.__setstate__(pickle.loads(pickle.dumps(state)))
    loaded.add_contact(contact("second", "ko"))
    _, effects = loaded.sign_in("acme", "ko-1", "ko-1", {"ko": 5}, {})
    effects += loaded.set_connected("acme", "ko-1", True)
    [offered] = [e for e in effects if isinstance(e, eng.Offered)]
    assert offered.contact.contact_id == "first"
