"""From intake to contact on the store fakes (no nats-server, no tesseract): an accepted fax is
stored and announced once, read into a contact whose page images are stored, or quarantined
with its reason; bad input is refused with an error that names it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from switchboard.core.errors import InvalidArgument, NotFound
from switchboard.core.events import new_meta
from switchboard.fax import samples
from switchboard.fax.adapters.jobs import Job, Jobs
from switchboard.fax.adapters.objects import Objects
from switchboard.fax.adapters.ocr import PageText
from switchboard.fax.domain import rules
from switchboard.fax.domain.document import Limits
from switchboard.fax.handlers import FaxReader, ReadingConfig
from switchboard.fax.intake import accept, fax_id_for
from switchboard.fax.notifier import FaxNotifier
from switchboard.testing.fakes import FakeKeyValue, FakeObjectStores, FakePublisher
from switchboard.v1 import contact_pb2, email_pb2, events_pb2, fax_pb2

DOCUMENTS, QUARANTINE = "fax-documents", "fax-quarantine"
FAX_ADDRESS = "fax@demo.example"


class PageReader:
    """OCR as the reader calls it (Tesseract.read): every page reads as `text`."""

    def __init__(self, text: str) -> None:
        self.text, self.read_pages = text, 0

    async def read(self, png: bytes, dpi: float = 300.0) -> PageText:
        self.read_pages += 1
        return PageText(self.text, 90.0, "eng", "Latin")


@dataclass
class Parts:
    buckets: FakeObjectStores
    objects: Objects
    bus: FakePublisher
    notifier: FaxNotifier
    ocr: PageReader
    reader: FaxReader

    def stored(self, bucket: str) -> dict[str, bytes]:
        return self.buckets.buckets[bucket].objects if bucket in self.buckets.buckets else {}

    async def accept(self, data: bytes, tenant: str = "demo") -> fax_pb2.FaxReceived:
        fax_id = fax_id_for("http", data)
        origin = fax_pb2.FaxOrigin(
            intake=fax_pb2.FAX_INTAKE_HTTP, caller_id_number="+1 415 555 0100", csid="ACME"
        )
        return await accept(self.objects, self.notifier, DOCUMENTS, tenant, fax_id, data, origin)


@pytest.fixture
def parts() -> Iterator[Parts]:
    buckets, bus = FakeObjectStores(), FakePublisher()
    objects, notifier = Objects(buckets=buckets), FaxNotifier(bus)
    ocr = PageReader("INVOICE 2026-11\nplease call back")
    config = ReadingConfig(DOCUMENTS, QUARANTINE, Limits(), "US", frozenset({FAX_ADDRESS}))
    reader = FaxReader(objects, notifier, ocr, rules.load(), config)  # type: ignore[arg-type]
    yield Parts(buckets, objects, bus, notifier, ocr, reader)
    reader.close()


def two_pages() -> bytes:
    return samples.tiff([samples.fax_page(["INVOICE"]), samples.fax_page(["page two"])])


async def test_an_accepted_fax_is_stored_then_announced_once(parts: Parts) -> None:
    data = two_pages()
    received = await parts.accept(data)
    again = await parts.accept(data)  # the same upload again: the same fax

    assert again.fax_id == received.fax_id
    assert parts.bus.events == [received]
    assert received.meta.event_id == f"{received.fax_id}:received"
    ref = received.original
    assert (ref.bucket, ref.object_name) == (DOCUMENTS, f"demo/{received.fax_id}/original.tif")
    assert ref.content_type == "image/tiff" and ref.size_bytes == len(data)
    assert parts.stored(DOCUMENTS) == {ref.object_name: data}


async def test_a_fax_for_a_bad_tenant_is_refused_before_anything_is_stored(parts: Parts) -> None:
    with pytest.raises(InvalidArgument, match="'Demo Co' is not a valid tenant name"):
        await parts.accept(two_pages(), tenant="Demo Co")
    assert parts.bus.events == [] and parts.stored(DOCUMENTS) == {}


async def test_a_received_fax_becomes_a_contact_with_its_pages_stored(parts: Parts) -> None:
    received = await parts.accept(two_pages())
    await parts.reader.on_fax_received(received)
    await parts.reader.on_fax_received(received)  # redelivered: published once

    [processed] = parts.bus.of(fax_pb2.FaxProcessed)
    [created] = parts.bus.of(events_pb2.ContactCreated)
    contact, fax_id = created.contact, received.fax_id
    assert created.meta.event_id == f"{fax_id}:created"
    assert contact.contact_id == fax_id and contact.channel == contact_pb2.CHANNEL_FAX
    assert contact.subject == "Fax, 2 pages: INVOICE 2026-11"
    assert [i.value for i in contact.identities] == ["+14155550100"]
    assert contact.customer_name == "ACME"
    assert [p.text for p in processed.pages] == ["INVOICE 2026-11\nplease call back"] * 2
    # Each page's image and thumbnail are stored; the contact carries the images and original.
    names = [f"demo/{fax_id}/page-{n}{kind}.png" for n in (1, 2) for kind in ("", "-thumb")]
    assert sorted(parts.stored(DOCUMENTS)) == sorted([received.original.object_name, *names])
    assert [a.object_name for a in contact.attachments] == [
        names[0],
        names[2],
        received.original.object_name,
    ]
    image = processed.pages[0].image
    assert image.content_type == "image/png"
    assert parts.stored(DOCUMENTS)[image.object_name].startswith(b"\x89PNG")


async def test_a_file_that_is_not_a_fax_is_quarantined_with_its_reason(parts: Parts) -> None:
    received = await parts.accept(b"GIF89a not a fax")
    await parts.reader.on_fax_received(received)

    [quarantined] = parts.bus.of(fax_pb2.FaxQuarantined)
    assert not parts.bus.of(events_pb2.ContactCreated) and parts.ocr.read_pages == 0
    assert quarantined.fax_id == received.fax_id and quarantined.code and quarantined.reason
    kept = parts.stored(QUARANTINE)
    prefix = f"demo/{received.fax_id}"
    assert kept[f"{prefix}/original.bin"] == b"GIF89a not a fax"
    assert kept[f"{prefix}/reason.txt"].decode() == f"{quarantined.code}: {quarantined.reason}\n"


async def test_a_fax_whose_original_is_not_stored_is_refused_naming_it(parts: Parts) -> None:
    received = await parts.accept(two_pages())
    received.original.object_name = "demo/none/original.tif"
    with pytest.raises(NotFound, match=r"object 'fax-documents/demo/none/original\.tif' not found"):
        await parts.reader.on_fax_received(received)
    assert not parts.bus.of(events_pb2.ContactCreated)


def mail(
    to: str,
    *attachments: contact_pb2.AttachmentRef,
    sender: str = "scanner@acme.example",
    subject: str = "",
) -> email_pb2.EmailReceived:
    return email_pb2.EmailReceived(
        meta=new_meta("demo", contact_pb2.CHANNEL_EMAIL, "email-ingest", "mail-1:email"),
        from_address=sender,
        to=[to],
        subject=subject,
        attachments=attachments,
    )


async def test_a_fax_attachment_mailed_to_the_fax_address_is_accepted(parts: Parts) -> None:
    pdf = samples.pdf([samples.fax_page(["ORDER"])])
    objects = parts.objects
    attached = await objects.put("email", "demo/a/1", pdf, "order.pdf", "application/pdf")
    photo = await objects.put("email", "demo/a/2", b"\xff\xd8", "photo.jpg", "image/jpeg")

    await parts.reader.on_email_received(mail("someone@demo.example", attached))
    assert parts.bus.events == []  # not addressed to the fax
    await parts.reader.on_email_received(mail(FAX_ADDRESS, attached, photo))
    await parts.reader.on_email_received(mail(FAX_ADDRESS, attached, photo))  # redelivered

    [received] = parts.bus.of(fax_pb2.FaxReceived)
    assert received.origin.intake == fax_pb2.FAX_INTAKE_EMAIL
    assert received.origin.received_by == FAX_ADDRESS
    assert received.origin.filename == "order.pdf"
    assert parts.stored(DOCUMENTS)[received.original.object_name] == pdf


async def test_a_fax_mailed_by_a_customer_is_theirs_by_their_address(parts: Parts) -> None:
    """A document mailed to the fax address comes from the mail's sender: the contact (and the
    index an erasure finds it by) names the sender's address, as an email contact would."""
    pdf = samples.pdf([samples.fax_page(["ORDER"])])
    attached = await parts.objects.put("email", "demo/a/1", pdf, "order.pdf", "application/pdf")
    await parts.reader.on_email_received(
        mail(
            FAX_ADDRESS,
            attached,
            sender="Kim.Minji@Customer.example",
            subject="Order 2026-11-0123 (415) 555-0100",  # numbers, but no caller named
        )
    )

    [received] = parts.bus.of(fax_pb2.FaxReceived)
    assert received.origin.sender_address == "kim.minji@customer.example"
    await parts.reader.on_fax_received(received)
    [created] = parts.bus.of(events_pb2.ContactCreated)
    assert [(i.kind, i.value) for i in created.contact.identities] == [
        (contact_pb2.IDENTITY_KIND_EMAIL, "kim.minji@customer.example")
    ]
    [processed] = parts.bus.of(fax_pb2.FaxProcessed)
    assert list(processed.identities) == list(created.contact.identities)


@pytest.mark.parametrize(
    ("to", "sender", "subject"),
    [
        # From its own address, listed as a fax address.
        ("support@demo.example", FAX_ADDRESS, "New fax from (415) 555-0100, 1 page"),
        # From a carrier's address, to the fax address, naming the caller.
        (FAX_ADDRESS, "message@inbound.carrier.example", 'eFax message from "+1 415 555 0100"'),
    ],
)
async def test_a_fax_from_a_fax_to_email_gateway_is_the_callers_by_the_number_it_names(
    parts: Parts, to: str, sender: str, subject: str
) -> None:
    """A fax-to-email gateway sends every fax from its own address, naming the caller in the
    subject: the caller's number is the contact's identity, and the gateway's address and name
    are nobody's."""
    pdf = samples.pdf([samples.fax_page(["ORDER"])])
    attached = await parts.objects.put("email", "demo/a/1", pdf, "order.pdf", "application/pdf")
    gateway = mail(to, attached, sender=sender, subject=subject)
    gateway.from_name = "Carrier fax gateway"
    await parts.reader.on_email_received(gateway)

    [received] = parts.bus.of(fax_pb2.FaxReceived)
    assert received.origin.sender_address == "" and received.origin.caller_id_name == ""
    assert received.origin.caller_id_number == "+14155550100"
    await parts.reader.on_fax_received(received)
    [created] = parts.bus.of(events_pb2.ContactCreated)
    assert [(i.kind, i.value) for i in created.contact.identities] == [
        (contact_pb2.IDENTITY_KIND_PHONE, "+14155550100")
    ]
    assert created.contact.customer_name == ""


async def test_a_gateways_fax_naming_no_number_has_no_identity(parts: Parts) -> None:
    pdf = samples.pdf([samples.fax_page(["ORDER"])])
    attached = await parts.objects.put("email", "demo/a/1", pdf, "order.pdf", "application/pdf")
    await parts.reader.on_email_received(
        mail("support@demo.example", attached, sender=FAX_ADDRESS, subject="Fax received 12")
    )
    [received] = parts.bus.of(fax_pb2.FaxReceived)
    await parts.reader.on_fax_received(received)
    [created] = parts.bus.of(events_pb2.ContactCreated)
    assert list(created.contact.identities) == []


async def test_the_reply_jobs_still_to_follow_are_those_not_final() -> None:
    jobs = Jobs(FakeKeyValue("fax-jobs"))
    assert await jobs.unfinished() == []
    await jobs.put("cmd-1", Job(b"\x01", "101", 1))
    await jobs.put("cmd-2", Job(b"\x02", "102", 1, final=True))
    assert await jobs.get("cmd-1") == Job(b"\x01", "101", 1)
    assert await jobs.get("cmd-3") is None
    assert await jobs.unfinished() == [Job(b"\x01", "101", 1)]
