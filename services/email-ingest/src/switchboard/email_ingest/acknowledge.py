"""The automatic acknowledgement: when the case service opens a case for a mail that came in on
a mailbox with ``auto_acknowledge: true``, the customer gets a short reply carrying the case
number, threaded on their mail. The case number also joins the thread index, so a reply quoting
it finds the case.

Never to a machine: a mail recognised as automated (auto-replies, bounces, mailing lists) gets no
acknowledgement, and the outbound side refuses automatic mail to automated senders anyway.
"""

from __future__ import annotations

import logging

from switchboard.email_ingest.adapters.jetstream import EmailState
from switchboard.email_ingest.config import EmailConfig
from switchboard.email_ingest.domain import threads
from switchboard.email_ingest.notifier import EmailNotifier
from switchboard.v1 import case_events_pb2

logger = logging.getLogger(__name__)

ACK_TEXT = (
    "Thank you for your message. We have opened case {reference} for it, and will answer as "
    "soon as we can.\n\nPlease keep {reference} in the subject when you write about it again.\n"
)


class Acknowledger:
    def __init__(self, config: EmailConfig, state: EmailState, notifier: EmailNotifier) -> None:
        self.config = config
        self.state = state
        self.notifier = notifier

    async def on_customer_erased(self, event: case_events_pb2.CustomerErased) -> None:
        """Forget the erased customer's threads: an acknowledgement never reaches them, and a
        mail of theirs threads as a new conversation."""
        purged = await self.state.forget_contacts(event.meta.tenant, event.contact_ids)
        if purged:
            logger.info("purged %d thread-index keys of an erased customer", purged)

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
        await self.notifier.acknowledgement(
            tenant,
            event.case_id,
            event.contact_id,
            event.reference,
            ACK_TEXT.format(reference=event.reference),
        )
        logger.info("case %s acknowledged to its customer", event.reference)
