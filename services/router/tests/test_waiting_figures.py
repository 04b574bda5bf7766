"""The live waiting figures the wallboard shows: a contact offered to an agent who has not
accepted yet is still waiting, in the count (`waiting` + `offered`) and in the longest wait."""

from __future__ import annotations

from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as model
from switchboard.testing.fakes import FakeClock
from switchboard.v1 import contact_pb2


def test_an_offered_contact_keeps_its_wait_until_accepted() -> None:
    clock: FakeClock[float] = FakeClock(1000.0)
    engine = model.Engine(clock, cfg.load_text("defaults: {sticky_ttl: 0s}\n", "t.yaml"))
    contact = contact_pb2.Contact(
        contact_id="c1", tenant="acme", channel=contact_pb2.CHANNEL_CHAT, language="ko"
    )
    engine.add_contact(contact)
    [queue] = engine.queues_of("acme")
    clock.now += 30
    qs, longest = engine.queue_snapshot("acme", queue)
    assert (qs.waiting, qs.offered, longest) == (1, 0, 30)

    engine.sign_in("acme", "a1", "a1", {"ko": 5}, {})
    [offered] = [
        e for e in engine.set_connected("acme", "a1", True) if isinstance(e, model.Offered)
    ]
    clock.now += 5
    qs, longest = engine.queue_snapshot("acme", queue)
    assert (qs.waiting, qs.offered, longest) == (0, 1, 35)

    # Declined: queued again, with its wait from its first arrival.
    engine.decline("acme", "a1", offered.offer.offer_id, "busy")
    engine.set_presence("acme", "a1", model.Presence.BREAK, "lunch")
    clock.now += 5
    qs, longest = engine.queue_snapshot("acme", queue)
    assert (qs.waiting, qs.offered, longest) == (1, 0, 40)
    assert len(qs.oldest) == 1

    engine.set_presence("acme", "a1", model.Presence.AVAILABLE, "")
    [again] = [o for o in engine.offers.values() if o.contact_id == "c1"]
    engine.accept("acme", "a1", again.offer_id)
    qs, longest = engine.queue_snapshot("acme", queue)
    assert (qs.waiting, qs.offered, longest) == (0, 0, 0)
