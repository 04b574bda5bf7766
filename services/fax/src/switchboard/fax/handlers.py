"""From an accepted fax to a routed contact: normalise, read, decide, publish; or quarantine.

Every FaxReceived ends in exactly one of two places: a ContactCreated (with a FaxProcessed
holding the pages and their text), or a FaxQuarantined with the file kept and the reason.
Handlers are idempotent: every event id derives from the fax id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from switchboard.core import language, sender_keys
from switchboard.core.quarantine import Kept, QuarantineIndex
from switchboard.fax.adapters.objects import Objects
from switchboard.fax.adapters.ocr import OcrError, PageText, Tesseract
from switchboard.fax.domain import identity
from switchboard.fax.domain.document import Document, Limits, Page, Rejected, normalise
from switchboard.fax.domain.rules import RuleBook
from switchboard.fax.intake import accept, fax_id_for, kind_of
from switchboard.fax.notifier import FaxNotifier
from switchboard.v1 import contact_pb2, email_pb2, fax_pb2

logger = logging.getLogger(__name__)

FAX_TYPES = {"image/tiff", "image/tif", "application/pdf", "image/x-tiff"}
FAX_SUFFIXES = (".tif", ".tiff", ".pdf")


@dataclass(frozen=True)
class ReadingConfig:
    bucket: str
    quarantine_bucket: str
    limits: Limits
    region: str
    email_addresses: frozenset[str]
    # Keys the quarantine index's sender keys (switchboard.core.sender_keys).
    sender_key: bytes = b""


class FaxReader:
    """Handles FaxReceived (and email events carrying fax attachments)."""

    def __init__(
        self,
        objects: Objects,
        notifier: FaxNotifier,
        ocr: Tesseract,
        rules: RuleBook,
        config: ReadingConfig,
        workers: int = 2,
        index: QuarantineIndex | None = None,
    ) -> None:
        """`index` names each quarantined fax by its sender, for erasure and retention."""
        self.objects = objects
        self.index = index
        self.notifier = notifier
        self.ocr = ocr
        self.rules = rules
        self.config = config
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fax-norm")
        self.on_processed: Callable[[fax_pb2.FaxProcessed], None] | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- FaxReceived ------------------------------------------------------------------------

    async def on_fax_received(self, event: fax_pb2.FaxReceived) -> None:
        tenant = event.meta.tenant
        data = await self.objects.get(event.original)
        loop = asyncio.get_running_loop()
        try:
            document = await loop.run_in_executor(self._pool, normalise, data, self.config.limits)
        except Rejected as exc:
            await self.quarantine(event, data, exc.code, exc.reason)
            return
        except Exception as exc:  # a decoder bug must not lose the fax: keep it, say why
            logger.exception("normalising fax %s failed", event.fax_id)
            await self.quarantine(event, data, "unreadable", f"{type(exc).__name__}: {exc}")
            return
        await self._route(tenant, event, document)

    async def quarantine(
        self, event: fax_pb2.FaxReceived, data: bytes, code: str, reason: str
    ) -> None:
        """Keep the file and the reason in the quarantine bucket, then publish FaxQuarantined.
        The index names it first (by the sender's numbers, keyed), so that whatever is stored of
        it is found by its sender's erasure or by retention, even after a crash half-way."""
        tenant = event.meta.tenant
        ext, content_type = kind_of(data)
        prefix = f"{tenant}/{event.fax_id}"
        if self.index is not None:
            origin = event.origin
            who = identity.of_origin(origin, self.config.region)
            senders = [
                sender_keys.sender_key(self.config.sender_key, tenant, i.kind, i.value) for i in who
            ]
            q = self.config.quarantine_bucket
            await self.index.add(
                Kept(
                    tenant,
                    event.fax_id,
                    # When it came: a redelivery does not restart its retention.
                    event.meta.occurred_at.ToDatetime(UTC)
                    if event.meta.HasField("occurred_at")
                    else datetime.now(UTC),
                    (
                        f"{q}/{prefix}/original.{ext}",
                        f"{q}/{prefix}/reason.txt",
                        # The document as received: it never became a contact's, so no case
                        # erasure deletes it.
                        *(
                            [f"{event.original.bucket}/{event.original.object_name}"]
                            if event.original.bucket and event.original.object_name
                            else []
                        ),
                    ),
                    senders=tuple(senders),
                )
            )
        kept = await self.objects.put(
            self.config.quarantine_bucket,
            f"{prefix}/original.{ext}",
            data,
            event.original.filename or f"fax.{ext}",
            content_type,
        )
        await self.objects.put(
            self.config.quarantine_bucket,
            f"{prefix}/reason.txt",
            f"{code}: {reason}\n".encode(),
            "reason.txt",
            "text/plain; charset=utf-8",
        )
        logger.warning("fax %s quarantined: %s: %s", event.fax_id, code, reason)
        await self.notifier.fax_quarantined(tenant, event.fax_id, event.origin, kept, code, reason)

    async def _read_page(self, page: Page, fax_id: str) -> PageText:
        number = page.number
        try:
            return await self.ocr.read(page.ocr_png, page.ocr_dpi)
        except OcrError as exc:
            # The page images still reach the agent; unreadable text must not hold up the fax.
            logger.warning("OCR of fax %s page %d failed: %s", fax_id, number, exc)
            return PageText("", -1.0, "", "")

    async def _route(self, tenant: str, event: fax_pb2.FaxReceived, document: Document) -> None:
        fax_id = event.fax_id
        bucket = self.config.bucket
        texts = await asyncio.gather(*(self._read_page(p, fax_id) for p in document.pages))
        pages: list[fax_pb2.FaxPage] = []
        attachments: list[contact_pb2.AttachmentRef] = []
        for page, text in zip(document.pages, texts, strict=True):
            image = await self.objects.put(
                bucket, f"{tenant}/{fax_id}/page-{page.number}.png", page.png,
                f"page-{page.number}.png", "image/png",
            )  # fmt: skip
            thumb = await self.objects.put(
                bucket, f"{tenant}/{fax_id}/page-{page.number}-thumb.png", page.thumbnail_png,
                f"page-{page.number}-thumb.png", "image/png",
            )  # fmt: skip
            attachments.append(image)
            pages.append(
                fax_pb2.FaxPage(
                    number=page.number,
                    image=image,
                    thumbnail=thumb,
                    width=page.image.width,
                    height=page.image.height,
                    dpi_x=page.dpi[0],
                    dpi_y=page.dpi[1],
                    text=text.text,
                    confidence=text.confidence,
                    ocr_languages=text.languages,
                    script=text.script,
                )
            )
        full_text = "\n\n".join(p.text for p in pages if p.text)
        lang, probability = language.detect(full_text)
        decision = self.rules.for_tenant(tenant).decide(full_text, lang)
        origin = event.origin
        who = identity.of_origin(origin, self.config.region)
        contact = contact_pb2.Contact(
            contact_id=fax_id,
            tenant=tenant,
            channel=contact_pb2.CHANNEL_FAX,
            identities=who,
            customer_name=origin.caller_id_name or origin.csid,
            language=lang,
            skills=decision.skills,
            priority=decision.priority,
            queue=decision.queue,
            subject=_subject(full_text, len(pages)),
            content=[contact_pb2.ContentPart(content_type="text/plain", text=full_text)],
            attachments=[*attachments, event.original],
            conversation_id=origin.comm_id or origin.reference or fax_id,
        )
        contact.created_at.FromDatetime(datetime.now(UTC))
        processed = fax_pb2.FaxProcessed(
            fax_id=fax_id,
            contact_id=fax_id,
            origin=origin,
            original=event.original,
            format=document.format,
            compression=document.compression,
            pages=pages,
            language=lang,
            language_probability=probability,
            skills=decision.skills,
            priority=decision.priority,
            matched_rules=decision.matched,
            identities=who,
        )
        await self.notifier.fax_processed(tenant, processed)
        await self.notifier.contact_created(contact)
        logger.info(
            "fax %s: %d page(s), language %s, skills %s, priority %d",
            fax_id, len(pages), lang or "?", ",".join(decision.skills) or "-", decision.priority,
        )  # fmt: skip
        if self.on_processed is not None:
            self.on_processed(processed)

    # ---- email-to-fax -----------------------------------------------------------------------

    def _is_fax_mail(self, addresses: set[str]) -> bool:
        wanted = self.config.email_addresses
        if not wanted:
            return False
        return "*" in wanted or bool(wanted & addresses)

    async def on_email_received(self, event: email_pb2.EmailReceived) -> None:
        """A mail the email channel received: addressed to (or sent from) a fax-to-email address,
        its TIFF and PDF attachments are faxes."""
        addresses = {a.lower() for a in (event.from_address, *event.to, *event.cc) if a}
        if not self._is_fax_mail(addresses):
            return
        await self._email_attachments(event, addresses)

    async def _email_attachments(self, event: email_pb2.EmailReceived, addresses: set[str]) -> None:
        meta = event.meta
        wanted = self.config.email_addresses
        received_by = next(iter(sorted(wanted & addresses)), "") if wanted else ""
        # Who sent it. A fax-to-email gateway's mail (one from a fax address, or one whose
        # subject names the caller: "Fax from +82 2 1234 5678") is the caller's, by that number;
        # the gateway's own address and name are nobody's. Any other mail is from the sender,
        # by their own address.
        sender = event.from_address.lower()
        caller = identity.caller_in(event.subject, self.config.region)
        if caller or sender in wanted:
            sender_address, name = "", ""
        else:
            sender_address, name = sender, event.from_name or sender
        for ref in event.attachments:
            if not _is_fax_attachment(ref):
                continue
            data = await self.objects.get(ref)
            fax_id = fax_id_for("email", meta.event_id, ref.bucket, ref.object_name)
            origin = fax_pb2.FaxOrigin(
                intake=fax_pb2.FAX_INTAKE_EMAIL,
                reference=meta.event_id,
                filename=ref.filename,
                received_by=received_by or sender,
                caller_id_name=name,
                caller_id_number=caller,
                sender_address=sender_address,
            )
            await accept(
                self.objects, self.notifier, self.config.bucket, meta.tenant, fax_id, data, origin
            )


def _is_fax_attachment(ref: contact_pb2.AttachmentRef) -> bool:
    content_type = ref.content_type.split(";")[0].strip().lower()
    return content_type in FAX_TYPES or ref.filename.lower().endswith(FAX_SUFFIXES)


def _subject(text: str, pages: int) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    label = f"Fax, {pages} page{'s' if pages != 1 else ''}"
    return f"{label}: {first[:80]}" if first else label
