"""The router's typed journal and its group commit, with fakes of the router's own interfaces (the
journal's append, the bus's publish):

- every journaled input round-trips through its protobuf command to the same engine call;
- a configuration is journaled as YAML (with the settings' accept timeouts) and parsed back equal;
  one that cannot be journaled faithfully is refused before the engine changes;
- entries that are not this format (garbage, a pickled entry of an older router, a newer
  version, an unknown command) are refused with an error naming the entry;
- a journal recorded by this format's first version (``fixtures/router_journal_v1.json``, kept
  as it was written) replays to the same decisions and state, whatever the engine's code has
  become since;
- inputs that arrive while an entry is being written are decided together and go into the next
  entry, in arrival order, each caller getting its own result.

Regenerate the fixture only when the format's version changes:
``python services/router/tests/test_journal_format.py`` (it writes a new file; keep the old).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import pickle
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from switchboard.core.errors import NotFound
from switchboard.router import commands, journal
from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.router.handlers import Router, collect_young_only, new_engine
from switchboard.router.notifier import RoutingNotifier
from switchboard.testing.fakes import FakePublisher
from switchboard.v1 import contact_pb2, events_pb2, router_journal_pb2

FIXTURE = Path(__file__).parent / "fixtures" / "router_journal_v1.json"

CONFIG = """
tenants:
  acme:
    languages: [ko, en]
    skills: [billing, technical]
    capacity: {chat: 2, voice: 1}
    accept_timeout: {chat: 30s, voice: 20s}
    autopause_after: 2
    break_reasons: [lunch]
    queues:
      - name: general
        steps:
          - {name: relax, after: 40s, min_proficiency: 1}
          - {name: overflow, after: 90s, overflow_to: english}
      - name: english
  globex:
    languages: [zh]
    queues:
      - name: general
defaults:
  queues:
    - name: general
"""


def contact(cid: str, tenant: str, language: str, channel: int = contact_pb2.CHANNEL_CHAT) -> Any:
    return contact_pb2.Contact(
        contact_id=cid,
        tenant=tenant,
        channel=channel,
        language=language,
        identities=[
            contact_pb2.CustomerIdentity(
                kind=contact_pb2.IDENTITY_KIND_CHAT_VISITOR, value=f"visitor-{cid}"
            )
        ],
        content=[contact_pb2.ContentPart(content_type="text/plain", text="안녕하세요")],
    )


class FakeJournal:
    """The journal's append: entries are kept as JetStream would store them; each write is
    acknowledged when the test says so (or at once)."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.connected = True
        self.last_seq = 0
        self.entries: list[bytes] = []
        self.writes: list[asyncio.Future[Any]] = []
        self.trimmed = 0  # the journal's entries up to here were purged (kept here for replay)
        self._wrote = asyncio.Event()

    async def written(self, count: int) -> None:
        """Wait until `count` entries have been sent."""
        while len(self.writes) < count:
            self._wrote.clear()
            await self._wrote.wait()

    async def trim(self, seq: int) -> None:
        self.trimmed = max(self.trimmed, seq)

    async def append(self, entry: list[router_journal_pb2.RouterCommand]) -> asyncio.Future[Any]:
        self.last_seq += 1
        self.entries.append(journal.encode(entry))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.hold:
            future.set_result(None)
        self.writes.append(future)
        self._wrote.set()
        return future


class Wall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def summary(engine: eng.Engine) -> dict[str, Any]:
    """What the router knows, in a form that does not depend on the engine's internals."""
    return {
        "contacts": {
            cid: [eng.STATUS_NAMES[c.status], c.agent_id, c.offer_id, c.queue]
            for cid, c in sorted(engine.contacts.items())
        },
        "ended": sorted(engine.history),
        "offers": sorted(
            [o.offer_id, o.agent_id, o.contact_id, o.expires_at] for o in engine.offers.values()
        ),
        "agents": {
            f"{a.tenant}/{a.agent_id}": [int(a.presence), sorted(a.active), a.connected]
            for a in sorted(engine.agents.values(), key=lambda a: (a.tenant, a.agent_id))
        },
    }


def replay(entries: list[bytes]) -> Router:
    router = Router(new_engine(), RoutingNotifier(FakePublisher()))
    for seq, data in enumerate(entries, 1):
        router.apply_entry(journal.decode(seq, data))
    return router


# ---- commands --------------------------------------------------------------------------------

CALLS: list[tuple[str, tuple[Any, ...]]] = [
    (
        "add_contact",
        (contact("c1", "acme", "ko"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ),
    ("withdraw_contact", ("c1", "abandoned")),
    ("channel_ended", ("c1",)),
    ("transfer", ("acme", "c1", "english", "")),
    ("set_hold", ("acme", "ko-1", "c1", True)),
    ("set_connected", ("acme", "ko-1", False)),
    ("accept", ("acme", "ko-1", "o-1-2")),
    ("decline", ("acme", "ko-1", "o-1-2", "busy")),
    ("wrap_up", ("acme", "ko-1", "c1", "resolved")),
    (
        "sign_in",
        (
            "acme",
            "ko-1",
            "Kim",
            {"ko": 5, "en": 2},
            {"billing": 3},
            {1: 1, 2: 2},
            eng.Presence.BREAK,
        ),
    ),
    ("sign_out", ("acme", "ko-1", "sup-1")),
    ("set_presence", ("acme", "ko-1", eng.Presence.BREAK, "lunch", False, "sup-1")),
    ("tick", ()),
    ("begin_term", (7,)),
    ("disconnect_all", ()),
]


@pytest.mark.parametrize(("name", "args"), CALLS, ids=[name for name, _ in CALLS])
def test_every_journaled_input_round_trips_to_the_same_call(
    name: str, args: tuple[Any, ...]
) -> None:
    command = commands.encode_command(name, 1234.5, args, ("o:x:y",))
    wire = router_journal_pb2.RouterCommand.FromString(command.SerializeToString())
    call = commands.decode_command(wire)
    assert (call.name, call.at, call.args, call.check) == (name, 1234.5, args, ("o:x:y",))


def test_an_input_leaving_out_arguments_the_engine_defaults_is_journaled_with_them() -> None:
    """`router.run("sign_out", tenant, agent)` calls the engine with its default `by`: the command
    records the call the engine made, and replays it the same; an argument the engine needs is
    refused by name before anything is journaled."""
    command = commands.encode_command("sign_out", 5.0, ("acme", "ko-1"))
    assert commands.decode_command(command).args == ("acme", "ko-1", "")
    command = commands.encode_command(
        "set_presence", 5.0, ("acme", "ko-1", eng.Presence.BREAK, "lunch")
    )
    assert commands.decode_command(command).args == (
        "acme",
        "ko-1",
        eng.Presence.BREAK,
        "lunch",
        False,
        "",
    )
    with pytest.raises(TypeError, match="missing offer_id"):
        commands.encode_command("accept", 5.0, ("acme", "ko-1"))


async def test_a_router_runs_an_input_without_its_defaulted_arguments() -> None:
    """Refused before today's fix ("zip() argument 2 is shorter than argument 1")."""
    fake = FakeJournal()
    router = Router(new_engine(), RoutingNotifier(FakePublisher()), fake, Wall(1000.0))  # type: ignore[arg-type]
    router.leader = True
    await router.run("sign_in", "acme", "ko-1", "Kim", {"ko": 5}, {})
    agent, _ = await router.run("sign_out", "acme", "ko-1")
    assert agent.agent_id == "ko-1"
    assert summary(replay(fake.entries).engine) == summary(router.engine)
    assert summary(router.engine)["agents"] == {"acme/ko-1": [int(eng.Presence.OFFLINE), [], False]}


def test_every_input_the_router_runs_can_be_journaled() -> None:
    names = {name for name, _ in CALLS} | {"apply_file_config", "apply_tenant_config"}
    assert all(commands.journaled(n) for n in names)
    assert not commands.journaled("explain")


def test_a_configuration_is_journaled_as_its_yaml_and_parsed_back_equal() -> None:
    config = cfg.load_text(CONFIG)
    timeouts = dict.fromkeys(cfg.CHANNELS.values(), 5.0)
    overridden = cfg.RouterConfig(
        {n: replace(t, accept_timeout=timeouts) for n, t in config.tenants.items()},
        replace(config.defaults or cfg.fallback_tenant(""), accept_timeout=timeouts),
    )
    for value in (config, overridden):
        command = commands.encode_command("apply_file_config", 1.0, (value,))
        assert commands.decode_command(command).args == (value,)
    tenant = cfg.load_tenant_text("acme", "languages: [ko]\nqueues:\n  - name: general\n")
    command = commands.encode_command("apply_tenant_config", 1.0, (tenant,))
    assert commands.decode_command(command).args == (tenant,)
    # With who applied it (over ApplyConfig), kept in the entry.
    command = commands.encode_command("apply_tenant_config", 1.0, (tenant, "admin-1"))
    assert commands.decode_command(command).args == (tenant, "admin-1")


async def test_a_configuration_the_journal_cannot_hold_is_refused_before_the_engine_changes() -> (
    None
):
    router = Router(new_engine(), RoutingNotifier(FakePublisher()), FakeJournal(), Wall(1000.0))  # type: ignore[arg-type]
    router.leader = True
    made_in_code = cfg.TenantConfig(tenant="acme", queues={"general": cfg.QueueConfig("general")})
    with pytest.raises(ValueError, match="only as it was loaded from YAML"):
        await router.run("apply_tenant_config", made_in_code)
    assert "acme" not in router.engine.config_versions


# ---- entries that are not this format ----------------------------------------------------------


def test_entries_of_another_format_are_refused_with_the_entry_named() -> None:
    legacy = pickle.dumps(("add_contact", 1.0, ("c1",), ()), protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(commands.JournalFormatError, match="journal entry 7 is not a JournalEntry"):
        journal.decode(7, legacy)
    with pytest.raises(commands.JournalFormatError, match="journal entry 8 is not a JournalEntry"):
        journal.decode(8, b"\xff\xff\xff")
    newer = router_journal_pb2.JournalEntry(
        version=2, commands=[commands.encode_command("tick", 1.0, ())]
    )
    with pytest.raises(commands.JournalFormatError, match="format version 2"):
        journal.decode(9, newer.SerializeToString())
    unknown = router_journal_pb2.JournalEntry(
        version=1, commands=[router_journal_pb2.RouterCommand(at=1.0)]
    )
    with pytest.raises(commands.JournalFormatError, match="journal entry 10: a command of a kind"):
        journal.decode(10, unknown.SerializeToString())


# ---- a journal written by the first version ----------------------------------------------------


async def record() -> tuple[list[bytes], dict[str, Any]]:
    """A day in a small centre, through the router's own input path, journaled."""
    wall = Wall(1_767_225_600.0)  # 2026-01-01T00:00:00Z
    fake = FakeJournal()
    router = Router(new_engine(), RoutingNotifier(FakePublisher()), fake, wall)  # type: ignore[arg-type]
    router.leader = True
    run = router.run

    async def at(seconds: float, name: str, *args: Any) -> Any:
        wall.now += seconds
        return await run(name, *args)

    await run("begin_term", 3)
    await run("disconnect_all")
    await run("apply_file_config", cfg.load_text(CONFIG))
    await at(
        1, "sign_in", "acme", "ko-1", "Kim", {"ko": 5}, {"billing": 4}, None, eng.Presence.AVAILABLE
    )
    await at(
        1,
        "sign_in",
        "acme",
        "ko-2",
        "Lee",
        {"ko": 3, "en": 4},
        {"technical": 3},
        {contact_pb2.CHANNEL_CHAT: 1},
        eng.Presence.AVAILABLE,
    )
    await at(
        1,
        "sign_in",
        "acme",
        "en-1",
        "Smith",
        {"en": 5},
        {"billing": 2, "technical": 5},
        None,
        eng.Presence.AVAILABLE,
    )
    await at(1, "sign_in", "globex", "zh-1", "Wang", {"zh": 5}, {}, None, eng.Presence.AVAILABLE)
    for agent in ("ko-1", "ko-2", "en-1"):
        await at(0.1, "set_connected", "acme", agent, True)
    await at(0.1, "set_connected", "globex", "zh-1", True)
    await at(1, "add_contact", contact("c1", "acme", "ko"), "")
    await at(1, "add_contact", contact("c2", "acme", "ko"), "")
    await at(1, "add_contact", contact("c3", "acme", "en"), "")
    await at(1, "add_contact", contact("g1", "globex", "zh"), "")
    await at(1, "add_contact", contact("c4", "acme", "ja"), "")  # nobody speaks it: it waits
    offers = {o.contact_id: o for o in router.engine.offers.values()}
    await at(2, "accept", "acme", offers["c1"].agent_id, offers["c1"].offer_id)
    await at(1, "decline", "acme", offers["c2"].agent_id, offers["c2"].offer_id, "busy")
    await at(1, "accept", "globex", "zh-1", offers["g1"].offer_id)
    await at(40, "tick")  # offers time out; steps relax
    offers = {o.contact_id: o for o in router.engine.offers.values()}
    for _, offer in sorted(offers.items()):
        await at(1, "accept", offer.tenant, offer.agent_id, offer.offer_id)
    await at(5, "set_hold", "acme", router.engine.contacts["c1"].agent_id, "c1", True)
    await at(5, "set_hold", "acme", router.engine.contacts["c1"].agent_id, "c1", False)
    await at(10, "wrap_up", "acme", router.engine.contacts["c1"].agent_id, "c1", "resolved")
    await at(1, "channel_ended", "g1")
    await at(1, "set_presence", "acme", "en-1", eng.Presence.BREAK, "lunch", False)
    await at(1, "add_contact", contact("c5", "acme", "ko"), "")
    await at(1, "transfer", "acme", "c4", "english", "")
    await at(1, "withdraw_contact", "c5", "abandoned")
    await at(
        1,
        "apply_tenant_config",
        cfg.load_tenant_text("globex", "languages: [zh, en]\nqueues:\n  - name: general\n"),
    )
    await at(100, "tick")
    await at(1, "sign_out", "globex", "zh-1", "")
    await router.settled()
    return fake.entries, summary(router.engine)


def test_a_journal_written_by_the_first_version_replays_to_the_same_decisions() -> None:
    fixture = json.loads(FIXTURE.read_text())
    entries = [base64.b64decode(e) for e in fixture["entries"]]
    router = replay(entries)
    assert router.divergences == 0
    assert json.loads(json.dumps(summary(router.engine))) == fixture["state"]
    # The fixture covers every kind of command the router journals.
    kinds = {
        c.WhichOneof("command")
        for e in entries
        for c in router_journal_pb2.JournalEntry.FromString(e).commands
    }
    assert kinds == set(
        f.name for f in router_journal_pb2.RouterCommand.DESCRIPTOR.oneofs_by_name["command"].fields
    )


async def test_the_recording_still_decides_what_the_fixture_recorded() -> None:
    """Today's engine, given the same inputs, decides the same: the fixture is not stale."""
    entries, state = await record()
    fixture = json.loads(FIXTURE.read_text())
    assert json.loads(json.dumps(state)) == fixture["state"]
    assert replay(entries).divergences == 0


# ---- group commit --------------------------------------------------------------------------------


async def test_inputs_arriving_while_an_entry_is_written_go_together_into_the_next() -> None:
    fake = FakeJournal(hold=True)
    bus = FakePublisher()
    router = Router(new_engine(), RoutingNotifier(bus), fake, Wall(1000.0))  # type: ignore[arg-type]
    router.leader = True
    first = asyncio.ensure_future(router.run("apply_file_config", cfg.load_text(CONFIG)))
    await fake.written(1)
    # Five contacts and one bad call arrive while the first entry is unacknowledged.
    later = [
        asyncio.ensure_future(router.run("add_contact", contact(f"c{i}", "acme", "ko"), ""))
        for i in range(5)
    ]
    bad = asyncio.ensure_future(router.run("accept", "acme", "nobody", "no-such-offer"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(fake.entries) == 1 and not first.done()
    fake.writes[0].set_result(None)
    await first
    await fake.written(2)
    assert not any(f.done() for f in later)  # not before their entry is acknowledged
    assert not [e for e in bus.events if e.DESCRIPTOR.name == "ContactQueued"]
    fake.writes[1].set_result(None)
    results = await asyncio.gather(*later)
    with pytest.raises(NotFound):
        await bad
    assert len(fake.entries) == 2
    second = journal.decode(2, fake.entries[1])
    assert [(c.name, c.args[0].contact_id) for c in second.calls] == [
        ("add_contact", f"c{i}") for i in range(5)
    ]
    assert all(isinstance(r, list) for r in results)
    queued = [e.contact_id for e in bus.events if e.DESCRIPTOR.name == "ContactQueued"]
    assert queued == [f"c{i}" for i in range(5)]  # published in decision order
    assert replay(fake.entries).divergences == 0


async def test_a_caller_that_gives_up_does_not_take_its_input_out_of_the_batch() -> None:
    fake = FakeJournal(hold=True)
    router = Router(new_engine(), RoutingNotifier(FakePublisher()), fake, Wall(1000.0))  # type: ignore[arg-type]
    router.leader = True
    first = asyncio.ensure_future(router.run("apply_file_config", cfg.load_text(CONFIG)))
    await fake.written(1)
    impatient = asyncio.ensure_future(router.run("add_contact", contact("c1", "acme", "ko"), ""))
    await asyncio.sleep(0)
    impatient.cancel()
    fake.writes[0].set_result(None)
    await first
    await fake.written(2)
    fake.writes[1].set_result(None)
    await router.settled()
    assert "c1" in router.engine.contacts
    assert [c.name for c in journal.decode(2, fake.entries[1]).calls] == ["add_contact"]


def _write_fixture() -> None:
    entries, state = asyncio.run(record())
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(
        json.dumps(
            {
                "format": f"switchboard.v1.JournalEntry version {journal.VERSION}",
                "entries": [base64.b64encode(e).decode() for e in entries],
                "state": state,
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )


if __name__ == "__main__":
    _write_fixture()


# ---- snapshots -------------------------------------------------------------------------------


class FakeSnapshots:
    def __init__(self) -> None:
        self.saved: list[tuple[bytes, int]] = []

    async def save(self, engine_state: bytes, seq: int) -> None:
        self.saved.append((engine_state, seq))


async def test_a_snapshot_holds_the_state_at_its_sequence_while_decisions_go_on(
    unfrozen: None,
) -> None:
    fake = FakeJournal()
    router = Router(new_engine(), RoutingNotifier(FakePublisher()), fake, Wall(1000.0))  # type: ignore[arg-type]
    router.leader = True
    await router.run("apply_file_config", cfg.load_text(CONFIG))
    for i in range(300):
        await router.run("add_contact", contact(f"before-{i}", "acme", "ko"), "")
    snapshots = FakeSnapshots()
    taking = asyncio.ensure_future(router.snapshot(snapshots))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the state is copied (the serialiser forked) under the lock
    during = [
        asyncio.ensure_future(router.run("add_contact", contact(f"during-{i}", "acme", "ko"), ""))
        for i in range(50)
    ]
    seq = await taking
    await asyncio.gather(*during)
    [(data, saved_seq)] = snapshots.saved
    assert saved_seq == seq == 301
    restored: eng.Engine = pickle.loads(data)
    assert sorted(restored.contacts) == sorted(f"before-{i}" for i in range(300))
    # The snapshot plus the entries after it is the leader's state.
    follower = Router(restored, RoutingNotifier(FakePublisher()))
    for n, entry in enumerate(fake.entries[seq:], seq + 1):
        follower.apply_entry(journal.decode(n, entry))
    assert summary(follower.engine) == summary(router.engine)
    assert follower.divergences == 0


class HeldBus(FakePublisher):
    """A bus whose acks wait for the test (each its own future) while `holding` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.acks: list[asyncio.Future[Any]] = []

    async def publish_async(self, event: Any, traceparent: str = "") -> asyncio.Future[Any]:
        if not self.holding:
            return await super().publish_async(event, traceparent)
        self.events.append(event)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(future)
        return future


@pytest.fixture
def unfrozen() -> Any:
    """The collector as it was: what a snapshot froze is unfrozen again after the test."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def leader_with_events_held(count: int) -> tuple[Router, FakeJournal, HeldBus]:
    fake, bus = FakeJournal(), HeldBus()
    router = Router(new_engine(), RoutingNotifier(bus), fake, Wall(1000.0))  # type: ignore[arg-type]
    router.leader = True
    await router.run("apply_file_config", cfg.load_text(CONFIG))
    for i in range(count):
        await router.run("add_contact", contact(f"before-{i}", "acme", "ko"), "")
    bus.holding = True  # the next decision's events wait for their acks
    return router, fake, bus


async def turns(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_decisions_go_on_while_a_snapshot_waits_for_earlier_events(unfrozen: None) -> None:
    """Under the lock a snapshot only reads its sequence and copies the state; waiting for the
    decisions up to that sequence to be acknowledged comes after, while later ones are decided."""
    router, fake, bus = await leader_with_events_held(100)
    held = asyncio.ensure_future(router.run("add_contact", contact("held", "acme", "ko"), ""))
    await fake.written(102)
    snapshots = FakeSnapshots()
    taking = asyncio.ensure_future(router.snapshot(snapshots))  # type: ignore[arg-type]
    await turns()
    later = asyncio.ensure_future(router.run("add_contact", contact("later", "acme", "ko"), ""))
    await turns()
    # Decided and journaled while the snapshot still waits for the acks of "held".
    assert "later" in router.engine.contacts
    assert len(fake.entries) == 103
    assert not taking.done() and not held.done()
    bus.holding = False
    for ack in bus.acks:
        ack.set_result(None)
    seq = await taking
    await asyncio.gather(held, later)
    [(data, saved_seq)] = snapshots.saved
    assert saved_seq == seq == 102
    restored: eng.Engine = pickle.loads(data)
    assert "held" in restored.contacts and "later" not in restored.contacts
    follower = Router(restored, RoutingNotifier(FakePublisher()))
    for n, entry in enumerate(fake.entries[seq:], seq + 1):
        follower.apply_entry(journal.decode(n, entry))
    assert summary(follower.engine) == summary(router.engine)
    assert follower.divergences == 0


async def test_a_snapshot_whose_earlier_events_fail_is_dropped(unfrozen: None) -> None:
    router, fake, bus = await leader_with_events_held(10)
    held = asyncio.ensure_future(router.run("add_contact", contact("held", "acme", "ko"), ""))
    await fake.written(12)
    snapshots = FakeSnapshots()
    taking = asyncio.ensure_future(router.snapshot(snapshots))  # type: ignore[arg-type]
    await turns()
    for ack in bus.acks:
        ack.set_exception(RuntimeError("no ack"))
    assert await taking is None
    assert snapshots.saved == []
    assert not router.leader  # the failed publication stepped it down
    assert router.entries_since_snapshot == 12  # still owed a snapshot
    with pytest.raises(Exception, match="try again"):
        await held


async def test_a_snapshot_takes_the_engine_out_of_the_collectors_generations(
    unfrozen: None,
) -> None:
    """A collection after the snapshot, in the leader or in the serialising child, does not walk
    (and write to) the engine's objects, which the child shares until they are written to."""
    router, _, bus = await leader_with_events_held(50)
    bus.holding = False
    snapshots = FakeSnapshots()
    assert await router.snapshot(snapshots) == 51  # type: ignore[arg-type]
    tracked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
    held = [c for c in router.engine.contacts.values() if gc.is_tracked(c)]
    assert len(held) == 50
    assert not [c for c in held if id(c) in tracked]
    restored: eng.Engine = pickle.loads(snapshots.saved[0][0])
    assert sorted(restored.contacts) == sorted(router.engine.contacts)


def test_after_collect_young_only_no_full_collection_runs(unfrozen: None) -> None:
    old = [[i] for i in range(1000)]
    collect_young_only()
    assert not [o for g in range(3) for o in gc.get_objects(g) if o is old[0]]
    generations: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        kept = [[i] for i in range(300_000)]  # enough to start full collections by default
    finally:
        gc.callbacks.remove(seen)
    assert len(kept) == 300_000
    assert 1 in generations  # young collections go on
    assert 2 not in generations


async def test_an_engine_replaced_at_recovery_is_freed_without_the_collector() -> None:
    """A step-down re-reads the journal into a new engine; the one it replaces, frozen out of the
    collector, must not be kept alive by cycles (agents and their groups)."""
    router = Router(new_engine(), RoutingNotifier(FakePublisher()))
    router.engine.apply_file_config(cfg.load_text(CONFIG))
    router.engine.sign_in("acme", "ko-1", "Kim", {"ko": 5}, {"billing": 3})
    agent = weakref.ref(router.engine.agents[("acme", "ko-1")])
    engine = weakref.ref(router.engine)
    gc.disable()
    try:
        router.reset(new_engine(), 0)
        assert engine() is None
        assert agent() is None
    finally:
        gc.enable()


async def test_a_durable_snapshot_trims_the_journal_and_stands_when_the_trim_fails(
    unfrozen: None,
) -> None:
    fake = FakeJournal()
    router = Router(new_engine(), RoutingNotifier(FakePublisher()), fake, Wall(1000.0))  # type: ignore[arg-type]
    router.leader = True
    await router.run("apply_file_config", cfg.load_text(CONFIG))
    await router.run("add_contact", contact("c1", "acme", "ko"), "")
    snapshots = FakeSnapshots()
    assert await router.snapshot(snapshots) == 2  # type: ignore[arg-type]
    assert fake.trimmed == 2

    async def refused(seq: int) -> None:
        raise RuntimeError("purge refused")

    fake.trim = refused  # type: ignore[method-assign]
    await router.run("add_contact", contact("c2", "acme", "ko"), "")
    assert await router.snapshot(snapshots) == 3  # type: ignore[arg-type]
    assert [seq for _, seq in snapshots.saved] == [2, 3]
    assert fake.trimmed == 2


class BatchingBus(FakePublisher):
    """A bus that sends a batch of events under one ack, as the Bus does
    (`publish_batch_async`); the ack waits until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()

    async def publish_async(self, event: Any, traceparent: str = "") -> asyncio.Future[Any]:
        raise AssertionError("a batching bus is given whole batches")

    async def publish_batch_async(self, batch: list[tuple[Any, str]]) -> asyncio.Future[Any]:
        self.batches.append([f"{type(e).__name__}:{e.meta.event_id}" for e, _ in batch])

        async def stored() -> list[bool]:
            await self.release.wait()
            return [await self._stored(event) for event, _ in batch]

        return asyncio.ensure_future(stored())


async def test_the_events_of_one_entry_go_out_as_one_batch_under_one_ack() -> None:
    """A bus that sends batches is given each journal entry's events at once, in decision
    order; the callers' results, and so the contact events' acks, wait for that batch's ack."""
    bus = BatchingBus()
    router = Router(new_engine(), RoutingNotifier(bus), FakeJournal(), Wall(1000.0))  # type: ignore[arg-type]
    router.leader = True
    bus.release.set()
    await router.run("apply_file_config", cfg.load_text(CONFIG))
    chat = contact_pb2.CHANNEL_CHAT
    await router.run(
        "sign_in", "acme", "ko-1", "Kim", {"ko": 5}, {}, {chat: 2}, eng.Presence.AVAILABLE
    )
    await router.run("set_connected", "acme", "ko-1", True)
    bus.release.clear()
    sent = len(bus.batches)
    first = asyncio.ensure_future(router.run("add_contact", contact("c1", "acme", "ko"), ""))
    await turns()
    second = asyncio.ensure_future(router.run("add_contact", contact("c2", "acme", "ko"), ""))
    third = asyncio.ensure_future(router.run("add_contact", contact("c3", "acme", "ko"), ""))
    await turns()
    assert not (first.done() or second.done() or third.done())
    new = bus.batches[sent:]
    assert new == [
        [
            "ContactQueued:c1:queued",
            f"ContactOffered:{router.engine.contacts['c1'].offer_id}:offered",
        ],
        ["ContactQueued:c2:queued"],  # ko-1 holds an offer: c2 and c3 wait
        ["ContactQueued:c3:queued"],
    ]
    assert not [e for e in bus.of(events_pb2.ContactQueued) if e.contact_id in ("c1", "c2", "c3")]
    bus.release.set()
    await asyncio.wait_for(asyncio.gather(first, second, third), 5)
    stored = [e.meta.event_id for e in bus.events]
    assert stored[-4:] == [n.split(":", 1)[1] for batch in new for n in batch]
