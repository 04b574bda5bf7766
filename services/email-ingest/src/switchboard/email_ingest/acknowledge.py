"""The automatic acknowledgement: when the case service opens a case for a mail that came in on
a mailbox with ``auto_acknowledge: true``, the customer gets a short reply carrying the case
number, threaded on their mail. The case number also joins the thread index, so a reply quoting
it finds the case.

Never to a machine: a mail recognised as automated (auto-replies, bounces, mailing lists) gets no
acknowledgement, and the outbound side refuses automatic mail to automated senders anyway.
"""

from __future__ import annotations

import logging
from typing import Protocol

from google.protobuf.message import Message

from switchboard.core import events
from switchboard.email_ingest.adapters.jetstream import EmailState
from switchboard.email_ingest.config import EmailConfig
from switchboard.email_ingest.domain import threads
from switchboard.v1 import case_events_pb2, contact_pb2, events_pb2

logger = logging.getLogger(__name__)

ACK_TEXT = (
    "Thank you for your message. We have opened case {reference} for it, and will answer as "
    "soon as we can.\n\nPlease keep {reference} in the subject when you write about it again.\n"
)


class Publisher(Protocol):
    async def publish(self, event: Message) -> object: ...


class Acknowledger:
    def __init__(self, config: EmailConfig, state: EmailState, publisher: Publisher) -> None:
        self.config = config
        self.state = state
        self.publisher = publisher

    async def on_case_created(self, event: case_events_pb2.CaseCreated) -> None:
        if not event.contact_id or not event.reference:
            return  # opened by hand or by a schedule, not by a mail
        entry = await self.state.thread(threads.key("contact", event.contact_id))
        if entry is None:
            return  # not a mail of ours
        tenant = event.meta.tenant
        # Replies that quote the number thread into the case, whatever their headers.
        entry.case_id, entry.case_reference = event.case_id, event.reference
        await self.state.put_threads(
            [
                threads.key("contact", event.contact_id),
                threads.key("conv", tenant, entry.conversation_id),
                threads.key("case", tenant, event.reference),
            ],
            entry,
        )
        try:
            mailbox = self.config.mailbox(entry.mailbox)
        except Exception:
            return
        if not mailbox.auto_acknowledge or entry.automated:
            return
        await self.publisher.publish(
            events_pb2.OutboundEmail(
                # One acknowledgement per case: a redelivery is a JetStream duplicate, and the
                # outbound side never sends the same command twice.
                meta=events.new_meta(
                    tenant, contact_pb2.CHANNEL_EMAIL, "email-ingest", f"{event.case_id}:ack"
                ),
                contact_id=event.contact_id,
                case_id=event.case_id,
                case_reference=event.reference,
                text=ACK_TEXT.format(reference=event.reference),
                kind="acknowledgement",
            )
        )
        logger.info("case %s acknowledged to its customer", event.reference)
