"""The chat's one place for publishing contact events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from switchboard.chat.domain.model import CustomerProfile
from switchboard.core import events
from switchboard.core.publishing import Publisher
from switchboard.v1 import contact_pb2, events_pb2

SOURCE = "chat"
DEFAULT_QUEUE = "general"
OFFLINE_SUBJECT = "offline message"


def _text(text: str) -> contact_pb2.ContentPart:
    return contact_pb2.ContentPart(content_type="text/plain", text=text)


def message_event(
    tenant: str,
    contact_id: str,
    message_id: str,
    author: int,
    text: str,
    at: datetime,
    agent_id: str = "",
    attachment: contact_pb2.AttachmentRef | None = None,
) -> events_pb2.MessageAdded:
    """The MessageAdded a chat message is published as."""
    message = contact_pb2.Message(
        message_id=message_id,
        contact_id=contact_id,
        author=author,  # type: ignore[arg-type]
        agent_id=agent_id,
        parts=[_text(text)] if text else [],
        attachments=[attachment] if attachment is not None else [],
    )
    message.sent_at.FromDatetime(at)
    # The message id is the event id: a retried publish is de-duplicated by JetStream.
    meta = events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, SOURCE, message_id)
    return events_pb2.MessageAdded(meta=meta, message=message)


class ChatNotifier:
    """Publishes and returns once JetStream has stored the event."""

    def __init__(self, bus: Publisher) -> None:
        self.bus = bus

    async def contact_created(
        self,
        contact_id: str,
        profile: CustomerProfile,
        visitor_id: str,
        text: str,
        at: datetime,
        offline: bool = False,
    ) -> None:
        """A new chat contact; `offline` marks a message left while no agent could answer
        (subject "offline message", conversation id "offline:<visitor>", answered by email)."""
        identities = [
            contact_pb2.CustomerIdentity(
                kind=contact_pb2.IDENTITY_KIND_CHAT_VISITOR, value=visitor_id
            )
        ]
        if profile.email:
            identities.append(
                contact_pb2.CustomerIdentity(
                    kind=contact_pb2.IDENTITY_KIND_EMAIL, value=profile.email.lower()
                )
            )
        contact = contact_pb2.Contact(
            contact_id=contact_id,
            tenant=profile.tenant,
            channel=contact_pb2.CHANNEL_CHAT,
            identities=identities,
            customer_name=profile.name,
            language=profile.language,
            skills=[profile.topic] if profile.topic else [],
            queue=DEFAULT_QUEUE,
            content=[_text(text)],
            conversation_id=f"offline:{visitor_id}" if offline else visitor_id,
            subject=OFFLINE_SUBJECT if offline else "",
        )
        contact.created_at.FromDatetime(at)
        meta = events.new_meta(
            profile.tenant, contact_pb2.CHANNEL_CHAT, SOURCE, f"{contact_id}:created"
        )
        await self.bus.publish(events_pb2.ContactCreated(meta=meta, contact=contact))

    async def portal_contact(
        self,
        contact_id: str,
        tenant: str,
        email: str,
        name: str,
        language: str,
        subject: str,
        text: str,
        at: datetime,
        case_id: str = "",
        skills: list[str] | None = None,
        queue: str = "",
        priority: int = 0,
        template: str = "",
        form: dict[str, str] | None = None,
    ) -> None:
        """A customer's request or reply written in the portal: a contact routed like any
        other, threaded into `case_id` when it answers a case, and answered by email (its
        conversation id is "offline:portal:<contact id>", as an offline message's). A request
        from the catalogue names its case template and carries the filled form."""
        contact = contact_pb2.Contact(
            contact_id=contact_id,
            tenant=tenant,
            channel=contact_pb2.CHANNEL_CHAT,
            identities=[
                contact_pb2.CustomerIdentity(
                    kind=contact_pb2.IDENTITY_KIND_EMAIL, value=email.lower()
                )
            ],
            customer_name=name,
            language=language,
            skills=skills or [],
            queue=queue or DEFAULT_QUEUE,
            priority=priority,
            content=[_text(text)],
            conversation_id=f"offline:portal:{contact_id}",
            subject=subject,
            case_id=case_id,
            template=template,
            form=form or {},
        )
        contact.created_at.FromDatetime(at)
        meta = events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, SOURCE, f"{contact_id}:created")
        await self.bus.publish(events_pb2.ContactCreated(meta=meta, contact=contact))

    async def publish(self, event: Message) -> None:
        """Publish an event built here (returns once JetStream has stored it; raises if it did
        not, AckUnknown at the deadline). Pipelined: the event goes out at once and its ack
        comes on the bus's one reply subscription, not a request of its own per message."""
        await (await self.bus.publish_async(event))

    async def satisfaction_rated(
        self, tenant: str, contact_id: str, score: int, comment: str
    ) -> None:
        # One rating per contact: the event id makes a repeated rating a JetStream duplicate.
        meta = events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, SOURCE, f"{contact_id}:rated")
        await self.bus.publish(
            events_pb2.SatisfactionRated(
                meta=meta, contact_id=contact_id, score=score, comment=comment
            )
        )

    async def customer_left(
        self, tenant: str, contact_id: str, agent_id: str, queue: str, waited: float
    ) -> None:
        """The customer ended the chat: ContactEnded (reason customer left) once an agent has
        it, ContactAbandoned while it still waits, as the voice channel does for a hang-up."""
        meta = events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, SOURCE, f"{contact_id}:left")
        event: Message
        if agent_id:
            event = events_pb2.ContactEnded(
                meta=meta,
                contact_id=contact_id,
                agent_id=agent_id,
                reason=events_pb2.END_REASON_CUSTOMER_LEFT,
                queue=queue,
            )
        else:
            event = events_pb2.ContactAbandoned(meta=meta, contact_id=contact_id, queue=queue)
            event.waited.FromNanoseconds(int(max(0.0, waited) * 1e9))
        await self.bus.publish(event)

    async def transcript_requested(
        self, tenant: str, contact_id: str, request_id: str, to: str, subject: str, text: str
    ) -> None:
        meta = events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, SOURCE, request_id)
        await self._email(meta, contact_id, to, subject, text, kind="transcript")

    async def _email(
        self, meta: Any, contact_id: str, to: str, subject: str, text: str, **fields: Any
    ) -> events_pb2.OutboundEmail:
        """Publish a command for the email channel to send one mail (returned once JetStream
        has stored it)."""
        command = events_pb2.OutboundEmail(
            meta=meta, contact_id=contact_id, to=[to], subject=subject, text=text, **fields
        )
        await self.bus.publish(command)
        return command

    async def email_reply(
        self,
        tenant: str,
        contact_id: str,
        case_id: str,
        case_reference: str,
        agent_id: str,
        to: str,
        subject: str,
        text: str,
        in_reply_to: str = "",
    ) -> events_pb2.OutboundEmail:
        """An agent's reply to an email contact, for the email channel to send (returned once
        JetStream has stored the command)."""
        return await self._email(
            events.new_meta(tenant, contact_pb2.CHANNEL_EMAIL, SOURCE),
            contact_id,
            to,
            subject,
            text,
            case_id=case_id,
            case_reference=case_reference,
            agent_id=agent_id,
            in_reply_to=in_reply_to,
            references=[in_reply_to] if in_reply_to else [],
            kind="reply",
        )

    async def fax_reply(
        self,
        tenant: str,
        contact_id: str,
        case_id: str,
        case_reference: str,
        agent_id: str,
        to_number: str,
        text: str,
    ) -> events_pb2.OutboundFax:
        """An agent's reply to a fax contact, for the fax channel to render and send."""
        command = events_pb2.OutboundFax(
            meta=events.new_meta(tenant, contact_pb2.CHANNEL_FAX, SOURCE),
            contact_id=contact_id,
            case_id=case_id,
            case_reference=case_reference,
            agent_id=agent_id,
            to_number=to_number,
            text=text,
        )
        await self.bus.publish(command)
        return command

    async def supervised(
        self,
        tenant: str,
        contact_id: str,
        supervisor_id: str,
        agent_id: str,
        action: int,
        text: str = "",
        event_id: str | None = None,
    ) -> events_pb2.ContactSupervised:
        """A supervisor's act on a live chat, for the case service to audit (and, for a note,
        to keep as an internal note of the case)."""
        event = events_pb2.ContactSupervised(
            meta=events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, SOURCE, event_id),
            contact_id=contact_id,
            supervisor_id=supervisor_id,
            agent_id=agent_id,
            action=action,  # type: ignore[arg-type]
            text=text,
        )
        await self.bus.publish(event)
        return event

    async def recording_played(
        self,
        tenant: str,
        contact_id: str,
        player_id: str,
        roles: list[str],
        via: str,
        event_id: str | None = None,
    ) -> events_pb2.RecordingPlayed:
        """Someone started playing a call's recording, for the case service to audit (one
        playback announced twice with its `event_id` is kept once)."""
        event = events_pb2.RecordingPlayed(
            meta=events.new_meta(tenant, contact_pb2.CHANNEL_VOICE, SOURCE, event_id),
            contact_id=contact_id,
            player_id=player_id,
            roles=roles,
            via=via,
        )
        await self.bus.publish(event)
        return event
