"""Erasing contacts from the shared streams against a real nats-server: every event, command and
parked event of the erased contacts is gone (also from the store's files), everything else is
intact, and a second run deletes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError

from switchboard.core import deadletter, events, stores, stream_erasure
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.core.errors import InvalidArgument
from switchboard.testing.contacts import contact_created
from switchboard.v1 import case_events_pb2, contact_pb2, email_pb2, events_pb2, fax_pb2

CHAT = contact_pb2.CHANNEL_CHAT
EMAIL = contact_pb2.CHANNEL_EMAIL
FAX = contact_pb2.CHANNEL_FAX

# What the erased contacts' customers left on the bus: none of it may stay in the store's files.
CHAT_PHONE = "+821055501234"
CHAT_TEXT = "chat-one asks about invoice 7731"
CHAT_ADDRESS = "chat.one@example.kr"
MAIL_ADDRESS = "mail.one@example.kr"
MAIL_TEXT = "mail-one wants a refund of 4410 won"
FAX_CALLER = "+82255509876"
FAX_TEXT = "fax-one order form 3321"
PARKED_TEXT = "chat-one second message 6604, parked"
ERASED_SECRETS = (
    CHAT_PHONE,
    CHAT_TEXT,
    CHAT_ADDRESS,
    MAIL_ADDRESS,
    MAIL_TEXT,
    FAX_CALLER,
    FAX_TEXT,
    PARKED_TEXT,
)
# What others left: it stays (and shows the check can see the store's contents).
KEPT_TEXT = "keep-one stays on the record 9902"
OTHER_TENANT_TEXT = "globex chat-one stays 5513"
KEPT_PARKED_TEXT = "keep-one parked message 1187"


def _meta(tenant: str, channel: int) -> Any:
    return events.new_meta(tenant, channel, "test")


def _message_added(cid: str, text: str, tenant: str = "acme") -> events_pb2.MessageAdded:
    return events_pb2.MessageAdded(
        meta=_meta(tenant, CHAT),
        message=contact_pb2.Message(
            message_id=events.new_id(),
            contact_id=cid,
            author=contact_pb2.AUTHOR_CUSTOMER,
            parts=[contact_pb2.ContentPart(content_type="text/plain", text=text)],
        ),
    )


def _outbound_email(cid: str, to: str, text: str, tenant: str = "acme") -> events_pb2.OutboundEmail:
    return events_pb2.OutboundEmail(
        meta=_meta(tenant, EMAIL), contact_id=cid, to=[to], subject="Re: your question", text=text
    )


def _phone(number: str) -> contact_pb2.CustomerIdentity:
    return contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_PHONE, value=number)


def _chat_contact() -> list[Message]:
    """Everything the bus holds of a chat contact of acme, "chat-1", from creation to survey."""
    created = contact_created(
        "chat-1", tenant="acme", email=CHAT_ADDRESS, text=CHAT_TEXT, name="Kim Minsu"
    )
    created.contact.identities.append(_phone(CHAT_PHONE))
    m = _meta
    return [
        created,
        _message_added("chat-1", CHAT_TEXT),
        events_pb2.ContactQueued(meta=m("acme", 0), contact_id="chat-1", queue="billing"),
        events_pb2.ContactOffered(meta=m("acme", 0), contact_id="chat-1", agent_id="a-1"),
        events_pb2.ContactAssigned(meta=m("acme", 0), contact_id="chat-1", agent_id="a-1"),
        events_pb2.RoutingStepApplied(meta=m("acme", 0), contact_id="chat-1", step="widen"),
        events_pb2.ContactHeld(meta=m("acme", CHAT), contact_id="chat-1", held=True),
        events_pb2.ContactTransferred(meta=m("acme", CHAT), contact_id="chat-1", to_queue="vip"),
        events_pb2.ContactEnded(meta=m("acme", CHAT), contact_id="chat-1"),
        case_events_pb2.CaseCreated(meta=m("acme", 0), case_id="case-1", contact_id="chat-1"),
        events_pb2.SatisfactionRated(
            meta=m("acme", CHAT), contact_id="chat-1", score=2, comment=CHAT_TEXT
        ),
        _outbound_email("chat-1", CHAT_ADDRESS, f"Transcript: {CHAT_TEXT}"),
        events_pb2.DeliveryStatus(meta=m("acme", EMAIL), contact_id="chat-1", detail=CHAT_ADDRESS),
    ]


def _email_contact() -> list[Message]:
    """An email contact of acme, "mail-1": the mail, the contact, the reply, its delivery."""
    m = _meta
    return [
        email_pb2.EmailReceived(
            meta=m("acme", EMAIL), contact_id="mail-1", from_address=MAIL_ADDRESS, text=MAIL_TEXT
        ),
        contact_created("mail-1", tenant="acme", channel=EMAIL, email=MAIL_ADDRESS, text=MAIL_TEXT),
        events_pb2.ContactAbandoned(meta=m("acme", EMAIL), contact_id="mail-1"),
        _outbound_email("mail-1", MAIL_ADDRESS, f"> {MAIL_TEXT}\nRefunded."),
        events_pb2.DeliveryStatus(meta=m("acme", EMAIL), contact_id="mail-1", detail=MAIL_ADDRESS),
    ]


def _fax_contact() -> list[Message]:
    """A fax contact of acme, "fax-1" (the fax channel's contact id is the fax id)."""
    m = _meta
    origin = fax_pb2.FaxOrigin(caller_id_number=FAX_CALLER)
    created = contact_created("fax-1", tenant="acme", channel=FAX, text=FAX_TEXT)
    created.contact.identities.append(_phone(FAX_CALLER))
    return [
        fax_pb2.FaxReceived(meta=m("acme", FAX), fax_id="fax-1", origin=origin),
        fax_pb2.FaxProcessed(
            meta=m("acme", FAX),
            fax_id="fax-1",
            contact_id="fax-1",
            origin=origin,
            pages=[fax_pb2.FaxPage(number=1, text=FAX_TEXT)],
            identities=[_phone(FAX_CALLER)],
        ),
        created,
        events_pb2.OutboundFax(
            meta=m("acme", FAX), contact_id="fax-1", to_number=FAX_CALLER, text=FAX_TEXT
        ),
    ]


def _kept() -> list[Message]:
    """What stays: another contact of acme, a contact of globex with the same id as an erased
    one, and events of acme that name no contact."""
    m = _meta
    return [
        contact_created("keep-1", tenant="acme", text=KEPT_TEXT),
        _message_added("keep-1", KEPT_TEXT),
        _outbound_email("keep-1", "keep.one@example.kr", KEPT_TEXT),
        contact_created("chat-1", tenant="globex", text=OTHER_TENANT_TEXT),
        _message_added("chat-1", OTHER_TENANT_TEXT, tenant="globex"),
        _outbound_email("chat-1", "chat.one@globex.example", OTHER_TENANT_TEXT, tenant="globex"),
        events_pb2.AgentStateChanged(meta=m("acme", 0), agent_id="a-1", presence=1),
        events_pb2.SurgeLevelChanged(meta=m("acme", 0), queue="billing", level=2),
        case_events_pb2.CaseStatusChanged(meta=m("acme", 0), case_id="case-1", reason="done"),
        fax_pb2.FaxQuarantined(meta=m("acme", FAX), fax_id="fax-q", reason="corrupt"),
    ]


@dataclass
class Stored:
    stream: str
    seq: int
    event: Message | None  # None: not a registered event


async def _stored(js: JetStreamContext) -> list[Stored]:
    """Every message of the shared streams, decoded (independently of the code under test)."""
    out = []
    for stream in events.STREAMS:
        seq = 1
        while True:
            try:
                raw = await js.get_msg(stream, seq, subject=">", next=True)
            except NotFoundError:
                break
            spec = events.spec_by_name((raw.headers or {}).get(events.TYPE_HEADER, ""))
            event = spec.type.FromString(raw.data or b"") if spec else None
            out.append(Stored(stream, raw.seq or 0, event))
            seq = (raw.seq or seq) + 1
    return out


def _ids(stored: list[Stored], stream: str) -> set[str]:
    return {s.event.meta.event_id for s in stored if s.stream == stream and s.event}  # type: ignore[attr-defined]


async def _park(bus: Bus, subject: str, count: int) -> list[Message]:
    """Take `count` events on `subject` through a durable consumer and park them, as a consumer
    giving up on them does."""
    sub = await bus.js.pull_subscribe(subject, durable="case", stream="EVENTS")
    msgs = await sub.fetch(count, timeout=5)
    for msg in msgs:
        await deadletter.park(bus.js, msg, "case", "handler failed")
        await msg.term()
    await sub.unsubscribe()
    return [events_pb2.MessageAdded.FromString(m.data) for m in msgs]


def _store_holds(store: Path, text: str) -> bool:
    needle = text.encode()
    return any(needle in p.read_bytes() for p in store.rglob("*") if p.is_file())


async def test_erasing_contacts_deletes_their_events_commands_and_parked_events(
    bus: Bus, nats_server: NatsServer
) -> None:
    erased = [*_chat_contact(), *_email_contact(), *_fax_contact()]
    kept = _kept()
    for event in [*erased, *kept]:
        await bus.publish(event)
    # A consumer gave up on the chat messages of acme and parked them: two are of chat-1.
    to_park = [_message_added("chat-1", PARKED_TEXT), _message_added("keep-1", KEPT_PARKED_TEXT)]
    for event in to_park:
        await bus.publish(event)
    parked = await _park(bus, "contact.acme.chat.message_added", 4)
    assert [p.message.contact_id for p in parked] == ["chat-1", "keep-1", "chat-1", "keep-1"]
    parked_kept = {p.meta.event_id for p in parked if p.message.contact_id == "keep-1"}
    before = await _stored(bus.js)

    deleted = await stream_erasure.erase_contacts(bus.js, "acme", ["chat-1", "mail-1", "fax-1"])

    after = await _stored(bus.js)
    assert deleted == len(erased) + 1 + 2 == len(before) - len(after)
    gone = {e.meta.event_id for e in [*erased, to_park[0]]}  # type: ignore[attr-defined]
    published = {e.meta.event_id for e in [*erased, *kept, *to_park]}  # type: ignore[attr-defined]
    remaining = _ids(after, "EVENTS") | _ids(after, "OUTBOUND")
    assert remaining == published - gone
    assert _ids(after, "DEADLETTER") == parked_kept
    assert all(s.event is not None for s in after)

    assert await stream_erasure.erase_contacts(bus.js, "acme", ["chat-1", "mail-1", "fax-1"]) == 0
    assert await _stored(bus.js) == after

    await bus.drain()
    nats_server.stop()  # everything on disk
    assert [s for s in ERASED_SECRETS if _store_holds(nats_server.store_dir, s)] == []
    for text in (KEPT_TEXT, OTHER_TENANT_TEXT, KEPT_PARKED_TEXT):
        assert _store_holds(nats_server.store_dir, text), text


async def test_a_deleted_message_is_overwritten_in_the_store(
    bus: Bus, nats_server: NatsServer
) -> None:
    # A delete without erase only marks the message deleted: its bytes stay in the file (among
    # enough others that nats-server does not compact the block).
    await bus.publish_many([contact_created(f"filler-{i}", text="filler") for i in range(100)])
    marked = await bus.publish(contact_created("c-1", text="marked deleted 5150"))
    erased = await bus.publish(contact_created("c-2", text="securely erased 8080"))
    await bus.publish_many([contact_created(f"filler-{i}", text="filler") for i in range(100)])
    request = json.dumps({"seq": marked.seq, "no_erase": True}).encode()
    reply = json.loads((await bus.nc.request("$JS.API.STREAM.MSG.DELETE.EVENTS", request)).data)
    assert reply.get("success"), reply
    assert await stream_erasure.secure_delete(bus.js, "EVENTS", erased.seq)
    await bus.drain()
    nats_server.stop()
    assert _store_holds(nats_server.store_dir, "marked deleted 5150")
    assert not _store_holds(nats_server.store_dir, "securely erased 8080")


async def test_deleting_a_message_that_is_gone_is_no_error(bus: Bus) -> None:
    ack = await bus.publish(contact_created("c-1"))
    assert await stream_erasure.secure_delete(bus.js, "EVENTS", ack.seq)
    assert not await stream_erasure.secure_delete(bus.js, "EVENTS", ack.seq)
    assert not await stream_erasure.secure_delete(bus.js, "EVENTS", ack.seq + 100)


async def test_a_delete_the_stream_refuses_is_an_error(bus: Bus) -> None:
    # A key-value stream denies message deletes: that must not pass for "already gone".
    kv = await stores.key_value(bus.js, "erasure_test")
    revision = await kv.put("k", b"value")
    with pytest.raises(APIError):
        await stream_erasure.secure_delete(bus.js, "KV_erasure_test", revision)


async def test_erasing_reads_past_other_tenants_and_contacts(bus: Bus) -> None:
    # More messages than any batch, the erased contact's scattered among them.
    await bus.publish_many(
        [
            _message_added(f"c-{i}", f"text {i}", tenant="acme" if i % 3 else "globex")
            for i in range(600)
        ]
    )
    wanted = {f"c-{i}" for i in range(0, 600, 7)}
    expected = sum(1 for i in range(600) if f"c-{i}" in wanted and i % 3)
    assert await stream_erasure.erase_contacts(bus.js, "acme", wanted) == expected
    left = await _stored(bus.js)
    assert len(left) == 600 - expected


async def test_two_erasures_at_once_delete_each_message_once(bus: Bus) -> None:
    await bus.publish_many([_message_added(f"c-{i % 5}", f"text {i}") for i in range(200)])
    runs = [stream_erasure.erase_contacts(bus.js, "acme", ["c-1", "c-3"]) for _ in range(2)]
    assert sum(await asyncio.gather(*runs)) == 80
    assert len(await _stored(bus.js)) == 120


async def test_nothing_to_erase(bus: Bus) -> None:
    await bus.publish(contact_created("c-1"))
    assert await stream_erasure.erase_contacts(bus.js, "acme", []) == 0
    assert await stream_erasure.erase_contacts(bus.js, "acme", [""]) == 0
    assert await stream_erasure.erase_contacts(bus.js, "acme", ["someone-else"]) == 0
    assert len(await _stored(bus.js)) == 1


# ---- which events belong to a contact ---------------------------------------------------------


def _with_contact(cid: str) -> dict[type[Message], Callable[[], Message]]:
    """An event of each type that names a contact, naming `cid`."""
    return {
        events_pb2.ContactCreated: lambda: contact_created(cid),
        events_pb2.MessageAdded: lambda: _message_added(cid, "hello"),
        fax_pb2.FaxReceived: lambda: fax_pb2.FaxReceived(fax_id=cid),
        **{
            t: (lambda t=t: t(contact_id=cid))  # type: ignore[misc]
            for t in (
                events_pb2.ContactEnded,
                events_pb2.ContactAbandoned,
                events_pb2.ContactQueued,
                events_pb2.ContactOffered,
                events_pb2.ContactOfferWithdrawn,
                events_pb2.ContactAssigned,
                events_pb2.ContactHeld,
                events_pb2.ContactTransferred,
                events_pb2.ContactSupervised,
                events_pb2.RecordingPlayed,
                events_pb2.RoutingStepApplied,
                events_pb2.SatisfactionRated,
                events_pb2.DeliveryStatus,
                events_pb2.OutboundEmail,
                events_pb2.OutboundFax,
                fax_pb2.FaxProcessed,
                email_pb2.EmailReceived,
                case_events_pb2.CaseCreated,
            )
        },
    }


def test_every_registered_event_type_either_names_a_contact_or_none() -> None:
    registered = {spec.type for spec in events.specs()}
    assert set(stream_erasure.CONTACT_OF) | stream_erasure.NO_CONTACT == registered
    assert set(stream_erasure.CONTACT_OF) & stream_erasure.NO_CONTACT == set()
    assert set(_with_contact("x")) == set(stream_erasure.CONTACT_OF)


@pytest.mark.parametrize("event_type", sorted(_with_contact("x"), key=lambda t: t.__name__))
def test_the_contact_of_each_event_type(event_type: type[Message]) -> None:
    event = _with_contact("c-42")[event_type]()
    assert stream_erasure.contact_of(event) == "c-42"
    assert stream_erasure.contact_of(event_type()) == ""


@pytest.mark.parametrize("event_type", sorted(stream_erasure.NO_CONTACT, key=lambda t: t.__name__))
def test_an_event_type_naming_no_contact_belongs_to_none(event_type: type[Message]) -> None:
    assert stream_erasure.contact_of(event_type(meta=_meta("acme", 0))) == ""


def test_the_filters_select_the_tenants_subjects() -> None:
    assert stream_erasure.tenant_filters("EVENTS", "acme") == [
        "contact.acme.>",
        "routing.acme.>",
        "case.acme.>",
    ]
    # outbound.email.send names no tenant: the payload's tenant decides.
    assert stream_erasure.tenant_filters("OUTBOUND", "acme") == ["outbound.>"]
    assert stream_erasure.tenant_filters("DEADLETTER", "acme") == [
        "deadletter.*.contact.acme.>",
        "deadletter.*.routing.acme.>",
        "deadletter.*.case.acme.>",
        "deadletter.*.outbound.>",
    ]
    for subject in ("contact.acme.chat.created", "routing.acme.queued", "case.acme.created"):
        assert any(_matches(f, subject) for f in stream_erasure.tenant_filters("EVENTS", "acme"))
        assert not any(
            _matches(f, subject) for f in stream_erasure.tenant_filters("EVENTS", "globex")
        )


@pytest.mark.parametrize("tenant", ["", "*", ">", "acme.*", "ac me"])
def test_a_tenant_that_is_no_tenant_name_is_refused(tenant: str) -> None:
    with pytest.raises(InvalidArgument):
        stream_erasure.tenant_filters("EVENTS", tenant)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    if p[-1] == ">":
        return len(s) >= len(p) and all(a in ("*", b) for a, b in zip(p[:-1], s, strict=False))
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s, strict=True))


def test_a_message_of_another_tenant_or_undecodable_does_not_belong() -> None:
    event = _message_added("c-1", "x", tenant="globex")
    headers = {events.TYPE_HEADER: events.spec_for(events_pb2.MessageAdded).type_name}
    raw = js_api.RawStreamMsg(headers=headers, data=event.SerializeToString())
    wanted = frozenset({"c-1"})
    assert stream_erasure.belongs(raw, "globex", wanted)
    assert not stream_erasure.belongs(raw, "acme", wanted)
    assert not stream_erasure.belongs(
        js_api.RawStreamMsg(headers=headers, data=b"\xff"), "globex", wanted
    )
    assert not stream_erasure.belongs(
        js_api.RawStreamMsg(data=event.SerializeToString()), "globex", wanted
    )


@pytest.mark.parametrize(
    ("first", "last", "parts"),
    [(1, 600, 8), (5, 5, 8), (1, 3, 8), (10, 9, 8), (0, 0, 8), (3, 100, 1), (1, 17, 4)],
)
def test_a_stream_is_read_in_parts_that_cover_it_once(first: int, last: int, parts: int) -> None:
    ranges = stream_erasure._parts(first, last, parts)
    covered = [seq for lo, hi in ranges for seq in range(lo, hi + 1)]
    assert covered == list(range(max(first, 1), last + 1))
    assert len(ranges) <= parts
