"""Email-ingest's one place for publishing: the events of fetched mail, the automatic
acknowledgement command, an outbound mail's delivery statuses and its sent copy. Each call
returns once JetStream has stored what it published."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message

from switchboard.core import events
from switchboard.core.publishing import Publisher
from switchboard.v1 import contact_pb2, events_pb2

SOURCE = "email-ingest"
EMAIL = contact_pb2.CHANNEL_EMAIL


class EmailNotifier:
    def __init__(self, bus: Publisher) -> None:
        self.bus = bus

    async def mail_events(self, batch: list[Message]) -> None:
        """A fetched batch's events (EmailReceived, ContactCreated, MessageAdded, EmailQuarantined),
        pipelined. Their ids derive from each mail's key, so a batch published again after a
        crash is a JetStream duplicate."""
        if batch:
            await self.bus.publish_many(batch)

    async def acknowledgement(
        self, tenant: str, case_id: str, contact_id: str, reference: str, text: str
    ) -> None:
        """The command to acknowledge a case to its customer: one per case (a redelivery is a
        JetStream duplicate, and the outbound side never sends the same command twice)."""
        await self.bus.publish(
            events_pb2.OutboundEmail(
                meta=events.new_meta(tenant, EMAIL, SOURCE, f"{case_id}:ack"),
                contact_id=contact_id,
                case_id=case_id,
                case_reference=reference,
                text=text,
                kind="acknowledgement",
            )
        )

    async def delivery_status(
        self,
        cmd: events_pb2.OutboundEmail,
        case_id: str,
        state: int,
        detail: str,
        attempt: int,
        message_id: str = "",
    ) -> None:
        """How sending the command `cmd` went, once per state and attempt."""
        command_id = cmd.meta.event_id
        name = events_pb2.DeliveryState.Name(state).removeprefix("DELIVERY_STATE_").lower()  # type: ignore[arg-type]
        await self.bus.publish(
            events_pb2.DeliveryStatus(
                meta=events.new_meta(
                    cmd.meta.tenant, EMAIL, SOURCE, f"{command_id}:{name}:{attempt}"
                ),
                command_id=command_id,
                contact_id=cmd.contact_id,
                case_id=case_id,
                state=state,  # type: ignore[arg-type]
                detail=detail[:1000],
                attempt=attempt,
                message_id=message_id,
            )
        )

    async def sent_copy(self, cmd: events_pb2.OutboundEmail) -> None:
        """What was sent, added to the contact as a message (the agent's, or the system's for
        an automatic mail)."""
        author = (
            contact_pb2.AUTHOR_AGENT if cmd.kind in ("", "reply") else contact_pb2.AUTHOR_SYSTEM
        )
        copy_id = f"{cmd.meta.event_id}.sent"
        parts = [contact_pb2.ContentPart(content_type="text/plain", text=cmd.text)]
        if cmd.html:
            parts.append(contact_pb2.ContentPart(content_type="text/html", text=cmd.html))
        message = contact_pb2.Message(
            message_id=copy_id,
            contact_id=cmd.contact_id,
            author=author,  # type: ignore[arg-type]
            agent_id=cmd.agent_id,
            parts=parts,
            attachments=list(cmd.attachments),
        )
        message.sent_at.FromDatetime(datetime.now(UTC))
        meta = events.new_meta(cmd.meta.tenant, EMAIL, SOURCE, copy_id)
        await self.bus.publish(events_pb2.MessageAdded(meta=meta, message=message))
