"""`switchboard dlq list | replay` against a real nats-server, through the command's main()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchboard.cli.commands import nats_status
from switchboard.cli.endpoints import Endpoints
from switchboard.core import events
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.core.errors import InvalidArgument
from switchboard.testing.waiting import until
from switchboard.v1 import contact_pb2, events_pb2

from .conftest import cli


def created(cid: str) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"),
        contact=contact_pb2.Contact(
            contact_id=cid, tenant="acme", channel=contact_pb2.CHANNEL_CHAT
        ),
    )


async def test_dlq_list_shows_parked_events_and_replay_puts_them_back(
    nats_url: str,
    bus: Bus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Without --nats, the command finds NATS where `switchboard run` wrote it.
    Endpoints(nats_url=nats_url).save(tmp_path / "endpoints.json")
    monkeypatch.setenv("SWITCHBOARD_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("NATS_URL", raising=False)

    consumer_bus = await Bus.connect(nats_url, source="case")
    fixed = False
    handled: list[str] = []

    async def handler(event: events_pb2.ContactCreated) -> None:
        if not fixed:
            raise InvalidArgument("contact.language", "is not a BCP 47 tag")
        handled.append(event.meta.event_id)

    consumer_bus.subscribe("case", events_pb2.ContactCreated, handler)
    await consumer_bus.start()
    first, second = created("c1"), created("c2")
    await bus.publish(first)
    await bus.publish(second)
    await until(lambda: consumer_bus.stats()["case"]["parked"] == 2, "both parked")
    capsys.readouterr()

    assert await cli("dlq", "list") == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "SEQ",
        "CONSUMER",
        "TYPE",
        "EVENT",
        "ID",
        "TENANT",
        "SUBJECT",
        "DELIVERIES",
        "REASON",
    ]
    assert [r.split()[:7] for r in rows] == [
        [seq, "case", "ContactCreated", e.meta.event_id, "acme", "contact.acme.chat.created", "1"]
        for seq, e in (("1", first), ("2", second))
    ]
    assert all(r.endswith("InvalidArgument: contact.language: is not a BCP 47 tag") for r in rows)

    assert await cli("dlq", "list", "--json", "--nats", nats_url) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["seq"], p["event_id"], p["consumer"], p["type"]) for p in listed] == [
        (1, first.meta.event_id, "case", "switchboard.v1.ContactCreated"),
        (2, second.meta.event_id, "case", "switchboard.v1.ContactCreated"),
    ]
    assert listed[0]["stream"] == "EVENTS" and listed[0]["deliveries"] == 1

    assert await cli("dlq", "list", "--consumer", "router", "--nats", nats_url) == 0
    assert capsys.readouterr().out.strip() == "no parked events"

    fixed = True  # e.g. the configuration the events needed is corrected
    assert await cli("dlq", "replay", "--seq", "1", "--nats", nats_url) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"replayed 1: ContactCreated {first.meta.event_id} -> EVENTS seq ")
    await until(lambda: handled == [first.meta.event_id], "the replayed event handled")

    assert await cli("dlq", "replay", "--seq", "1", "--nats", nats_url) == 1
    assert capsys.readouterr().out.strip() == "not replayed 1: no such parked event"

    assert await cli("dlq", "replay", "--all", "--consumer", "case", "--nats", nats_url) == 0
    assert capsys.readouterr().out.startswith("replayed 2: ")
    await until(lambda: len(handled) == 2, "the other one handled")
    assert await cli("dlq", "list", "--nats", nats_url) == 0
    assert capsys.readouterr().out.strip() == "no parked events"
    await consumer_bus.drain()


async def test_status_reaches_nats_through_a_comma_separated_list_of_servers(
    nats_url: str,
) -> None:
    """NATS_URL may name a cluster's servers; the first may be down."""
    ok, detail = await nats_status(f"nats://127.0.0.1:{free_port()}, {nats_url}")
    assert ok, detail
