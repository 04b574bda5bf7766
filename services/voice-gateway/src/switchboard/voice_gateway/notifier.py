"""The gateway's one place for publishing voice contact events. Each call returns once
JetStream has stored the event; event ids derive from the contact id, so a retry is
de-duplicated."""

from __future__ import annotations

from datetime import UTC, datetime

from switchboard.core import events
from switchboard.core.publishing import Publisher
from switchboard.v1 import contact_pb2, events_pb2

# The gateway's words for a call supervision's steps, as the audited event says them.
SUPERVISION_ACTIONS = {
    "joined": events_pb2.SUPERVISION_ACTION_STARTED,
    "mode_changed": events_pb2.SUPERVISION_ACTION_MODE_CHANGED,
    "left": events_pb2.SUPERVISION_ACTION_STOPPED,
}

SOURCE = "voice-gateway"
VOICE = contact_pb2.CHANNEL_VOICE


def _meta(tenant: str, event_id: str) -> events_pb2.EventMeta:
    return events.new_meta(tenant, VOICE, SOURCE, event_id)  # type: ignore[no-any-return]


class VoiceNotifier:
    def __init__(self, bus: Publisher) -> None:
        self.bus = bus

    async def contact_created(
        self,
        tenant: str,
        contact_id: str,
        caller: str,
        language: str,
        skills: list[str],
        queue: str,
        dialled: str,
        at: datetime,
        callback: bool = False,
    ) -> None:
        contact = contact_pb2.Contact(
            contact_id=contact_id,
            tenant=tenant,
            channel=VOICE,
            identities=[
                contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_PHONE, value=caller)
            ]
            if caller
            else [],
            language=language,
            skills=skills,
            queue=queue,
            subject=f"call to {dialled}",
            conversation_id=contact_id,
            callback=callback,
        )
        contact.created_at.FromDatetime(at)
        suffix = "callback" if callback else "created"
        await self.bus.publish(
            events_pb2.ContactCreated(meta=_meta(tenant, f"{contact_id}:{suffix}"), contact=contact)
        )

    async def abandoned(self, tenant: str, contact_id: str, queue: str, waited: float) -> None:
        event = events_pb2.ContactAbandoned(
            meta=_meta(tenant, f"{contact_id}:abandoned"), contact_id=contact_id, queue=queue
        )
        event.waited.FromNanoseconds(int(waited * 1e9))
        await self.bus.publish(event)

    async def held(self, tenant: str, contact_id: str, agent_id: str, held: bool, n: int) -> None:
        await self.bus.publish(
            events_pb2.ContactHeld(
                meta=_meta(tenant, f"{contact_id}:held:{n}"),
                contact_id=contact_id,
                agent_id=agent_id,
                held=held,
            )
        )

    async def transferred(
        self, tenant: str, contact_id: str, agent_id: str, queue: str, n: int
    ) -> None:
        await self.bus.publish(
            events_pb2.ContactTransferred(
                meta=_meta(tenant, f"{contact_id}:transferred:{n}"),
                contact_id=contact_id,
                from_agent_id=agent_id,
                to_queue=queue,
            )
        )

    async def supervised(
        self,
        tenant: str,
        contact_id: str,
        agent_id: str,
        supervision_id: str,
        supervisor_id: str,
        mode: str,
        action: str,
        n: int,
        changed_by: str = "",
    ) -> None:
        """A supervisor joined the call (`action` "joined"), changed mode ("mode_changed", by
        "rpc" or "dtmf") or left it ("left"); `n` counts the supervision's events."""
        await self.bus.publish(
            events_pb2.ContactSupervised(
                meta=_meta(tenant, f"{contact_id}:supervised:{supervision_id}:{n}"),
                contact_id=contact_id,
                supervision_id=supervision_id,
                supervisor_id=supervisor_id,
                agent_id=agent_id,
                mode=events_pb2.SupervisionMode.Value(f"SUPERVISION_MODE_{mode.upper()}"),
                action=SUPERVISION_ACTIONS[action],
                changed_by=changed_by,
            )
        )

    async def ended(
        self,
        tenant: str,
        contact_id: str,
        agent_id: str,
        reason: int,
        queue: str,
        wait: float,
        talk: float,
        hold: float,
    ) -> None:
        event = events_pb2.ContactEnded(
            meta=_meta(tenant, f"{contact_id}:ended"),
            contact_id=contact_id,
            agent_id=agent_id,
            reason=reason,  # type: ignore[arg-type]
            queue=queue,
        )
        event.wait.FromNanoseconds(int(wait * 1e9))
        event.talk.FromNanoseconds(int(talk * 1e9))
        event.hold.FromNanoseconds(int(hold * 1e9))
        await self.bus.publish(event)

    async def rated(self, tenant: str, contact_id: str, score: int) -> None:
        """The caller's answer to the post-call survey (one per call)."""
        await self.bus.publish(
            events_pb2.SatisfactionRated(
                meta=_meta(tenant, f"{contact_id}:rated"), contact_id=contact_id, score=score
            )
        )


def now() -> datetime:
    return datetime.now(UTC)
