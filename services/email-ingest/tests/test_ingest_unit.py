"""Ingesting mail and sending replies on fakes of the email channel's stores (no nats-server, no
IMAP, no SMTP): a mail becomes one contact, whatever the number of times it is fetched; what
cannot become a contact is quarantined with its reason; attachments are stored once and
referenced; a reply goes out threaded, once per command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from switchboard.core import events
from switchboard.email_ingest.adapters.jetstream import OBJECTS, EmailObjects, EmailState
from switchboard.email_ingest.config import EmailConfig
from switchboard.email_ingest.domain import threads
from switchboard.email_ingest.ingest import Incoming, Ingestor, Limits, Prepared
from switchboard.email_ingest.notifier import EmailNotifier
from switchboard.email_ingest.outbound import Permanent, Relay, Sender
from switchboard.testing.fakes import FakeKeyValue, FakeMailer, FakeObjectStore, FakePublisher
from switchboard.v1 import contact_pb2, email_pb2, events_pb2

TENANT = "demo"
EMAIL = contact_pb2.CHANNEL_EMAIL


@dataclass
class Parts:
    config: EmailConfig
    seen: FakeKeyValue
    threads: FakeKeyValue
    obs: FakeObjectStore
    bus: FakePublisher
    state: EmailState
    objects: EmailObjects
    ingestor: Ingestor

    async def ingest(self, raw: bytes, **incoming: Any) -> Prepared:
        mailbox = self.config.mailboxes[0]
        origin = email_pb2.EmailOrigin(intake=email_pb2.EMAIL_INTAKE_IMAP, mailbox=mailbox.name)
        return await self.ingestor.ingest(Incoming(raw, mailbox, origin, **incoming))

    def restarted(self, limits: Limits | None = None) -> Ingestor:
        """A new ingestor on the same stores, as after a restart."""
        return Ingestor(self.config, self.state, self.objects, EmailNotifier(self.bus), limits)


@pytest.fixture
def parts(make_config: Callable[..., EmailConfig]) -> Parts:
    config = make_config(None)
    seen, thread_index, obs = (
        FakeKeyValue("seen"),
        FakeKeyValue("threads"),
        FakeObjectStore(OBJECTS),
    )
    state = EmailState(FakeKeyValue("checkpoints"), thread_index, seen, FakeKeyValue("sent"))
    objects = EmailObjects(obs)
    bus = FakePublisher()
    ingestor = Ingestor(config, state, objects, EmailNotifier(bus))
    return Parts(config, seen, thread_index, obs, bus, state, objects, ingestor)


def with_attachment(raw: bytes, filename: str, data: bytes) -> bytes:
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    msg.add_attachment(data, maintype="application", subtype="pdf", filename=filename)
    return msg.as_bytes(policy=policy.SMTP)


# ---- a mail becomes a contact ------------------------------------------------------------------


async def test_a_mail_becomes_a_contact_with_its_raw_message_kept(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    raw = make_mail(
        subject="Login error",
        text="I get an error when I log in.",
        message_id="<m1@example.com>",
        Content_Language="en",
    )
    prepared = await parts.ingest(raw)

    assert not prepared.duplicate and not prepared.quarantined
    assert [type(e).__name__ for e in parts.bus.events] == ["ContactCreated", "EmailReceived"]
    [created] = parts.bus.of(events_pb2.ContactCreated)
    [received] = parts.bus.of(email_pb2.EmailReceived)
    contact = created.contact
    assert created.meta.tenant == TENANT and created.meta.channel == EMAIL
    assert events.subject_of(created) == "contact.demo.email.created"
    assert contact.contact_id == prepared.contact_id == received.contact_id
    assert [(i.kind, i.value) for i in contact.identities] == [
        (contact_pb2.IDENTITY_KIND_EMAIL, "customer@example.com")
    ]
    assert contact.subject == "Login error" and contact.language == "en"
    assert contact.queue == "email" and list(contact.skills) == ["technical"]
    assert contact.content[0].text.strip() == "I get an error when I log in."
    assert contact.conversation_id == contact.contact_id  # a new thread
    assert received.message_id == "m1@example.com" and received.threaded_by == "new"
    # The raw message is kept, under the reference the event carries.
    assert received.raw.bucket == OBJECTS
    assert parts.obs.objects[received.raw.object_name] == raw
    # Seen only now, and its thread indexed by Message-ID.
    assert parts.seen.values() == {prepared.seen_key: contact.contact_id.encode()}
    entry = await parts.state.thread(threads.key("mid", TENANT, "m1@example.com"))
    assert entry is not None and entry.contact_id == contact.contact_id


async def test_a_reply_joins_the_conversation_of_the_mail_it_answers(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    first = await parts.ingest(make_mail(message_id="<q@example.com>", Content_Language="en"))
    reply = make_mail(
        subject="Re: Hello",
        message_id="<r@example.com>",
        In_Reply_To="<q@example.com>",
        Content_Language="en",
    )
    await parts.ingest(reply)
    _, received = parts.bus.of(email_pb2.EmailReceived)
    assert received.threaded_by == "in-reply-to"
    assert received.conversation_id == first.contact_id != received.contact_id
    # The contact names the mail it answers, for the case service (a reply to its survey).
    _, created = parts.bus.of(events_pb2.ContactCreated)
    assert created.contact.in_reply_to == "q@example.com"
    assert list(created.contact.references) == list(received.references)


async def test_a_mail_fetched_twice_becomes_one_contact(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    raw = make_mail(message_id="<twice@example.com>", Content_Language="en")
    first = await parts.ingest(raw)
    # The same mail again: in one batch, after it was published, and after a restart.
    batch = await parts.ingestor.ingest_many(
        [
            Incoming(raw, parts.config.mailboxes[0], email_pb2.EmailOrigin()),
            Incoming(raw, parts.config.mailboxes[0], email_pb2.EmailOrigin()),
        ]
    )
    restarted = parts.restarted()
    again = await restarted.ingest(
        Incoming(raw, parts.config.mailboxes[0], email_pb2.EmailOrigin())
    )

    assert [p.duplicate for p in [*batch, again]] == [True, True, True]
    assert [p.seen_key for p in batch] == [first.seen_key] * 2
    assert len(parts.bus.of(events_pb2.ContactCreated)) == 1
    assert len(parts.bus.of(email_pb2.EmailReceived)) == 1


async def test_the_same_new_mail_twice_in_one_batch_is_published_once(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    raw = make_mail(message_id="<batch@example.com>", Content_Language="en")
    box = parts.config.mailboxes[0]
    smtp = email_pb2.EmailOrigin(intake=email_pb2.EMAIL_INTAKE_SMTP)
    imap = email_pb2.EmailOrigin(intake=email_pb2.EMAIL_INTAKE_IMAP)
    first, second = await parts.ingestor.ingest_many(
        [Incoming(raw, box, smtp), Incoming(raw, box, imap)]
    )
    assert not first.duplicate and second.duplicate
    assert len(parts.bus.of(events_pb2.ContactCreated)) == 1


async def test_a_mail_whose_events_were_not_stored_is_not_marked_seen(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    raw = make_mail(message_id="<lost@example.com>", Content_Language="en")
    parts.bus.fail = TimeoutError("no JetStream ack")
    with pytest.raises(TimeoutError):
        await parts.ingest(raw)
    assert parts.seen.values() == {}  # so the mail is fetched and published again
    parts.bus.fail = None
    again = await parts.ingest(raw)
    assert not again.duplicate
    assert len(parts.bus.of(events_pb2.ContactCreated)) == 1


# ---- what cannot become a contact --------------------------------------------------------------


async def test_a_mail_without_sender_text_or_attachment_is_quarantined_with_its_reason(
    parts: Parts,
) -> None:
    raw = b"X-Garbage: \xff\xfe\r\n\r\n"
    prepared = await parts.ingest(raw)
    await parts.ingest(raw)  # fetched again: quarantined once

    assert prepared.quarantined.startswith("no sender, no text and no attachments")
    assert [type(e).__name__ for e in parts.bus.events] == ["EmailQuarantined"]
    [quarantined] = parts.bus.of(email_pb2.EmailQuarantined)
    assert quarantined.reason == prepared.quarantined
    assert quarantined.quarantine_id == prepared.contact_id
    assert parts.obs.objects[quarantined.raw.object_name] == raw
    assert list(parts.seen.values().values()) == [f"q:{prepared.contact_id}".encode()]


async def test_an_oversize_mail_is_quarantined_not_decoded(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    ingestor = parts.restarted(Limits(max_message_bytes=1000))
    raw = make_mail(text="x" * 2000, message_id="<big@example.com>")
    box = parts.config.mailboxes[0]
    prepared = await ingestor.ingest(Incoming(raw, box, email_pb2.EmailOrigin()))

    [quarantined] = parts.bus.of(email_pb2.EmailQuarantined)
    assert (
        quarantined.reason
        == (f"message of {len(raw)} bytes exceeds the limit of 1000 bytes")
        == prepared.quarantined
    )
    assert quarantined.message_id == "big@example.com"
    assert not parts.bus.of(events_pb2.ContactCreated)


# ---- attachments -------------------------------------------------------------------------------


async def test_attachments_are_stored_once_and_referenced(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    pdf = b"%PDF-1.4 invoice"
    one = with_attachment(make_mail(message_id="<a1@example.com>"), "invoice.pdf", pdf)
    two = with_attachment(make_mail(message_id="<a2@example.com>"), "copy.pdf", pdf)
    await parts.ingest(one)
    await parts.ingest(two)

    first, second = parts.bus.of(email_pb2.EmailReceived)
    [ref] = first.attachments
    assert (ref.bucket, ref.filename, ref.content_type) == (
        OBJECTS,
        "invoice.pdf",
        "application/pdf",
    )
    assert ref.size_bytes == len(pdf) and ref.object_name.startswith(f"{TENANT}/attachments/")
    assert parts.obs.objects[ref.object_name] == pdf
    [created, _] = parts.bus.of(events_pb2.ContactCreated)
    assert list(created.contact.attachments) == [ref]
    # The same content in another mail is the same object, stored once (each raw message too).
    assert second.attachments[0].object_name == ref.object_name
    assert parts.obs.puts == 3


async def test_an_attachment_over_the_limit_is_kept_only_in_the_raw_message(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    ingestor = parts.restarted(Limits(max_attachment_bytes=10))
    raw = with_attachment(make_mail(message_id="<large@example.com>"), "big.pdf", b"%PDF" * 10)
    await ingestor.ingest(Incoming(raw, parts.config.mailboxes[0], email_pb2.EmailOrigin()))

    [received] = parts.bus.of(email_pb2.EmailReceived)
    assert not received.attachments
    assert any("'big.pdf' of 40 bytes over the limit of 10" in p for p in received.problems)
    assert list(parts.obs.objects) == [received.raw.object_name]


# ---- replies -----------------------------------------------------------------------------------


class MailerSender(Sender):
    """The sender with a FakeMailer for its SMTP relay (the relay itself is tested against a
    real SMTP server in test_smtp_and_roundtrip.py)."""

    def __init__(self, parts: Parts, mailer: FakeMailer) -> None:
        relay = Relay("unused.invalid", 25, attempts=3, backoff=0.0)
        super().__init__(parts.config, parts.state, parts.objects, parts.ingestor.notifier, relay)
        self.mailer = mailer
        self.messages: list[EmailMessage] = []

    async def _send(self, message: EmailMessage) -> str:
        self.messages.append(message)
        to = str(message["To"]).split(", ")
        text = message.get_body(("plain",))
        body = text.get_content() if text is not None else ""  # type: ignore[attr-defined]
        await self.mailer.send(to, str(message["Subject"]), body, str(message["Message-ID"]))
        return "250 queued"


def outbound(contact_id: str, text: str = "We have reset your password.", **fields: Any) -> Any:
    return events_pb2.OutboundEmail(
        meta=events.new_meta(TENANT, EMAIL, "case", "reply-1"),
        contact_id=contact_id,
        text=text,
        **fields,
    )


def statuses(bus: FakePublisher) -> list[tuple[str, str]]:
    return [
        (events_pb2.DeliveryState.Name(s.state), s.detail)
        for s in bus.of(events_pb2.DeliveryStatus)
    ]


async def test_a_reply_is_sent_threaded_to_the_customer_once(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    mailer = FakeMailer()
    sender = MailerSender(parts, mailer)
    asked = await parts.ingest(make_mail(message_id="<ask@example.com>", Content_Language="en"))
    command = outbound(asked.contact_id)
    await sender.handle(command)
    await sender.handle(command)  # redelivered: not sent again

    [message] = sender.messages
    assert mailer.sent == [message["Message-ID"]]
    assert message["To"] == "customer@example.com"
    assert message["In-Reply-To"] == "<ask@example.com>"
    assert message["Subject"] == "Re: Hello"
    assert message["From"] == "Demo Support <support@demo.example>"
    assert [name for name, _ in statuses(parts.bus)] == ["DELIVERY_STATE_SENT"]
    [copy] = parts.bus.of(events_pb2.MessageAdded)
    assert copy.message.contact_id == asked.contact_id
    assert copy.message.author == contact_pb2.AUTHOR_AGENT
    assert copy.message.parts[0].text == "We have reset your password."
    # The customer's answer to the reply threads back to the same conversation.
    sent_id = str(message["Message-ID"]).strip("<>")
    entry = await parts.state.thread(threads.key("mid", TENANT, sent_id))
    assert entry is not None and entry.contact_id == asked.contact_id


async def test_a_failed_send_is_retried_then_reported_sent(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    sender = MailerSender(parts, FakeMailer(failures=1))
    asked = await parts.ingest(make_mail(Content_Language="en"))
    await sender.handle(outbound(asked.contact_id))
    assert statuses(parts.bus) == [
        ("DELIVERY_STATE_RETRYING", "ConnectionRefusedError: smtp is away"),
        ("DELIVERY_STATE_SENT", "250 queued"),
    ]
    assert len(sender.mailer.sent) == 1


async def test_a_reply_with_nobody_to_send_to_fails_clearly(parts: Parts) -> None:
    sender = MailerSender(parts, FakeMailer())
    await sender.handle(outbound(""))
    assert statuses(parts.bus) == [("DELIVERY_STATE_FAILED", "no recipient")]
    assert sender.mailer.sent == [] and not parts.bus.of(events_pb2.MessageAdded)


async def test_a_reply_whose_attachment_is_not_stored_is_refused_naming_it(
    parts: Parts, make_mail: Callable[..., bytes]
) -> None:
    sender = MailerSender(parts, FakeMailer())
    asked = await parts.ingest(make_mail(Content_Language="en"))
    kept = await parts.objects.put(TENANT, "attachments", "a.pdf", "application/pdf", b"%PDF")
    missing = contact_pb2.AttachmentRef(bucket=OBJECTS, object_name="demo/attachments/none")
    with pytest.raises(Permanent, match="attachment demo/attachments/none not found in email"):
        await sender.handle(outbound(asked.contact_id, attachments=[kept, missing]))
    assert sender.mailer.sent == []

    await sender.handle(outbound(asked.contact_id, attachments=[kept]))
    [message] = sender.messages
    [attached] = list(message.iter_attachments())
    assert attached.get_filename() == "a.pdf" and attached.get_content() == b"%PDF"


# ---- answers to the satisfaction survey --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "headers", "answer"),
    [
        ("5", {"In_Reply_To": "<survey>"}, 5),
        ("５\n\nOn Mon, Demo Support wrote:\n> How did we do?", {"In_Reply_To": "<survey>"}, 5),
        ("4점\n\n-- \n김민지 드림", {"In_Reply_To": "<survey>"}, 4),
        ("3", {"References": "<ask@example.com> <survey>"}, 3),
        ("2", {"Subject": "RE: How did we do? [#C-7K3M9Q] [CSAT]"}, 2),
        # more to say: a request for an agent
        ("5 stars but the fix broke my printer", {"In_Reply_To": "<survey>"}, 0),
        ("1\n\nThe problem came back.", {"In_Reply_To": "<survey>"}, 0),
        # a number in answer to another mail is a message like any other
        ("5", {"In_Reply_To": "<ask@example.com>"}, 0),
    ],
)
async def test_a_bare_rating_in_answer_to_the_survey_is_marked_as_the_answer(
    parts: Parts,
    make_mail: Callable[..., bytes],
    text: str,
    headers: dict[str, str],
    answer: int,
) -> None:
    sender = MailerSender(parts, FakeMailer())
    asked = await parts.ingest(make_mail(message_id="<ask@example.com>", Content_Language="en"))
    survey = outbound(
        asked.contact_id,
        "How satisfied are you? Reply with 1 to 5.",
        kind="survey",
        case_id="case-1",
        case_reference="C-7K3M9Q",
        subject="How did we do? [#C-7K3M9Q] [CSAT]",
    )
    await sender.handle(survey)
    [sent] = sender.messages
    fields = {"Content_Language": "en", **headers}
    for name, value in fields.items():
        fields[name] = value.replace("<survey>", str(sent["Message-ID"]))
    subject = fields.pop("Subject", "Re: Hello")
    await parts.ingest(
        make_mail(subject=subject, text=text, message_id="<r@example.com>", **fields)
    )
    _, created = parts.bus.of(events_pb2.ContactCreated)
    assert created.contact.survey_answer == answer
    if answer:
        assert created.contact.case_id == "case-1"  # threaded into the surveyed case
