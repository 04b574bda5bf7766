"""Issue 14: no engine call does work that grows with the waiting population. Counted, not
timed: the heap entries each call compares or checks stay few however many contacts wait, while
offers time out and steps re-file the contacts again and again."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.router.handlers import ManualClock
from switchboard.v1 import contact_pb2

CONFIG = """
tenants:
  acme:
    languages: [ko, en]
    accept_timeout: {chat: 5s}
    autopause_after: 0
    sticky_ttl: 0s
    queues:
      - name: general
        steps:
          - {name: relax, after: 10s, min_proficiency: 1}
          - {name: english-too, after: 20s, add_languages: [en]}
          - {name: overflow, after: 40s, overflow_to: english}
      - name: english
    surge:
      - level: 3
        raise: {queued_over: 3, for: 30s}
        clear: {idle_agents: 1, for: 15m}
        actions: [notify_supervisors]
"""

WAITING = 4000
PER_CALL = 100  # comparisons and entry checks one call may make (a few heap pushes and pops)


def test_work_per_call_stays_bounded_as_the_waiting_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock(1000.0)
    engine = eng.Engine(clock, cfg.load_text(CONFIG, "test.yaml"))
    for i in range(4):  # connected agents who let every offer time out
        engine.sign_in("acme", f"a{i}", "", {"ko": 5}, {})
        engine.set_connected("acme", f"a{i}", True)
    work = [0]
    compare = eng.Contact.__lt__
    live_entry = engine._live_contact_entry

    def counted_lt(self: eng.Contact, other: eng.Contact) -> bool:
        work[0] += 1
        return compare(self, other)

    def counted_live(*args: Any) -> bool:
        work[0] += 1
        return live_entry(*args)

    monkeypatch.setattr(eng.Contact, "__lt__", counted_lt)
    monkeypatch.setattr(engine, "_live_contact_entry", counted_live)
    most = 0
    for i in range(WAITING):
        clock.now += 0.02
        work[0] = 0
        engine.add_contact(
            contact_pb2.Contact(
                contact_id=f"c{i}",
                tenant="acme",
                channel=contact_pb2.CHANNEL_CHAT,
                language="ko",
                queue="general",
            )
        )
        engine.tick()
        most = max(most, work[0])
        if i % 500 == 0:
            engine.queue_snapshot("acme", "general")
    stats = engine.tenant("acme").stats
    waiting = sum(qs.waiting for qs in stats.values())
    assert waiting > WAITING - 10  # all but the few offered wait, in two queues
    assert most <= PER_CALL, f"one call compared or checked {most} heap entries"
    for qs in stats.values():  # stale entries are dropped as they come
        assert len(qs.oldest) <= 3 * qs.waiting + 100
    for req, heap in engine.buckets.items():
        assert len(heap) <= 3 * engine.bucket_size[req] + 100
