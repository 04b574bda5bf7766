"""The registry of events on the bus: each event type declares its subject and stream.

Subjects follow DESIGN.md: ``contact.<tenant>.<channel>.<event>`` for channel events,
``routing.<tenant>.<event>`` for the router's decisions. Subscribing is by type, never by string.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import Message

from switchboard.core.errors import InvalidArgument
from switchboard.v1 import case_events_pb2, contact_pb2, email_pb2, events_pb2, fax_pb2

E = TypeVar("E", bound=Message)

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

# The header that names the protobuf type of the payload.
TYPE_HEADER = "Sb-Event-Type"

# Stream name -> subjects. EVENTS holds every fact, so one consumer sees them in causal order.
STREAMS: dict[str, list[str]] = {
    "EVENTS": ["contact.>", "routing.>", "case.>"],
    # Commands to channels, e.g. outbound.email.send: an agent's reply for the channel to deliver.
    "OUTBOUND": ["outbound.>"],
    # Events a consumer gave up on, parked with the reason (see switchboard.core.deadletter).
    "DEADLETTER": ["deadletter.>"],
}
DEADLETTER_STREAM = "DEADLETTER"

CHANNEL_TOKENS = {
    contact_pb2.CHANNEL_VOICE: "voice",
    contact_pb2.CHANNEL_EMAIL: "email",
    contact_pb2.CHANNEL_FAX: "fax",
    contact_pb2.CHANNEL_CHAT: "chat",
}


@dataclass(frozen=True)
class EventSpec:
    type: type[Message]
    template: str  # with {tenant} and {channel}
    stream: str = "EVENTS"

    @property
    def type_name(self) -> str:
        return self.type.DESCRIPTOR.full_name

    @property
    def filter_subject(self) -> str:
        return self.template.replace("{tenant}", "*").replace("{channel}", "*")

    def tenant_filter(self, tenant: str) -> str:
        """The subjects of this event of `tenant` alone (any channel)."""
        validate_tenant(tenant)
        return self.template.replace("{tenant}", tenant).replace("{channel}", "*")

    def subject(self, tenant: str, channel: int) -> str:
        validate_tenant(tenant)
        values = {"tenant": tenant}
        if "{channel}" in self.template:
            token = CHANNEL_TOKENS.get(channel)  # type: ignore[call-overload]
            if token is None:
                raise InvalidArgument("meta.channel", "must name a channel")
            values["channel"] = token
        return self.template.format(**values)


_SPECS: dict[type[Message], EventSpec] = {}
_BY_NAME: dict[str, EventSpec] = {}


def register(spec: EventSpec) -> None:
    _SPECS[spec.type] = spec
    _BY_NAME[spec.type_name] = spec


for _spec in (
    EventSpec(events_pb2.ContactCreated, "contact.{tenant}.{channel}.created"),
    EventSpec(events_pb2.MessageAdded, "contact.{tenant}.{channel}.message_added"),
    EventSpec(events_pb2.ContactEnded, "contact.{tenant}.{channel}.ended"),
    EventSpec(events_pb2.ContactAbandoned, "contact.{tenant}.{channel}.abandoned"),
    EventSpec(events_pb2.ContactQueued, "routing.{tenant}.queued"),
    EventSpec(events_pb2.ContactOffered, "routing.{tenant}.offered"),
    EventSpec(events_pb2.ContactOfferWithdrawn, "routing.{tenant}.offer_withdrawn"),
    EventSpec(events_pb2.ContactAssigned, "routing.{tenant}.assigned"),
    EventSpec(events_pb2.ContactHeld, "contact.{tenant}.{channel}.held"),
    EventSpec(events_pb2.ContactTransferred, "contact.{tenant}.{channel}.transferred"),
    EventSpec(events_pb2.ContactSupervised, "contact.{tenant}.{channel}.supervised"),
    EventSpec(events_pb2.RecordingPlayed, "contact.{tenant}.{channel}.recording_played"),
    EventSpec(events_pb2.RoutingStepApplied, "routing.{tenant}.step_applied"),
    EventSpec(events_pb2.SurgeLevelChanged, "routing.{tenant}.surge"),
    EventSpec(events_pb2.AgentStateChanged, "routing.{tenant}.agent_state"),
    EventSpec(events_pb2.SatisfactionRated, "contact.{tenant}.{channel}.rated"),
    EventSpec(events_pb2.DeliveryStatus, "contact.{tenant}.{channel}.delivery"),
    EventSpec(events_pb2.OutboundEmail, "outbound.email.send", stream="OUTBOUND"),
    EventSpec(events_pb2.OutboundFax, "outbound.fax.send", stream="OUTBOUND"),
    EventSpec(fax_pb2.FaxReceived, "contact.{tenant}.{channel}.fax_received"),
    EventSpec(fax_pb2.FaxProcessed, "contact.{tenant}.{channel}.fax_processed"),
    EventSpec(fax_pb2.FaxQuarantined, "contact.{tenant}.{channel}.fax_quarantined"),
    EventSpec(email_pb2.EmailReceived, "contact.{tenant}.{channel}.email_received"),
    EventSpec(email_pb2.EmailQuarantined, "contact.{tenant}.{channel}.email_quarantined"),
    EventSpec(case_events_pb2.CaseCreated, "case.{tenant}.created"),
    EventSpec(case_events_pb2.CaseStatusChanged, "case.{tenant}.status_changed"),
    EventSpec(case_events_pb2.CaseAssigned, "case.{tenant}.assigned"),
    EventSpec(case_events_pb2.CaseEscalated, "case.{tenant}.escalated"),
    EventSpec(case_events_pb2.SlaBreached, "case.{tenant}.sla_breached"),
    EventSpec(case_events_pb2.CustomerErased, "case.{tenant}.customer_erased"),
):
    register(_spec)


def spec_for(event_type: type[Message]) -> EventSpec:
    try:
        return _SPECS[event_type]
    except KeyError:
        raise KeyError(f"{event_type.__name__} is not a registered event") from None


def spec_by_name(type_name: str) -> EventSpec | None:
    return _BY_NAME.get(type_name)


def specs() -> list[EventSpec]:
    """Every registered event type's spec, in registration order."""
    return list(_SPECS.values())


def validate_tenant(tenant: str) -> None:
    if not tenant:
        raise InvalidArgument("tenant")
    if not TENANT_RE.match(tenant):
        raise InvalidArgument("tenant", f"{tenant!r} is not a valid tenant name ([a-z0-9_-], ≤ 63)")


def new_id() -> str:
    return uuid.uuid4().hex


def derived_id(*parts: str) -> str:
    """An event id made from `parts` (as long as `new_id`'s): whoever makes it from the same
    parts makes the same id, so JetStream and the consumers keep the event once."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def new_meta(
    tenant: str, channel: int, source: str, event_id: str | None = None, at: float | None = None
) -> Any:
    """Return an EventMeta with `event_id` (a fresh one if None) and the time it occurred: `at`
    (seconds since the epoch), else the current time."""
    meta = events_pb2.EventMeta(
        event_id=event_id or new_id(),
        tenant=tenant,
        channel=channel,  # type: ignore[arg-type]
        source=source,
    )
    if at is None:
        meta.occurred_at.FromDatetime(datetime.now(UTC))
    else:
        meta.occurred_at.FromNanoseconds(int(at * 1e9))
    return meta


def subject_of(event: Message) -> str:
    spec = spec_for(type(event))
    meta = event.meta  # type: ignore[attr-defined]
    return spec.subject(meta.tenant, meta.channel)


def validate_meta(event: Message) -> None:
    """Every event must carry an id and a tenant; raise InvalidArgument naming what is missing."""
    if not event.HasField("meta"):  # type: ignore[arg-type]
        raise InvalidArgument("meta")
    meta = event.meta  # type: ignore[attr-defined]
    if not meta.event_id:
        raise InvalidArgument("meta.event_id")
    validate_tenant(meta.tenant)
