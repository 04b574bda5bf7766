"""Erasing a customer reaches what the fax channel quarantined from them, across services: the
case service names the customer's identities by sender key in CustomerErased (keyed with the
shared secret), and the fax channel, which indexed its quarantined fax by the same key, deletes
it, and its events on the bus, so that no stored message names her number; another caller's
quarantined fax stays (real case, router, chat and fax apps; NATS anonymous and with each service
as its own user)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from switchboard.case.adapters import orm
from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.fax.adapters.objects import Objects
from switchboard.fax.bootstrap import FaxApp
from switchboard.fax.intake import accept
from switchboard.fax.notifier import FaxNotifier
from switchboard.fax.settings import FaxSettings
from switchboard.testing.streams import stored_payloads
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2, fax_pb2

Platform = Any  # tests/e2e/conftest.py: the platform fixture

ANA, BO = "+82 2 1234 5678", "+82 31 765 4321"


async def quarantined(bus: Bus) -> set[str]:
    try:
        store = await bus.js.object_store("fax-quarantine")
        return {i.name for i in await store.list(ignore_deletes=True)}
    except NotFoundError:
        return set()


@pytest.mark.parametrize("nats_access", ["anonymous", "authorised"], indirect=True)
async def test_erasing_a_customer_deletes_the_fax_quarantined_from_their_number(
    platform: Platform, nats_access: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    users = request.getfixturevalue("secured_nats").env("fax") if nats_access != "anonymous" else {}
    own = {"FAX_GRPC_PORT": 0, "FAX_HTTP_PORT": 0, "SHUTDOWN_GRACE_SECONDS": 1.0}
    fax = FaxApp(FaxSettings(**(platform.common | users | own)))
    await fax.start()
    try:
        assert fax.bus is not None
        bus = fax.bus
        # Ana is a customer by her number (a voice call, say, here as the fax channel's contact).
        contact = contact_pb2.Contact(
            contact_id="fax-ana-earlier",
            tenant="demo",
            channel=contact_pb2.CHANNEL_FAX,
            identities=[
                contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_PHONE, value=ANA)
            ],
            subject="invoice",
        )
        await bus.publish(
            events_pb2.ContactCreated(
                meta=events.new_meta("demo", contact_pb2.CHANNEL_FAX, "fax", "fax-ana-earlier"),
                contact=contact,
            )
        )
        sessions = platform.case.sessions

        async def customer() -> str | None:
            async with sessions() as session:
                row = await session.get(orm.Contact, "fax-ana-earlier")
                return row.customer_id if row is not None else None

        customer_id = await eventually(customer, "the contact recorded by the case service")

        # Then a fax from each that cannot be read: both quarantined.
        objects, notifier = Objects(bus.js), FaxNotifier(bus)
        for who, number in (("ana", ANA), ("bo", BO)):
            origin = fax_pb2.FaxOrigin(caller_id_number=number)
            await accept(
                objects, notifier, "fax-documents", "demo", f"fax-{who}", b"%PDF-1.4 junk", origin
            )

        async def both_quarantined() -> bool:
            kept = await quarantined(bus)
            return {"demo/fax-ana/reason.txt", "demo/fax-bo/reason.txt"} <= kept

        await eventually(both_quarantined, "both faxes quarantined")

        token = auth.mint(platform.secret, "demo", "dpo-1", ["admin"])
        async with sb_grpc.channel(platform.case_target, token) as ch:
            await case_pb2_grpc.CaseServiceStub(ch).EraseCustomer(
                case_pb2.EraseCustomerRequest(customer_id=customer_id)
            )

        async def anas_gone() -> bool:
            return not any(n.startswith("demo/fax-ana/") for n in await quarantined(bus))

        await eventually(anas_gone, "the fax channel deleting Ana's quarantined fax")
        assert {"demo/fax-bo/original.pdf", "demo/fax-bo/reason.txt"} <= await quarantined(bus)

        async def number_on_the_bus(number: str) -> bool:
            stored = [m for s in ("EVENTS", "DEADLETTER") for m in await stored_payloads(bus, s)]
            return any(number.encode() in m for m in stored)

        # Nothing on the bus names her number any more: her contact's events (the case
        # service's stream erasure), her fax as received and its quarantine (the fax channel's).
        async def anas_number_gone() -> bool:
            return not await number_on_the_bus(ANA)

        await eventually(anas_number_gone, "Ana's number erased from the streams")
        assert await number_on_the_bus(BO)
    finally:
        await fax.stop()
    if nats_access != "anonymous":  # every step within the services' own grants
        assert request.getfixturevalue("secured_nats").violations() == []
