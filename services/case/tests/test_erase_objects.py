"""Erasing a customer reaches the payloads the channels keep in the JetStream object stores: the
raw mail and its attachment, the fax document with its pages, the chat upload. They are deleted
from a real nats-server, a deletion that fails is tried again until done, another customer's
payloads stay, and an object named after the erasure is deleted too (docs/security.md)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

import nats
import nats.js.errors
import pytest
from nats.js import JetStreamContext
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import object_erasure
from switchboard.case.adapters import orm
from switchboard.case.commands import CaseCommands
from switchboard.case.entrypoints.nats_consumer import handlers_by_type
from switchboard.case.handlers import CaseHandlers
from switchboard.case.object_erasure import ObjectEraser
from switchboard.case.records import CaseRecords
from switchboard.case.sla.engine import SlaEngine
from switchboard.case.sla.policy import parse
from switchboard.core import events, stores, stream_erasure
from switchboard.core.bus import Bus
from switchboard.core.errors import NotFound
from switchboard.v1 import contact_pb2, email_pb2, events_pb2, fax_pb2

TENANT = "acme"
EMAIL, FAX, CHAT = contact_pb2.CHANNEL_EMAIL, contact_pb2.CHANNEL_FAX, contact_pb2.CHANNEL_CHAT
ALICE_MAIL, ALICE_PHONE, ALICE_VISITOR = "alice@example.com", "+82212345678", "visitor-alice"
BOB_MAIL = "bob@example.com"
# Both attached the same file: the email channel stores one object for it (named by content).
SHARED = b"%PDF-1.4 the same brochure both customers forwarded"

Payload = tuple[str, str]  # (bucket, name)


@dataclass
class Clock:
    now: datetime = field(default_factory=orm.utc_now)

    def __call__(self) -> datetime:
        return self.now


class FailingOnce(stores.ObjectStores):
    """JetStream's object stores whose first deletion fails (the store away for a moment)."""

    failures = 1

    async def delete(self, bucket: str, name: str) -> bool:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("object store unavailable")
        return await super().delete(bucket, name)


@pytest.fixture
async def objects(nats_url: str) -> AsyncIterator[stores.ObjectStores]:
    nc = await nats.connect(nats_url)
    yield stores.ObjectStores(nc.jetstream())
    await nc.close()


async def put(
    objects: stores.ObjectStores, bucket: str, name: str, data: bytes, filename: str
) -> contact_pb2.AttachmentRef:
    """Store a payload as a channel does (before any event names it)."""
    await objects.put(bucket, name, data)
    return stores.attachment_ref(bucket, name, filename, "application/octet-stream", data)


def by_content(kind: str, data: bytes) -> str:
    """The email channel's name of an object: by its content."""
    return f"{TENANT}/{kind}/{hashlib.sha256(data).hexdigest()}"


def meta(channel: int) -> events_pb2.EventMeta:
    return events.new_meta(TENANT, channel, "test")  # type: ignore[no-any-return]


def contact(
    contact_id: str,
    channel: int,
    identities: list[tuple[int, str]],
    attachments: list[contact_pb2.AttachmentRef],
) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=meta(channel),
        contact=contact_pb2.Contact(
            contact_id=contact_id,
            tenant=TENANT,
            channel=channel,  # type: ignore[arg-type]
            identities=[contact_pb2.CustomerIdentity(kind=k, value=v) for k, v in identities],  # type: ignore[misc]
            subject="my order",
            content=[contact_pb2.ContentPart(content_type="text/plain", text="see attached")],
            attachments=attachments,
        ),
    )


async def a_mail(
    objects: stores.ObjectStores, contact_id: str, sender: str, attachment: bytes
) -> tuple[list[events_pb2.ContactCreated | email_pb2.EmailReceived], list[Payload]]:
    raw = f"From: {sender}\r\nSubject: my order\r\n\r\nsee attached {contact_id}".encode()
    raw_ref = await put(objects, "email", by_content("raw", raw), raw, "message.eml")
    att = await put(objects, "email", by_content("attachments", attachment), attachment, "a.pdf")
    received = email_pb2.EmailReceived(
        meta=meta(EMAIL), contact_id=contact_id, raw=raw_ref, attachments=[att]
    )
    created = contact(contact_id, EMAIL, [(contact_pb2.IDENTITY_KIND_EMAIL, sender)], [att])
    # The channel's EmailReceived before its ContactCreated: objects of a contact not known yet.
    return [received, created], [("email", raw_ref.object_name), ("email", att.object_name)]


async def a_fax(
    objects: stores.ObjectStores, fax_id: str
) -> tuple[list[events_pb2.ContactCreated | fax_pb2.FaxProcessed], list[Payload]]:
    prefix = f"{TENANT}/{fax_id}"
    original = await put(objects, "fax-documents", f"{prefix}/original.tif", b"II*\x00fax", "f.tif")
    page = await put(objects, "fax-documents", f"{prefix}/page-1.png", b"\x89PNG page", "p.png")
    thumb = await put(objects, "fax-documents", f"{prefix}/page-1-thumb.png", b"\x89PNG t", "t.png")
    created = contact(fax_id, FAX, [(contact_pb2.IDENTITY_KIND_PHONE, ALICE_PHONE)], [page])
    processed = fax_pb2.FaxProcessed(
        meta=meta(FAX),
        fax_id=fax_id,
        contact_id=fax_id,
        original=original,
        pages=[fax_pb2.FaxPage(number=1, image=page, thumbnail=thumb)],
    )
    return [created, processed], [("fax-documents", r.object_name) for r in (original, page, thumb)]


async def an_upload(
    objects: stores.ObjectStores, contact_id: str, file_id: str, data: bytes
) -> tuple[events_pb2.MessageAdded, Payload]:
    ref = await put(objects, "chat_files", f"{TENANT}/{file_id}", data, "photo.jpg")
    added = events_pb2.MessageAdded(
        meta=meta(CHAT),
        message=contact_pb2.Message(
            message_id=f"{contact_id}-{file_id}",
            contact_id=contact_id,
            author=contact_pb2.AUTHOR_CUSTOMER,
            attachments=[ref],
        ),
    )
    return added, ("chat_files", ref.object_name)


async def readable(objects: stores.ObjectStores, payloads: list[Payload]) -> list[Payload]:
    found = []
    for bucket, name in payloads:
        try:
            await objects.get(bucket, name)
        except NotFound:
            continue
        found.append((bucket, name))
    return found


async def customer_of(sessions: async_sessionmaker[AsyncSession], contact_id: str) -> str:
    async with sessions() as session:
        row = await session.get(orm.Contact, contact_id)
        assert row is not None and row.customer_id
        return row.customer_id


async def pending(sessions: async_sessionmaker[AsyncSession], what: str = "objects") -> int:
    """How many objects (or, with what="streams", contacts on the streams) wait for erasure."""
    on_streams = orm.ObjectErasure.bucket == object_erasure.STREAMS
    async with sessions() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(orm.ObjectErasure)
                .where(on_streams if what == "streams" else ~on_streams)
            )
            or 0
        )


async def test_erasure_deletes_every_stored_payload_of_the_customer_and_only_theirs(
    sessions: async_sessionmaker[AsyncSession], objects: stores.ObjectStores, nats_url: str
) -> None:
    clock = Clock()
    policies = parse({"default_phone_region": "KR"})
    records = CaseRecords(policies, SlaEngine(policies), clock)
    handlers = CaseHandlers(sessions, "case", clock, records)
    by_type = handlers_by_type(handlers)

    mail_events, alice = await a_mail(objects, "mail-alice", ALICE_MAIL, SHARED)
    fax_events, fax_payloads = await a_fax(objects, "fax-alice")
    alice += fax_payloads
    chat_created = contact(
        "chat-alice",
        CHAT,
        [
            (contact_pb2.IDENTITY_KIND_CHAT_VISITOR, ALICE_VISITOR),
            (contact_pb2.IDENTITY_KIND_EMAIL, ALICE_MAIL),  # the chat's pre-chat form
        ],
        [],
    )
    upload, upload_payload = await an_upload(objects, "chat-alice", "f1", b"\xff\xd8 alice photo")
    alice.append(upload_payload)
    bob_events, bob = await a_mail(objects, "mail-bob", BOB_MAIL, SHARED)
    bob_own, bob_upload = await a_mail(objects, "mail-bob-2", BOB_MAIL, b"bob's own invoice")
    bob += bob_upload

    # The consumer's batch path for the mail and the fax, one event at a time for the rest.
    batch = [*mail_events, *fax_events]
    async with handlers.batch(batch, isolate=False):
        for event in batch:
            await by_type[type(event)](event)
    for event in [chat_created, upload, *bob_events, *bob_own]:
        await by_type[type(event)](event)
    alice_id = await customer_of(sessions, "mail-alice")
    assert await customer_of(sessions, "chat-alice") == alice_id  # the email address
    assert await customer_of(sessions, "mail-bob") != alice_id
    everything = alice + bob
    assert await readable(objects, everything) == everything

    # An agent recognised the fax's sender: its customer (a phone number) merged into Alice.
    commands = CaseCommands(sessions, records, clock)
    fax_customer = await customer_of(sessions, "fax-alice")
    assert fax_customer != alice_id
    await commands.merge(TENANT, "agent-7", alice_id, fax_customer)
    assert await commands.erase(TENANT, "admin-1", alice_id) == (alice_id, 2)
    shared = ("email", by_content("attachments", SHARED))
    # Staged with the keys' destruction: all of Alice's, but the attachment Bob's mail names too.
    assert await pending(sessions) == len(alice) - 1

    # The first deletion fails; the others are done all the same.
    eraser = ObjectEraser(sessions, FailingOnce(objects.js), clock)
    assert await eraser.drain() == len(alice) - 2
    assert await pending(sessions) == 1
    assert len(await readable(objects, alice)) == 2  # the failed one, and the shared one
    assert await eraser.drain() == 0  # waiting out its back-off

    # A relay of another replica (or after a restart) finishes it once the back-off has passed.
    clock.now += object_erasure.backoff(1) + timedelta(seconds=1)
    assert await ObjectEraser(sessions, stores.ObjectStores(objects.js), clock).drain() == 1
    assert await pending(sessions) == 0
    assert await readable(objects, alice) == [shared]
    assert await readable(objects, bob) == bob

    # Fetching an erased payload is NotFound, the answer every download path gives.
    bucket, name = upload_payload
    with pytest.raises(NotFound):
        await objects.get(bucket, name)

    # The chat was still open: a file Alice uploaded as she was erased is deleted once named.
    late, late_payload = await an_upload(objects, "chat-alice", "f2", b"\xff\xd8 a late photo")
    await by_type[type(late)](late)
    assert await pending(sessions) == 1
    assert await eraser.drain() == 1
    assert await readable(objects, [late_payload]) == []

    # Erasing again is a no-op, and so is a deletion of what is gone already.
    assert await commands.erase(TENANT, "admin-1", alice_id) == (alice_id, 0)
    assert await pending(sessions) == 0
    assert await objects.delete(bucket, name) is False
    assert await readable(objects, bob) == bob


async def test_an_event_of_one_tenant_cannot_name_another_tenants_object(
    sessions: async_sessionmaker[AsyncSession], objects: stores.ObjectStores
) -> None:
    clock = Clock()
    policies = parse({"default_phone_region": "KR"})
    records = CaseRecords(policies, SlaEngine(policies), clock)
    handlers = CaseHandlers(sessions, "case", clock, records)
    other = await put(objects, "email", "globex/raw/abc", b"globex's mail", "message.eml")
    mail_events, alice = await a_mail(objects, "mail-alice", ALICE_MAIL, b"alice's file")
    received = mail_events[0]
    assert isinstance(received, email_pb2.EmailReceived)
    received.attachments.append(other)
    for event in mail_events:
        await handlers_by_type(handlers)[type(event)](event)
    commands = CaseCommands(sessions, records, clock)
    await commands.erase(TENANT, "admin-1", await customer_of(sessions, "mail-alice"))
    await ObjectEraser(sessions, objects, clock).drain()
    assert await readable(objects, alice) == []
    assert await objects.get("email", "globex/raw/abc") == b"globex's mail"


class Killed(stores.ObjectStores):
    """A relay whose process dies as it deletes (the task cancelled mid-way)."""

    async def delete(self, bucket: str, name: str) -> bool:
        raise asyncio.CancelledError


async def test_a_relay_killed_mid_deletion_leaves_the_deletion_to_the_next_one(
    sessions: async_sessionmaker[AsyncSession], objects: stores.ObjectStores
) -> None:
    clock = Clock()
    policies = parse({"default_phone_region": "KR"})
    records = CaseRecords(policies, SlaEngine(policies), clock)
    handlers = CaseHandlers(sessions, "case", clock, records)
    mail_events, alice = await a_mail(objects, "mail-alice", ALICE_MAIL, b"alice's file")
    for event in mail_events:
        await handlers_by_type(handlers)[type(event)](event)
    commands = CaseCommands(sessions, records, clock)
    await commands.erase(TENANT, "admin-1", await customer_of(sessions, "mail-alice"))
    with pytest.raises(asyncio.CancelledError):
        await ObjectEraser(sessions, Killed(objects.js), clock).drain()
    assert await pending(sessions) == 2
    eraser = ObjectEraser(sessions, stores.ObjectStores(objects.js), clock)
    assert await eraser.drain() == 1  # the other one; the claimed one is not due yet
    clock.now += object_erasure.CLAIM  # the dead relay's claim lapses
    assert await eraser.drain() == 1
    assert await pending(sessions) == 0
    assert await readable(objects, alice) == []


async def on_the_streams(js: JetStreamContext) -> set[str]:
    """The contacts that EVENTS' messages belong to."""
    found = set()
    last = (await js.stream_info("EVENTS")).state.last_seq
    for seq in range(1, last + 1):
        try:
            msg = await js.get_msg("EVENTS", seq)
        except nats.js.errors.NotFoundError:
            continue
        spec = events.spec_by_name((msg.headers or {}).get(events.TYPE_HEADER, ""))
        assert spec is not None
        event = spec.type.FromString(msg.data or b"")
        found.add(f"{event.meta.tenant}/{stream_erasure.contact_of(event)}")  # type: ignore[attr-defined]
    return found


async def test_erasure_reaches_the_customers_events_on_the_streams(
    sessions: async_sessionmaker[AsyncSession], objects: stores.ObjectStores, nats_url: str
) -> None:
    """The customer's contacts are erased from the streams too, after the commit, and a scan
    that fails is tried again after its back-off; another customer's events stay."""
    clock = Clock()
    policies = parse({"default_phone_region": "KR"})
    records = CaseRecords(policies, SlaEngine(policies), clock)
    handlers = CaseHandlers(sessions, "case", clock, records)
    bus = await Bus.connect(nats_url, source="test")
    try:
        alice_events, _ = await a_mail(objects, "mail-alice", ALICE_MAIL, b"alice's file")
        bob_events, _ = await a_mail(objects, "mail-bob", BOB_MAIL, b"bob's file")
        for event in [*alice_events, *bob_events]:
            await bus.publish(event)  # as the channel did
            await handlers_by_type(handlers)[type(event)](event)  # as the consumer does
        assert await on_the_streams(bus.js) == {f"{TENANT}/mail-alice", f"{TENANT}/mail-bob"}

        commands = CaseCommands(sessions, records, clock)
        await commands.erase(TENANT, "admin-1", await customer_of(sessions, "mail-alice"))
        assert await pending(sessions, "streams") == 1

        calls: list[tuple[str, list[str]]] = []

        async def failing(tenant: str, contact_ids: list[str]) -> int:
            calls.append((tenant, contact_ids))
            raise ConnectionError("NATS away")

        await ObjectEraser(sessions, objects, clock, failing).drain()
        assert calls == [(TENANT, ["mail-alice"])]
        assert await pending(sessions, "streams") == 1  # waits out its back-off
        assert f"{TENANT}/mail-alice" in await on_the_streams(bus.js)

        clock.now += object_erasure.backoff(1) + timedelta(seconds=1)
        eraser = ObjectEraser(
            sessions, objects, clock, partial(stream_erasure.erase_contacts, bus.js)
        )
        await eraser.drain()
        assert await pending(sessions, "streams") == 0
        assert await on_the_streams(bus.js) == {f"{TENANT}/mail-bob"}
        assert await eraser.drain_streams() == 0  # nothing more to do
    finally:
        await bus.drain()


async def test_a_call_recording_is_kept_with_the_case_and_erased_with_the_customer(
    sessions: async_sessionmaker[AsyncSession], objects: stores.ObjectStores
) -> None:
    """The voice gateway names a call's recording in a MessageAdded of the call (author SYSTEM,
    bucket `recordings`, `<tenant>/<contact>.wav`): it is on the case and goes with an erasure."""
    clock = Clock()
    policies = parse({"default_phone_region": "KR"})
    records = CaseRecords(policies, SlaEngine(policies), clock)
    handlers = CaseHandlers(sessions, "case", clock, records)
    by_type = handlers_by_type(handlers)
    voice = contact_pb2.CHANNEL_VOICE
    call = contact("call-alice", voice, [(contact_pb2.IDENTITY_KIND_PHONE, ALICE_PHONE)], [])
    sealed = b"SBREC1\n sealed audio"
    ref = await put(objects, "recordings", f"{TENANT}/call-alice.wav", sealed, "call-alice.wav")
    recording = events_pb2.MessageAdded(
        meta=meta(voice),
        message=contact_pb2.Message(
            message_id="call-alice:recording",
            contact_id="call-alice",
            author=contact_pb2.AUTHOR_SYSTEM,
            parts=[contact_pb2.ContentPart(content_type="text/plain", text="Call recording")],
            attachments=[ref],
        ),
    )
    for event in (call, recording):
        await by_type[type(event)](event)
    async with sessions() as session:
        kept = list(
            await session.execute(
                select(orm.ContactObject.bucket, orm.ContactObject.object_name).where(
                    orm.ContactObject.contact_id == "call-alice"
                )
            )
        )
    assert [tuple(row) for row in kept] == [("recordings", f"{TENANT}/call-alice.wav")]

    commands = CaseCommands(sessions, records, clock)
    await commands.erase(TENANT, "admin-1", await customer_of(sessions, "call-alice"))
    assert await ObjectEraser(sessions, objects, clock).drain() == 1
    assert await readable(objects, [("recordings", f"{TENANT}/call-alice.wav")]) == []
