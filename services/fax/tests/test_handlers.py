"""The fax reader's handlers on fakes of its own adapters (no nats-server, no tesseract): a fax
becomes a routed contact with its pages, or is quarantined with the reason, once each."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchboard.core import events, stores
from switchboard.core.errors import NotFound
from switchboard.fax import samples
from switchboard.fax.adapters.ocr import PageText
from switchboard.fax.domain import rules
from switchboard.fax.domain.document import Limits
from switchboard.fax.handlers import FaxReader, ReadingConfig
from switchboard.fax.notifier import FaxNotifier
from switchboard.testing.fakes import FakePublisher
from switchboard.v1 import contact_pb2, events_pb2, fax_pb2


class FakeObjects:
    """The object store as the reader uses it: put and get by reference."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, str], bytes] = {}

    async def put(
        self, bucket: str, name: str, data: bytes, filename: str, content_type: str
    ) -> contact_pb2.AttachmentRef:
        self.kept[(bucket, name)] = data
        return stores.attachment_ref(bucket, name, filename, content_type, data)

    async def get(self, ref: contact_pb2.AttachmentRef) -> bytes:
        try:
            return self.kept[(ref.bucket, ref.object_name)]
        except KeyError:
            raise NotFound("object", ref.object_name) from None


class FakeOcr:
    """Reads every page as the text the test gives."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pages = 0

    async def read(self, png: bytes, dpi: float = 300.0) -> PageText:
        self.pages += 1
        return PageText(self.text, 91.0, "chi_sim+eng", "Han")


@pytest.fixture
def parts() -> Iterator[tuple[FaxReader, FakeObjects, FakeOcr, FakePublisher]]:
    objects, ocr, bus = FakeObjects(), FakeOcr("账单 问题\n紧急 请回电"), FakePublisher()
    config = ReadingConfig("fax-documents", "fax-quarantine", Limits(), "KR", frozenset())
    reader = FaxReader(objects, FaxNotifier(bus), ocr, rules.load(), config)  # type: ignore[arg-type]
    yield reader, objects, ocr, bus
    reader.close()


async def received(objects: FakeObjects, data: bytes, fax_id: str) -> fax_pb2.FaxReceived:
    original = await objects.put("fax-documents", f"demo/{fax_id}/original", data, "f", "x")
    return fax_pb2.FaxReceived(
        meta=events.new_meta("demo", contact_pb2.CHANNEL_FAX, "test", f"{fax_id}:received"),
        fax_id=fax_id,
        origin=fax_pb2.FaxOrigin(caller_id_number="+82 2 1234 5678", csid="ACME"),
        original=original,
    )


async def test_a_two_page_fax_becomes_a_routed_contact_with_its_pages(parts) -> None:  # type: ignore[no-untyped-def]
    reader, objects, ocr, bus = parts
    pages = [samples.fax_page(["INVOICE 2026-11"]), samples.fax_page(["page two"])]
    event = await received(objects, samples.tiff(pages), "f-1")
    await reader.on_fax_received(event)
    await reader.on_fax_received(event)  # redelivered: the same ids, stored once

    [processed] = bus.of(fax_pb2.FaxProcessed)
    [created] = bus.of(events_pb2.ContactCreated)
    assert ocr.pages == 4
    assert [p.number for p in processed.pages] == [1, 2]
    assert created.contact.contact_id == "f-1" and created.contact.language == "zh"
    assert created.contact.skills == ["billing"] and created.contact.priority == 5
    assert [i.value for i in created.contact.identities] == ["+82212345678"]
    assert ("fax-documents", "demo/f-1/page-2-thumb.png") in objects.kept


async def test_a_file_that_is_not_a_fax_is_quarantined_with_its_reason(parts) -> None:  # type: ignore[no-untyped-def]
    reader, objects, ocr, bus = parts
    await reader.on_fax_received(await received(objects, b"%PDF-1.4 not really", "f-2"))
    [quarantined] = bus.of(fax_pb2.FaxQuarantined)
    assert quarantined.fax_id == "f-2" and quarantined.reason
    assert not bus.of(events_pb2.ContactCreated) and ocr.pages == 0
    reason = objects.kept[("fax-quarantine", "demo/f-2/reason.txt")].decode()
    assert reason.startswith(f"{quarantined.code}: ")
