"""From raw mail to contact events: decode, de-duplicate, thread, route, keep the raw message and
the attachments, publish; and only then record the mail as seen and index its thread.

Every mail is keyed by its tenant, Message-ID and the hash of its bytes: the same mail fetched
twice (a restart before the checkpoint moved, a UIDVALIDITY reset, SMTP and IMAP both) becomes
one contact, and its ids are derived from that key so a re-publish is a JetStream duplicate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from switchboard.core import events, sender_keys, survey_answers
from switchboard.core.language import detect
from switchboard.core.quarantine import Kept, QuarantineIndex
from switchboard.email_ingest.adapters.jetstream import EmailObjects, EmailState
from switchboard.email_ingest.config import EmailConfig, Mailbox
from switchboard.email_ingest.decoding import Decoder, Raw
from switchboard.email_ingest.domain import loops, mime, routing, threads
from switchboard.email_ingest.notifier import EMAIL, SOURCE, EmailNotifier
from switchboard.v1 import contact_pb2, email_pb2, events_pb2

logger = logging.getLogger(__name__)

SUBJECT_THREAD_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 25 * 1024 * 1024
    max_attachment_bytes: int = 20 * 1024 * 1024
    max_attachments: int = 50


@dataclass
class Incoming:
    raw: bytes
    mailbox: Mailbox
    origin: email_pb2.EmailOrigin
    recipients: list[str] = field(default_factory=list)  # the SMTP envelope's, if any
    size: int = 0  # the full size when `raw` is only the header of an oversize mail


@dataclass
class Read:
    """A mail decoded and named in the seen set, not yet looked up or published."""

    incoming: Incoming
    key: str  # in the seen set
    raw_hash: str
    mail: mime.ParsedMail
    quarantine: str = ""  # the reason, when it cannot become a contact
    language: tuple[str, float] | None = None  # detected while decoding, when it says none


@dataclass(frozen=True)
class Threading:
    """A new mail's route, the thread-index keys it is threaded by (`thread_lookups`), its
    rating when it is nothing but one, and the key that says whether that rating answers a
    survey (`survey_lookup`), worked out once: for the batch's look-up, then for the mail's own
    threading."""

    route: routing.RouteDecision
    lookups: list[tuple[str, str, str]]
    rating: int | None = None
    survey: str = ""

    @classmethod
    def of(cls, inc: Incoming, mail: mime.ParsedMail) -> Threading:
        recipients = list(inc.recipients) or mail.to + mail.cc
        route = routing.route(inc.mailbox, recipients, mail.subject, mail.new_text or mail.body)
        tenant = route.tenant
        rating = survey_answers.bare_rating(mail.new_text or mail.body)
        survey = survey_lookup(tenant, mail) if rating is not None else ""
        return cls(route, thread_lookups(tenant, mail, inc), rating, survey)

    def keys(self) -> list[str]:
        """Every thread-index key this mail may be looked up by."""
        return [key for key, _, _ in self.lookups] + ([self.survey] if self.survey else [])


@dataclass
class Prepared:
    incoming: Incoming
    seen_key: str
    contact_id: str = ""
    events: list[Message] = field(default_factory=list)
    duplicate: bool = False
    quarantined: str = ""  # the reason, when quarantined
    thread_keys: list[str] = field(default_factory=list)
    entry: email_pb2.ThreadEntry | None = None
    # Objects its events refer to, stored (concurrently for the whole batch) before they go out.
    objects: list[tuple[contact_pb2.AttachmentRef, bytes]] = field(default_factory=list)
    kept: Kept | None = None  # a quarantined mail, as the quarantine index names it


class Ingestor:
    def __init__(
        self,
        config: EmailConfig,
        state: EmailState,
        objects: EmailObjects,
        notifier: EmailNotifier,
        limits: Limits | None = None,
        decoder: Decoder | None = None,
        quarantine: QuarantineIndex | None = None,
        sender_key: bytes = b"",
    ) -> None:
        """`quarantine` names each quarantined mail by its sender (an address keyed with
        `sender_key`, switchboard.core.sender_keys), for erasure and retention."""
        self.config = config
        self.quarantine = quarantine
        self.sender_key = sender_key
        self.state = state
        self.objects = objects
        self.notifier = notifier
        self.limits = limits or Limits()
        # Inline unless given one with worker processes.
        self.decoder = decoder or Decoder()
        # Thread entries of mails prepared but not yet committed: a reply fetched in the same batch
        # as the mail it answers still finds its thread.
        self._pending_threads: dict[str, email_pb2.ThreadEntry] = {}

    async def ingest(self, incoming: Incoming) -> Prepared:
        """Publish one mail and return once JetStream has stored its events."""
        return (await self.ingest_many([incoming]))[0]

    async def ingest_many(self, batch: list[Incoming]) -> list[Prepared]:
        """Publish a batch pipelined; every event is stored when this returns (then the source
        may be acknowledged)."""
        return await self.ingest_decoded(await self.decode(batch))

    async def ingest_decoded(self, reads: list[Read]) -> list[Prepared]:
        """`ingest_many` of a batch already decoded (a source may decode its next batch while
        this one is published)."""
        prepared: list[Prepared] = []
        try:
            # Every seen-set look-up at once; threading still runs in the batch's order, so a
            # reply finds the mail it answers when both are in this batch.
            seen = await self.state.seen_ids([r.key for r in reads])
            # Every thread-index key the batch's new mail is threaded by, at once too (each
            # answer stands for the index before this batch; what the batch itself adds is
            # found in the pending entries first).
            plans: dict[int, Threading] = {}
            for n, (read, seen_as) in enumerate(zip(reads, seen, strict=True)):
                if not seen_as and not read.quarantine:
                    plans[n] = Threading.of(read.incoming, read.mail)
            keys = dict.fromkeys(k for plan in plans.values() for k in plan.keys())
            looked_up = await self.state.threads_of(list(keys))
            first: dict[str, str] = {}
            for n, (read, seen_as) in enumerate(zip(reads, seen, strict=True)):
                # The same mail twice in one batch is published once.
                p = await self._decide(
                    read, seen_as or first.get(read.key, ""), plans.get(n), looked_up
                )
                if not p.duplicate:
                    first[read.key] = ("q:" if p.quarantined else "") + p.contact_id
                prepared.append(p)
                if p.entry is not None and not p.duplicate:
                    for k in p.thread_keys:
                        self._pending_threads[k] = p.entry
            await self.index_quarantined(prepared)
            await self.store_objects(prepared)
            await self.publish(prepared)
            await self.commit(prepared)
        finally:
            for p in prepared:
                for k in p.thread_keys:
                    if self._pending_threads.get(k) is p.entry:
                        del self._pending_threads[k]
        return prepared

    async def _thread_entry(
        self, key: str, looked_up: dict[str, email_pb2.ThreadEntry | None] | None = None
    ) -> email_pb2.ThreadEntry | None:
        """The thread index's entry of `key`: one of a mail prepared but not committed yet, or
        the index's (from `looked_up`, the batch's look-ups, when it has the key)."""
        pending = self._pending_threads.get(key)
        if pending is not None:
            return pending
        if looked_up is not None and key in looked_up:
            return looked_up[key]
        return await self.state.thread(key)

    async def index_quarantined(self, prepared: list[Prepared]) -> None:
        """Name the batch's quarantined mails in the quarantine index before anything of them is
        stored, so that what is stored is found by erasure and retention, even after a crash."""
        if self.quarantine is None:
            return
        for p in prepared:
            if p.kept is not None and not p.duplicate:
                await self.quarantine.add(p.kept)

    async def store_objects(self, prepared: list[Prepared]) -> None:
        """Raw messages and attachments of the batch, stored concurrently (one batch's wait
        rather than one per object); the same content in two mails is stored once."""
        pending = {
            ref.object_name: (ref, data)
            for p in prepared
            if not p.duplicate
            for ref, data in p.objects
        }
        await self.objects.store_many(list(pending.values()))

    async def publish(self, prepared: list[Prepared]) -> None:
        await self.notifier.mail_events([e for p in prepared if not p.duplicate for e in p.events])

    async def commit(self, prepared: list[Prepared]) -> None:
        new = [p for p in prepared if not p.duplicate]
        # In batch order, so where two mails index the same key (a reply and the mail it answers
        # share their conversation's), the later mail's entry is the one kept.
        await self.state.record(
            [(p.thread_keys, p.entry) for p in new if p.entry is not None],
            [(p.seen_key, ("q:" if p.quarantined else "") + p.contact_id) for p in new],
        )

    # ---- one mail ------------------------------------------------------------------------------

    async def prepare(self, inc: Incoming) -> Prepared:
        (read,) = await self.decode([inc])
        return await self._decide(read, await self.state.seen_id(read.key))

    async def decode(self, batch: list[Incoming]) -> list[Read]:
        """Decode the mails and name each in the seen set (see `decoding`; no I/O)."""
        decoded = await self.decoder.decode(
            [Raw(inc.raw, inc.size, inc.mailbox.tenant) for inc in batch],
            self.limits.max_message_bytes,
        )
        return [
            Read(inc, d.key, d.raw_hash, d.mail, d.quarantine, d.language)
            for inc, d in zip(batch, decoded, strict=True)
        ]

    async def _decide(
        self,
        read: Read,
        seen: str,
        plan: Threading | None = None,
        looked_up: dict[str, email_pb2.ThreadEntry | None] | None = None,
    ) -> Prepared:
        if seen:
            return Prepared(
                read.incoming,
                read.key,
                duplicate=True,
                quarantined="already quarantined" if seen.startswith("q:") else "",
            )
        if read.quarantine:
            return self._quarantine(read.incoming, read.key, read.mail, read.quarantine)
        return await self._contact(
            read.incoming, read.key, read.raw_hash, read.mail, read.language, plan, looked_up
        )

    def _quarantine(self, inc: Incoming, key: str, mail: mime.ParsedMail, reason: str) -> Prepared:
        tenant = inc.mailbox.tenant
        raw = self.objects.ref(tenant, "raw", "message.eml", "message/rfc822", inc.raw)
        qid = key[:32]
        event = email_pb2.EmailQuarantined(
            meta=events.new_meta(tenant, EMAIL, SOURCE, f"{qid}:quarantined"),
            quarantine_id=qid,
            origin=inc.origin,
            reason=reason,
            raw=raw,
            message_id=mail.message_id,
            from_address=mail.from_address,
            subject=mail.subject,
            size_bytes=max(inc.size, len(inc.raw)),
        )
        logger.warning("mail %s in %s quarantined: %s", qid, inc.mailbox.name, reason)
        origin = inc.origin
        # Over IMAP it stays in the folder, flagged: it is deleted there too.
        where: dict[str, str | int] = (
            {
                "mailbox": inc.mailbox.name,
                "folder": inc.mailbox.imap.folder,
                "uidvalidity": origin.uidvalidity,
                "uid": origin.uid,
            }
            if origin.uid and inc.mailbox.imap is not None
            else {}
        )
        sender = sender_keys.sender_key(
            self.sender_key, tenant, contact_pb2.IDENTITY_KIND_EMAIL, mail.from_address
        )
        kept = Kept(
            tenant,
            qid,
            datetime.now(UTC),
            (f"{raw.bucket}/{raw.object_name}",),
            where,
            (sender,) if sender else (),
        )
        return Prepared(
            inc,
            key,
            contact_id=qid,
            events=[event],
            quarantined=reason,
            objects=[(raw, inc.raw)],
            kept=kept,
        )

    async def _thread(
        self,
        lookups: list[tuple[str, str, str]],
        looked_up: dict[str, email_pb2.ThreadEntry | None] | None = None,
    ) -> tuple[email_pb2.ThreadEntry | None, str, str]:
        """(thread entry, how it was found, case reference from a token), by `lookups` (see
        `thread_lookups`) tried in order."""
        for key, how, reference in lookups:
            entry = await self._thread_entry(key, looked_up)
            if reference:  # a case named by a token: its thread, or a new one of that case
                return entry, how, reference
            if entry is not None and (
                how != "subject"
                or datetime.now(UTC) - entry.updated_at.ToDatetime(UTC) < SUBJECT_THREAD_WINDOW
            ):
                return entry, how, ""
        return None, "new", ""

    async def _survey_answer(
        self,
        mail: mime.ParsedMail,
        plan: Threading,
        looked_up: dict[str, email_pb2.ThreadEntry | None] | None = None,
    ) -> int:
        """The rating (1..5) of a mail that answers a satisfaction survey with nothing but it (its
        subject keeps the survey's token, or it replies to the survey mail); 0 for any other mail,
        which is routed (a reply with more to say is a request). Only a mail threaded into a case
        is asked: the survey is about one."""
        if plan.rating is None:
            return 0
        if has_survey_token(mail):
            return plan.rating
        if plan.survey and await self._thread_entry(plan.survey, looked_up):
            return plan.rating
        return 0

    async def _contact(
        self,
        inc: Incoming,
        key: str,
        raw_hash: str,
        mail: mime.ParsedMail,
        detected: tuple[str, float] | None = None,
        plan: Threading | None = None,
        looked_up: dict[str, email_pb2.ThreadEntry | None] | None = None,
    ) -> Prepared:
        mailbox = inc.mailbox
        plan = plan or Threading.of(inc, mail)
        decision = plan.route
        tenant = decision.tenant
        contact_id = key[:32]
        entry, threaded_by, reference = await self._thread(plan.lookups, looked_up)
        conversation_id = (
            entry.conversation_id if entry else (f"case-{reference}" if reference else contact_id)
        )
        case_reference = (entry.case_reference if entry else "") or reference
        case_id = (entry.case_id if entry else "") or case_reference
        language, probability = mail.content_language or decision.language, 1.0
        if not language:
            language, probability = detected or detect(
                f"{mail.subject}\n{mail.new_text or mail.body}"
            )
        automated = loops.automated(mail, self.config.own_addresses)
        survey_answer = (
            await self._survey_answer(mail, plan, looked_up) if case_id and not automated else 0
        )

        raw_ref = self.objects.ref(tenant, "raw", "message.eml", "message/rfc822", inc.raw)
        objects = [(raw_ref, inc.raw)]
        attachments: list[contact_pb2.AttachmentRef] = []
        for n, att in enumerate(mail.attachments):
            if n >= self.limits.max_attachments:
                mail.problems.append(
                    f"{len(mail.attachments) - n} attachments over the limit of {self.limits.max_attachments} kept only in the raw message"
                )
                break
            if len(att.data) > self.limits.max_attachment_bytes:
                mail.problems.append(
                    f"attachment {att.filename!r} of {len(att.data)} bytes over the limit of {self.limits.max_attachment_bytes} kept only in the raw message"
                )
                continue
            ref = self.objects.ref(tenant, "attachments", att.filename, att.content_type, att.data)
            attachments.append(ref)
            objects.append((ref, att.data))

        at = mail.date.astimezone(UTC) if mail.date and mail.date.tzinfo else datetime.now(UTC)
        contact = contact_pb2.Contact(
            contact_id=contact_id,
            tenant=tenant,
            channel=EMAIL,
            identities=[
                contact_pb2.CustomerIdentity(
                    kind=contact_pb2.IDENTITY_KIND_EMAIL, value=mail.from_address
                )
            ]
            if mail.from_address
            else [],
            customer_name=mail.from_name,
            language=language,
            skills=decision.skills,
            priority=decision.priority,
            queue=decision.queue,
            subject=mail.subject,
            content=[
                contact_pb2.ContentPart(content_type="text/plain", text=mail.new_text or mail.body)
            ],
            attachments=attachments,
            conversation_id=conversation_id,
            case_id=case_id,
            in_reply_to=mail.in_reply_to,
            references=mail.references,
            survey_answer=survey_answer,
        )
        contact.created_at.FromDatetime(datetime.now(UTC))
        received = email_pb2.EmailReceived(
            meta=events.new_meta(tenant, EMAIL, SOURCE, f"{contact_id}:email"),
            contact_id=contact_id,
            conversation_id=conversation_id,
            case_id=case_id,
            case_reference=case_reference,
            origin=inc.origin,
            message_id=mail.message_id,
            in_reply_to=mail.in_reply_to,
            references=mail.references,
            from_address=mail.from_address,
            from_name=mail.from_name,
            to=mail.to,
            cc=mail.cc,
            subject=mail.subject,
            text=mail.new_text,
            quoted=mail.quoted,
            signature=mail.signature,
            from_html=mail.from_html,
            language=language,
            language_probability=probability,
            matched_rules=decision.matched,
            threaded_by=threaded_by,
            raw=raw_ref,
            attachments=attachments,
            problems=mail.problems,
            automated=bool(automated),
            automated_reason=automated,
            content_hash=raw_hash,
            charsets=mail.charsets,
        )
        received.date.FromDatetime(at)
        created = events_pb2.ContactCreated(
            meta=events.new_meta(tenant, EMAIL, SOURCE, f"{contact_id}:created"), contact=contact
        )
        new_entry = email_pb2.ThreadEntry(
            tenant=tenant,
            conversation_id=conversation_id,
            contact_id=contact_id,
            case_id=case_id,
            case_reference=case_reference,
            subject=mail.subject,
            customer_address=mail.reply_to or mail.from_address,
            mailbox=mailbox.name,
            last_message_id=mail.message_id,
            references=[*mail.references, mail.message_id][-20:]
            if mail.message_id
            else mail.references[-20:],
            automated=bool(automated),
        )
        keys = [threads.key("contact", contact_id), threads.key("conv", tenant, conversation_id)]
        if mail.message_id:
            keys.append(threads.key("mid", tenant, mail.message_id))
        normalised = threads.normalise_subject(mail.subject)
        if mail.from_address and normalised:
            keys.append(threads.key("subj", tenant, mail.from_address, normalised))
        if case_reference:
            keys.append(threads.key("case", tenant, case_reference))
        return Prepared(
            inc,
            key,
            contact_id=contact_id,
            events=[created, received],
            thread_keys=keys,
            entry=new_entry,
            objects=objects,
        )


def has_survey_token(mail: mime.ParsedMail) -> bool:
    """The mail's subject keeps the survey's token (a reply to the survey mail's subject)."""
    return survey_answers.SURVEY_TOKEN.lower() in mail.subject.lower()


def survey_lookup(tenant: str, mail: mime.ParsedMail) -> str:
    """The thread-index key of the survey a bare rating answers (the survey mail it replies to),
    "" for a mail whose subject names the survey already, or that replies to no mail."""
    if has_survey_token(mail):
        return ""
    answered = mail.in_reply_to or (mail.references[-1] if mail.references else "")
    return threads.key("survey", tenant, answered) if answered else ""


def thread_lookups(tenant: str, mail: mime.ParsedMail, inc: Incoming) -> list[tuple[str, str, str]]:
    """The thread-index keys a mail is threaded by, in the order they are tried: (key, how,
    case reference). Its Message-IDs first (In-Reply-To, References from the latest, those of a
    bounced message); then a case named by a plus address or a token in the subject; failing
    that, a reply's sender and subject (within SUBJECT_THREAD_WINDOW of the thread's last mail)."""
    lookups = [
        (threads.key("mid", tenant, mid), how, "")
        for mid, how in (
            [(mail.in_reply_to, "in-reply-to")]
            + [(m, "references") for m in reversed(mail.references)]
            + [(m, "bounced-message") for m in mail.embedded_message_ids]
        )
        if mid
    ]
    reference, how = threads.plus_token(list(inc.recipients) + mail.to + mail.cc), "plus-address"
    if not reference:
        reference, how = threads.subject_token(mail.subject), "case-token"
    if reference:
        lookups.append((threads.key("case", tenant, reference), how, reference))
    elif mail.from_address and (
        mail.in_reply_to or mail.references or threads.is_reply_subject(mail.subject)
    ):
        normalised = threads.normalise_subject(mail.subject)
        if normalised:
            lookups.append(
                (threads.key("subj", tenant, mail.from_address, normalised), "subject", "")
            )
    return lookups
