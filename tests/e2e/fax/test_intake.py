"""Every intake path end to end: a fax built in the suite is read by tesseract, its language and
skill decided, and it reaches the agent who speaks that language through the real router.
Hostile files are quarantined with their reasons while the next good fax goes through.
(The hook's own exit codes, with no router, are tested in services/fax/tests/test_hook.py.)"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from switchboard.core import events
from switchboard.fax.adapters.objects import Objects
from switchboard.fax.entrypoints.http_upload import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from switchboard.fax.samples import (
    CHINESE,
    ENGLISH,
    KOREAN,
    encrypted_pdf,
    fax_page,
    pdf,
    tiff,
    tiff_bomb,
    truncated,
)
from switchboard.testing.agents import AgentClient
from switchboard.testing.processes import run_command
from switchboard.testing.waiting import eventually
from switchboard.v1 import contact_pb2, email_pb2, fax_pb2, router_pb2

FaxPlatform = Any  # conftest.py: the platform fixture
TENANT = "demo"
WEBHOOK_SECRET = "provider-shared-secret"  # the platform fixture's FAX_WEBHOOK_SECRET


async def offer_for(agent: AgentClient, contact_id: str) -> router_pb2.Offer:
    """The agent's offer of `contact_id` (declining any other contact offered meanwhile)."""
    while True:
        offer = await agent.next_offer(timeout=60)
        if offer.contact.contact_id == contact_id:
            return offer
        await agent.decline(offer, "not this test's contact")


async def processed(p: FaxPlatform, **match: object) -> fax_pb2.FaxProcessed:
    def ok(e: fax_pb2.FaxProcessed) -> bool:
        return all(getattr(e.origin, k) == v for k, v in match.items())

    return await p.events.first(fax_pb2.FaxProcessed, ok, f"a processed fax with {match}")


def hook_binary() -> str:
    return str(Path(sys.executable).with_name("switchboard-fax-hook"))


async def run_hook(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    return await run_command([hook_binary(), *args], env, cwd)


async def test_hylafax_hook_korean_g4_fax_reaches_the_korean_agent(
    platform: FaxPlatform, tmp_path: Path
) -> None:
    spool = tmp_path / "hylafax"
    (spool / "recvq").mkdir(parents=True)
    (spool / "recvq" / "fax00042.tif").write_bytes(tiff([fax_page(KOREAN)], "group4"))
    env = {
        "NATS_URL": platform.nats_url,
        "FAX_TENANT": TENANT,
        "SENDER": "+82 2 1234 5678",  # the sender's TSI, as FaxDispatch sees it
        "PAGES": "1",
        "PATH": "/usr/bin:/bin",
    }
    args = ["recvq/fax00042.tif", "ttyS0", "00000042", "", "0212345678", "KIM MINJUN", "0299998888"]
    code, output = await run_hook(args, env, spool)
    assert code == 0, output
    assert "accepted as fax" in output

    fax = await processed(platform, comm_id="00000042")
    assert fax.language == "ko"
    assert list(fax.skills) == ["billing"]
    assert fax.compression == "group4"
    assert fax.origin.device == "ttyS0" and fax.origin.csid == "+82 2 1234 5678"
    assert [i.value for i in fax.identities] == ["+82212345678"]
    page = fax.pages[0]
    assert "청구서" in page.text.replace(" ", "")
    assert page.confidence > 50
    # OSD picks kor+eng on a full page; on a page this short it cannot tell, and every model runs
    assert "kor" in page.ocr_languages.split("+")

    offer = await offer_for(platform.agents["ko"], fax.contact_id)
    contact = offer.contact
    assert contact.channel == contact_pb2.CHANNEL_FAX
    assert contact.language == "ko"
    assert list(contact.skills) == ["billing"]
    assert contact.customer_name == "KIM MINJUN"
    assert "청구서" in contact.content[0].text.replace(" ", "")
    # the page image, then the original, all in the object store
    names = [a.object_name for a in contact.attachments]
    assert names == [f"{TENANT}/{fax.fax_id}/page-1.png", f"{TENANT}/{fax.fax_id}/original.tif"]
    objects = Objects(platform.bus.js)
    assert (await objects.get(contact.attachments[0]))[:8] == b"\x89PNG\r\n\x1a\n"
    assert (await objects.get(page.thumbnail))[:8] == b"\x89PNG\r\n\x1a\n"


async def test_spool_quarantines_a_bomb_and_a_truncated_tiff_and_routes_the_next_good_fax(
    platform: FaxPlatform,
) -> None:
    spool = platform.spool
    good = tiff([fax_page(CHINESE)], "group3", t4_2d=True)
    (spool / "1-bomb.tif").write_bytes(tiff_bomb(100_000, 100_000))
    (spool / "2-truncated.tif").write_bytes(
        truncated(tiff([fax_page(ENGLISH), fax_page(KOREAN)], "group4"))
    )
    (spool / "3-good.tif").write_bytes(good)

    def by_name(name: str):  # type: ignore[no-untyped-def]
        return lambda e: e.origin.reference == name

    bomb = await platform.events.first(fax_pb2.FaxQuarantined, by_name("1-bomb.tif"), "bomb")
    assert bomb.code == "too_many_pixels"
    assert "100000 × 100000" in bomb.reason
    cut = await platform.events.first(fax_pb2.FaxQuarantined, by_name("2-truncated.tif"), "cut")
    assert cut.code == "corrupt"
    assert "truncated" in cut.reason or "past the end" in cut.reason
    # the quarantined files and their reasons are kept
    objects = Objects(platform.bus.js)
    assert await objects.get(bomb.original) == tiff_bomb(100_000, 100_000)
    reason = contact_pb2.AttachmentRef(
        bucket=cut.original.bucket,
        object_name=cut.original.object_name.replace("original.tif", "reason.txt"),
    )
    assert (await objects.get(reason)).decode().startswith("corrupt: ")

    fax = await processed(platform, reference="3-good.tif")
    assert fax.language == "zh"
    assert list(fax.skills) == ["billing"]
    assert fax.compression == "group3-2d"
    assert "chi_sim" in fax.pages[0].ocr_languages.split("+")
    offer = await offer_for(platform.agents["zh"], fax.contact_id)
    assert offer.contact.language == "zh"
    # every file was removed from the spool only once JetStream had it
    assert await eventually(
        lambda: asyncio.sleep(0, result=not any(spool.iterdir())), "the spool emptied", 30
    )


async def test_http_upload_refuses_a_bad_signature_and_routes_a_signed_english_pdf(
    platform: FaxPlatform,
) -> None:
    document = pdf([fax_page(ENGLISH)])

    def form(data: bytes, reference: str) -> aiohttp.FormData:
        f = aiohttp.FormData()
        f.add_field("from", "+14155552671")
        f.add_field("to", "+82299998888")
        f.add_field("fax_id", reference)
        f.add_field("pages", "1")
        f.add_field("file", data, filename="inbound.pdf", content_type="application/pdf")
        return f

    async def post(data: bytes, reference: str, secret: str | None) -> tuple[int, dict[str, str]]:
        payload = form(data, reference)()
        writer = _Sink()
        await payload.write(writer)
        body = bytes(writer.data)
        headers = {"Content-Type": payload.content_type}
        if secret is not None:
            stamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = sign(secret, stamp, body)
        async with aiohttp.ClientSession() as http:
            async with http.post(platform.upload_url, data=body, headers=headers) as response:
                return response.status, await response.json()

    status, answer = await post(document, "prov-1", "not-the-shared-secret")
    assert status == 403
    assert "does not match" in answer["error"]
    status, answer = await post(document, "prov-1", None)
    assert status == 401
    assert SIGNATURE_HEADER in answer["error"]

    status, answer = await post(encrypted_pdf(), "prov-locked", WEBHOOK_SECRET)
    assert status == 202
    locked = await platform.events.first(
        fax_pb2.FaxQuarantined, lambda e: e.origin.reference == "prov-locked", "locked PDF"
    )
    assert locked.code == "encrypted" and "password" in locked.reason

    status, answer = await post(document, "prov-1", WEBHOOK_SECRET)
    assert status == 202, answer
    fax = await processed(platform, reference="prov-1")
    assert fax.fax_id == answer["fax_id"]
    assert fax.format == "pdf"
    assert fax.language == "en"
    assert list(fax.skills) == ["billing"]
    assert [i.value for i in fax.identities] == ["+14155552671"]
    offer = await offer_for(platform.agents["en"], fax.contact_id)
    assert offer.contact.language == "en"
    assert "invoice" in offer.contact.content[0].text


class _Sink:
    """Collects what aiohttp's multipart writer produces, to sign the exact bytes sent."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data += chunk


async def test_email_with_a_fax_attachment_becomes_a_fax_contact(platform: FaxPlatform) -> None:
    objects = Objects(platform.bus.js)
    # What the email channel does: the attachment in the object store, the mail as a contact.
    attachment = await objects.put(
        "email-attachments",
        "demo/mail-77/fax.tif",
        tiff([fax_page(KOREAN)], "group4"),
        "fax.tif",
        "image/tiff",
    )
    # What the email channel publishes for a mail to the fax-to-email address.
    received = email_pb2.EmailReceived(
        meta=events.new_meta(TENANT, contact_pb2.CHANNEL_EMAIL, "email-ingest", "mail-77:email"),
        contact_id="mail-77",
        from_address="gateway@carrier.example",
        from_name="Carrier fax gateway",
        to=["fax@demo.example"],
        subject="Fax from +82 2 1234 5678",
        attachments=[
            contact_pb2.AttachmentRef(
                bucket=attachment.bucket,
                object_name=attachment.object_name,
                filename="fax.tif",
                content_type="image/tiff",
            )
        ],
    )
    await platform.bus.publish(received)
    # A mail to somebody else with a TIFF is not a fax.
    other = email_pb2.EmailReceived()
    other.CopyFrom(received)
    other.meta.event_id, other.to[:] = "mail-78:email", ["sales@demo.example"]
    await platform.bus.publish(other)

    fax = await processed(platform, reference="mail-77:email")
    assert fax.origin.intake == fax_pb2.FAX_INTAKE_EMAIL
    assert fax.origin.received_by == "fax@demo.example"
    # The carrier's gateway names the caller in its subject: the fax is the caller's.
    assert (fax.origin.caller_id_number, fax.origin.caller_id_name) == ("+82212345678", "")
    assert fax.origin.sender_address == ""
    assert [(i.kind, i.value) for i in fax.identities] == [
        (contact_pb2.IDENTITY_KIND_PHONE, "+82212345678")
    ]
    assert fax.language == "ko"
    offer = await offer_for(platform.agents["ko"], fax.contact_id)
    assert offer.contact.channel == contact_pb2.CHANNEL_FAX
    assert list(offer.contact.skills) == ["billing"]
    # The mail to sales (published second) produced no fax: its TIFF is just an attachment.
    await asyncio.sleep(0.5)
    received = platform.events.of(fax_pb2.FaxReceived)
    assert [
        r.origin.reference for r in received if r.origin.intake == fax_pb2.FAX_INTAKE_EMAIL
    ] == ["mail-77:email"]
