"""`switchboard customer erase` against the case service over real gRPC, a real database and a
real nats-server: the customer's data reads as erased, their events are gone from the stream (and
from the server's store files) but for the CustomerErased that tells the channels, and
`switchboard case verify` still finds every chain intact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import crypto, orm
from switchboard.case.bootstrap import CaseApp
from switchboard.case.views import CaseViews
from switchboard.cli import case, customer
from switchboard.cli.__main__ import parser
from switchboard.cli.endpoints import Endpoints
from switchboard.core import events, stream_erasure
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.streams import published
from switchboard.v1 import case_events_pb2, contact_pb2, events_pb2

EMAIL = contact_pb2.IDENTITY_KIND_EMAIL


def created(contact_id: str, name: str, email: str) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_EMAIL, "test"),
        contact=contact_pb2.Contact(
            contact_id=contact_id,
            tenant="acme",
            channel=contact_pb2.CHANNEL_EMAIL,
            identities=[contact_pb2.CustomerIdentity(kind=EMAIL, value=email)],
            customer_name=name,
            subject="refund",
            content=[contact_pb2.ContentPart(content_type="text/plain", text=f"{name} here")],
        ),
    )


async def case_of(sessions: async_sessionmaker[AsyncSession], contact_id: str) -> str:
    async with sessions() as session:
        row = await session.get(orm.Contact, contact_id)
        assert row is not None
        return row.case_id


async def contacts_on_the_stream(bus: Bus) -> set[str]:
    """The contacts the events on the stream belong to (events naming none left out)."""
    found = set()
    for seq in range(1, (await bus.js.stream_info("EVENTS")).state.last_seq + 1):
        try:
            msg = await bus.js.get_msg("EVENTS", seq)
        except Exception:  # deleted
            continue
        spec = events.spec_by_name((msg.headers or {}).get(events.TYPE_HEADER, ""))
        if spec is not None:
            found.add(stream_erasure.contact_of(spec.type.FromString(msg.data or b"")))
    return found - {""}


def stored(server: NatsServer) -> bytes:
    return b"".join(p.read_bytes() for p in server.store_dir.rglob("*") if p.is_file())


async def test_switchboard_customer_erase(
    case_service: CaseApp,
    nats_server: NatsServer,
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case_secret: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The email channel's contacts, on the bus: the case service records them from there.
    bus = await Bus.connect(nats_server.url, source="email-ingest")
    await bus.publish(created("m-1", "Ana", "ana@example.com"))
    await bus.publish(created("m-2", "Bo", "bo@example.com"))
    views = CaseViews(sessions)
    for _ in range(200):
        async with sessions() as session:
            if await session.get(orm.Contact, "m-2") is not None:
                break
        await asyncio.sleep(0.05)
    [ana, bo] = [await case_of(sessions, c) for c in ("m-1", "m-2")]
    ana_id = (await views.get_case("acme", ana)).customer.customer_id
    Endpoints(nats_url="nats://unused", grpc={"case": f"127.0.0.1:{case_service.grpc_port}"}).save(
        tmp_path / "endpoints.json"
    )
    monkeypatch.setenv("SWITCHBOARD_AUTH_SECRET", case_secret)
    before = await views.get_case("acme", ana)
    assert before.customer.display_name == "Ana" and before.subject == "refund"

    argv = ["customer", "erase", "--tenant", "acme", "--customer-id", ana_id]
    assert await customer.run(tmp_path, parser().parse_args(argv)) == 0
    assert f"erased customer {ana_id} (acme): 1 data keys destroyed" in capsys.readouterr().out

    after = await views.get_case("acme", ana)
    assert after.customer.display_name == crypto.ERASED
    assert list(after.customer.identities) == []
    assert after.subject == crypto.ERASED
    assert {m.parts[0].text for c in after.contacts for m in c.messages} == {crypto.ERASED}
    other = await views.get_case("acme", bo)  # another customer's case is untouched
    assert other.customer.display_name == "Bo" and other.subject == "refund"
    # After the commit, the relay erases Ana's contact from the stream, overwriting it on disk.
    for _ in range(200):
        if "m-1" not in await contacts_on_the_stream(bus):
            break
        await asyncio.sleep(0.05)
    assert await contacts_on_the_stream(bus) == {"m-2"}
    # What tells the channels to purge their key-value buckets stays: ids, no personal data.
    [erased] = await published(bus, "case.acme.customer_erased", case_events_pb2.CustomerErased)
    assert erased.customer_id == ana_id and list(erased.contact_ids) == ["m-1"]
    await bus.drain()
    raw = stored(nats_server)
    assert b"bo@example.com" in raw and b"ana@example.com" not in raw

    verify = parser().parse_args(["case", "verify", "--database-url", database_url])
    assert await case.verify(tmp_path, verify) == 0
    assert "audit trail intact" in capsys.readouterr().out

    # Erasing a customer again names it and destroys nothing more; an unknown one is refused.
    assert await customer.run(tmp_path, parser().parse_args(argv)) == 0
    assert "0 data keys destroyed" in capsys.readouterr().out
    missing = parser().parse_args(["customer", "erase", "--tenant", "acme", "--customer-id", "x"])
    assert await customer.run(tmp_path, missing) == 1
    assert "NOT_FOUND" in capsys.readouterr().out
