"""Sending: an OutboundEmail command becomes a threaded mail sent over SMTP (aiosmtplib), with
retries and back-off, DeliveryStatus events, and the sent copy added to the contact.

The Message-ID is derived from the command id, so a command redelivered after a crash goes out
with the same Message-ID; a command already sent (recorded in key-value) is not sent again.
"""

from __future__ import annotations

import asyncio
import html
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

import aiosmtplib
from nats.js.client import JetStreamContext

from switchboard.email_ingest.adapters.jetstream import OBJECTS, EmailObjects, EmailState
from switchboard.email_ingest.config import EmailConfig, Mailbox
from switchboard.email_ingest.domain import threads
from switchboard.email_ingest.notifier import EmailNotifier
from switchboard.v1 import contact_pb2, email_pb2, events_pb2

logger = logging.getLogger(__name__)

AUTOMATIC_KINDS = ("acknowledgement", "notification", "survey")


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    username: str = ""
    password: str = ""
    security: str = "starttls"  # starttls (when offered; required with credentials), tls, none
    timeout: float = 30.0
    attempts: int = 5
    backoff: float = 2.0
    ca_file: str = ""  # trust this CA bundle for the relay's certificate (default: the system's)


class Permanent(Exception):
    """The relay refused the mail for good (5xx): no retry."""


class Sender:
    def __init__(
        self,
        config: EmailConfig,
        state: EmailState,
        objects: EmailObjects,
        notifier: EmailNotifier,
        relay: Relay,
        js: JetStreamContext | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.objects = objects
        self.notifier = notifier
        self.relay = relay
        self.js = js

    async def handle(self, cmd: events_pb2.OutboundEmail) -> None:
        """Send one command (idempotent per command id)."""
        command_id = cmd.meta.event_id
        tenant = cmd.meta.tenant
        if await self.state.sent_message_id(command_id):
            logger.info("outbound %s already sent", command_id)
            return
        entry = (
            await self.state.thread(threads.key("contact", cmd.contact_id))
            if cmd.contact_id
            else None
        )
        mailbox = None
        if entry is not None and entry.mailbox:
            mailbox = next((m for m in self.config.mailboxes if m.name == entry.mailbox), None)
        mailbox = mailbox or self.config.for_tenant(tenant)
        if mailbox is None:
            await self._status(
                cmd,
                entry,
                events_pb2.DELIVERY_STATE_FAILED,
                f"no mailbox configured for tenant {tenant}",
                0,
            )
            return
        if cmd.kind in AUTOMATIC_KINDS and entry is not None and entry.automated:
            await self._status(
                cmd,
                entry,
                events_pb2.DELIVERY_STATE_FAILED,
                f"not sent: an automatic {cmd.kind} to an automated sender would loop",
                0,
            )
            return
        recipients = list(cmd.to) or (
            [entry.customer_address] if entry and entry.customer_address else []
        )
        if not recipients:
            await self._status(cmd, entry, events_pb2.DELIVERY_STATE_FAILED, "no recipient", 0)
            return
        reference = (cmd.case_reference or (entry.case_reference if entry else "")).upper()
        message = await self._compose(cmd, entry, mailbox, recipients, reference)
        message_id = message["Message-ID"].strip("<>")
        detail = ""
        for attempt in range(1, max(1, self.relay.attempts) + 1):
            try:
                detail = await self._send(message)
                break
            except Permanent as exc:
                await self._status(
                    cmd, entry, events_pb2.DELIVERY_STATE_FAILED, str(exc), attempt, message_id
                )
                return
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                if attempt >= self.relay.attempts:
                    await self._status(
                        cmd,
                        entry,
                        events_pb2.DELIVERY_STATE_FAILED,
                        f"gave up after {attempt} attempts: {why}",
                        attempt,
                        message_id,
                    )
                    return
                await self._status(
                    cmd, entry, events_pb2.DELIVERY_STATE_RETRYING, why, attempt, message_id
                )
                await asyncio.sleep(self.relay.backoff * 2 ** (attempt - 1))
        await self.state.mark_sent(command_id, message_id)
        await self._index(cmd, entry, mailbox, message, reference)
        await self._status(cmd, entry, events_pb2.DELIVERY_STATE_SENT, detail, attempt, message_id)
        if cmd.contact_id:
            await self.notifier.sent_copy(cmd)

    async def _compose(
        self,
        cmd: events_pb2.OutboundEmail,
        entry: email_pb2.ThreadEntry | None,
        mailbox: Mailbox,
        recipients: list[str],
        reference: str,
    ) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = (
            formataddr((mailbox.display_name, mailbox.address))
            if mailbox.display_name
            else mailbox.address
        )
        if reference:
            # Replies come back to support+C-XXXXXX@...: the case token survives any subject edit.
            msg["Reply-To"] = threads.plus_address(mailbox.address, reference)
        msg["To"] = ", ".join(recipients)
        if cmd.cc:
            msg["Cc"] = ", ".join(cmd.cc)
        subject = cmd.subject or (f"Re: {entry.subject}" if entry and entry.subject else "")
        if entry and entry.subject and not cmd.subject and threads.is_reply_subject(entry.subject):
            subject = entry.subject
        msg["Subject"] = threads.with_token(subject, reference)
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = f"<{cmd.meta.event_id}.{reference.lower() or 'sb'}@{mailbox.domain}>"
        in_reply_to = cmd.in_reply_to.strip("<>") or (entry.last_message_id if entry else "")
        references = [r.strip("<>") for r in cmd.references] or (
            list(entry.references) if entry else []
        )
        if in_reply_to and in_reply_to not in references:
            references.append(in_reply_to)
        if in_reply_to:
            msg["In-Reply-To"] = f"<{in_reply_to}>"
        if references:
            msg["References"] = " ".join(f"<{r}>" for r in references[-20:])
        if cmd.kind and cmd.kind != "reply":
            msg["Auto-Submitted"] = (
                "auto-replied" if cmd.kind == "acknowledgement" else "auto-generated"
            )
        msg["X-Switchboard-Loop"] = cmd.meta.tenant
        msg.set_content(cmd.text or "")
        msg.add_alternative(cmd.html or _html_of(cmd.text), subtype="html")
        for ref in cmd.attachments:
            data = await self._attachment(ref)
            if data is None:
                raise Permanent(f"attachment {ref.object_name} not found in {ref.bucket}")
            maintype, _, subtype = (ref.content_type or "application/octet-stream").partition("/")
            msg.add_attachment(
                data, maintype=maintype, subtype=subtype or "octet-stream", filename=ref.filename
            )
        return msg

    async def _attachment(self, ref: contact_pb2.AttachmentRef) -> bytes | None:
        if ref.bucket in ("", OBJECTS):
            return await self.objects.get(ref.object_name)
        if self.js is None:
            return None
        store = await self.js.object_store(ref.bucket)
        result = await store.get(ref.object_name)
        return result.data or b""

    async def _send(self, message: EmailMessage) -> str:
        r = self.relay
        kwargs: dict[str, object] = {"hostname": r.host, "port": r.port, "timeout": r.timeout}
        if r.security == "tls":
            kwargs["use_tls"] = True
        elif r.security == "none":
            kwargs["start_tls"] = False
        else:
            # Upgrade when offered; with credentials, refuse to send them in the clear.
            kwargs["start_tls"] = True if r.username else None
        if r.username:
            kwargs["username"] = r.username
            kwargs["password"] = r.password
        if r.ca_file:
            kwargs["cert_bundle"] = r.ca_file
        try:
            errors, response = await aiosmtplib.send(message, **kwargs)  # type: ignore[arg-type]
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise Permanent(f"recipients refused: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise Permanent(f"{exc.code} {exc.message}") from exc
            raise
        if errors:
            raise Permanent(f"recipients refused: {errors}")
        return str(response)

    async def _index(
        self,
        cmd: events_pb2.OutboundEmail,
        entry: email_pb2.ThreadEntry | None,
        mailbox: Mailbox,
        message: EmailMessage,
        reference: str,
    ) -> None:
        """Record the sent Message-ID (and the case) so the customer's reply threads back."""
        tenant = cmd.meta.tenant
        message_id = message["Message-ID"].strip("<>")
        base = email_pb2.ThreadEntry()
        if entry is not None:
            base.CopyFrom(entry)
        base.tenant = tenant
        base.conversation_id = base.conversation_id or (
            f"case-{reference}" if reference else cmd.contact_id or message_id
        )
        base.contact_id = cmd.contact_id or base.contact_id
        base.case_id = cmd.case_id or base.case_id or reference
        base.case_reference = reference or base.case_reference
        base.mailbox = mailbox.name
        base.subject = str(message["Subject"])
        base.last_message_id = message_id
        refs = [r.strip("<>") for r in str(message.get("References", "")).split()] + [message_id]
        del base.references[:]
        base.references.extend(refs[-20:])
        if not base.customer_address and cmd.to:
            base.customer_address = cmd.to[0]
        keys = [
            threads.key("mid", tenant, message_id),
            threads.key("conv", tenant, base.conversation_id),
        ]
        if cmd.contact_id:
            keys.append(threads.key("contact", cmd.contact_id))
        if reference:
            keys.append(threads.key("case", tenant, reference))
        if cmd.kind == "survey":
            # A reply to this mail that is nothing but a rating answers the survey (ingest).
            keys.append(threads.key("survey", tenant, message_id))
        for address in cmd.to:
            normalised = threads.normalise_subject(base.subject)
            if normalised:
                keys.append(threads.key("subj", tenant, address.lower(), normalised))
        await self.state.put_threads(keys, base)

    async def _status(
        self,
        cmd: events_pb2.OutboundEmail,
        entry: email_pb2.ThreadEntry | None,
        state: int,
        detail: str,
        attempt: int,
        message_id: str = "",
    ) -> None:
        if state == events_pb2.DELIVERY_STATE_FAILED:
            logger.warning("outbound %s failed: %s", cmd.meta.event_id, detail)
        case_id = cmd.case_id or (entry.case_id if entry else "")
        await self.notifier.delivery_status(cmd, case_id, state, detail, attempt, message_id)


def _html_of(text: str) -> str:
    paragraphs = [p for p in (text or "").split("\n\n")]
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return f"<!DOCTYPE html><html><body>{body}</body></html>"
