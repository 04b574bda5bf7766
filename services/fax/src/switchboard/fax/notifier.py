"""The fax channel's one place for publishing events; each call returns once JetStream stored it."""

from __future__ import annotations

from switchboard.core import events
from switchboard.core.publishing import Publisher
from switchboard.v1 import contact_pb2, events_pb2, fax_pb2

SOURCE = "fax"
FAX = contact_pb2.CHANNEL_FAX


class FaxNotifier:
    def __init__(self, bus: Publisher) -> None:
        self.bus = bus

    async def fax_received(
        self,
        tenant: str,
        fax_id: str,
        origin: fax_pb2.FaxOrigin,
        original: contact_pb2.AttachmentRef,
    ) -> fax_pb2.FaxReceived:
        event = fax_pb2.FaxReceived(
            meta=events.new_meta(tenant, FAX, SOURCE, f"{fax_id}:received"),
            fax_id=fax_id,
            origin=origin,
            original=original,
        )
        event.received_at.CopyFrom(event.meta.occurred_at)
        await self.bus.publish(event)
        return event

    async def fax_processed(self, tenant: str, processed: fax_pb2.FaxProcessed) -> None:
        processed.meta.CopyFrom(
            events.new_meta(tenant, FAX, SOURCE, f"{processed.fax_id}:processed")
        )
        await self.bus.publish(processed)

    async def contact_created(self, contact: contact_pb2.Contact) -> None:
        meta = events.new_meta(contact.tenant, FAX, SOURCE, f"{contact.contact_id}:created")
        await self.bus.publish(events_pb2.ContactCreated(meta=meta, contact=contact))

    async def fax_quarantined(
        self,
        tenant: str,
        fax_id: str,
        origin: fax_pb2.FaxOrigin,
        kept: contact_pb2.AttachmentRef,
        code: str,
        reason: str,
    ) -> None:
        await self.bus.publish(
            fax_pb2.FaxQuarantined(
                meta=events.new_meta(tenant, FAX, SOURCE, f"{fax_id}:quarantined"),
                fax_id=fax_id,
                origin=origin,
                original=kept,
                code=code,
                reason=reason,
            )
        )

    async def delivery(
        self,
        command: events_pb2.OutboundFax,
        state: int,
        detail: str,
        attempt: int,
        job_id: str = "",
    ) -> None:
        name = events_pb2.DeliveryState.Name(state).removeprefix("DELIVERY_STATE_").lower()  # type: ignore[arg-type]
        event_id = f"{command.meta.event_id}:{name}:{attempt}"
        await self.bus.publish(
            events_pb2.DeliveryStatus(
                meta=events.new_meta(command.meta.tenant, FAX, SOURCE, event_id),
                command_id=command.meta.event_id,
                contact_id=command.contact_id,
                case_id=command.case_id,
                state=state,  # type: ignore[arg-type]
                detail=detail,
                attempt=attempt,
                message_id=job_id,
            )
        )
