"""Erasing contacts from the shared JetStream streams (EVENTS, OUTBOUND, DEADLETTER).

Every stored event, command and parked event that belongs to one of a tenant's erased contacts
is deleted with JetStream's secure erase: nats-server overwrites the message's record in its
store file with random bytes, so neither the payload nor its headers stay on disk.

Subjects carry the tenant, never the contact, so each stream's messages on the tenant's subjects
(`tenant_filters`) are read one at a time with JetStream's next-by-subject message get, each is
decoded by its ``Sb-Event-Type`` header, and `contact_of` says which contact the event belongs
to. No consumer is created: on a shared stream, the permission to create an ephemeral consumer
would also let a user rewrite another service's durable consumer (nats-server treats a create
naming an existing consumer as an update), so the erasing user gets message get and delete only
(switchboard.core.nats_auth). An event
type that names no contact (`NO_CONTACT`: an agent's presence, a queue's surge level, a case's
status) is never deleted, nor is a message that cannot be decoded or that belongs to another
tenant. Erasing is idempotent: a second run finds nothing and deletes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

from google.protobuf.message import DecodeError, Message
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from switchboard.core import deadletter, events
from switchboard.v1 import case_events_pb2, email_pb2, events_pb2, fax_pb2

logger = logging.getLogger(__name__)

# The streams erased from, in order: the events, the commands to channels, the parked events.
STREAMS: tuple[str, ...] = tuple(events.STREAMS)

_CONTACT_ID = attrgetter("contact_id")

# Which contact an event belongs to, for every registered event type that names one.
CONTACT_OF: dict[type[Message], Callable[[Any], str]] = {
    events_pb2.ContactCreated: attrgetter("contact.contact_id"),
    events_pb2.MessageAdded: attrgetter("message.contact_id"),
    events_pb2.ContactEnded: _CONTACT_ID,
    events_pb2.ContactAbandoned: _CONTACT_ID,
    events_pb2.ContactQueued: _CONTACT_ID,
    events_pb2.ContactOffered: _CONTACT_ID,
    events_pb2.ContactAssigned: _CONTACT_ID,
    events_pb2.ContactHeld: _CONTACT_ID,
    events_pb2.ContactTransferred: _CONTACT_ID,
    events_pb2.RoutingStepApplied: _CONTACT_ID,
    events_pb2.SatisfactionRated: _CONTACT_ID,
    events_pb2.DeliveryStatus: _CONTACT_ID,
    events_pb2.OutboundEmail: _CONTACT_ID,
    events_pb2.OutboundFax: _CONTACT_ID,
    # The fax channel's contact id is the fax id (FaxProcessed sets contact_id = fax_id), so
    # the fax as received, with the caller's number, goes with its contact.
    fax_pb2.FaxReceived: attrgetter("fax_id"),
    fax_pb2.FaxProcessed: _CONTACT_ID,
    email_pb2.EmailReceived: _CONTACT_ID,
    case_events_pb2.CaseCreated: _CONTACT_ID,
}

# Registered event types that name no contact: never erased by contact.
NO_CONTACT: frozenset[type[Message]] = frozenset(
    {
        events_pb2.SurgeLevelChanged,  # a queue's level
        events_pb2.AgentStateChanged,  # an agent's presence
        # Quarantined mail and faxes never became contacts (their raw files are the channels'
        # object stores' business, kept for the quarantine's own retention).
        fax_pb2.FaxQuarantined,
        email_pb2.EmailQuarantined,
        # A case's life after its creation: ids, statuses and agents, no customer content.
        case_events_pb2.CaseStatusChanged,
        case_events_pb2.CaseAssigned,
        case_events_pb2.CaseEscalated,
        case_events_pb2.SlaBreached,
    }
)

# JetStream's answers to deleting a message that is not there (any more).
_GONE = frozenset({10043, 10057})  # sequence not found; beyond the stream's end


def contact_of(event: Message) -> str:
    """The contact `event` belongs to, or "" if its type names none."""
    get = CONTACT_OF.get(type(event))
    return get(event) if get is not None else ""


def tenant_filters(stream: str, tenant: str) -> list[str]:
    """The subject filters that select `tenant`'s messages in `stream`. Where the subjects do
    not name the tenant (``outbound.email.send``), the filter selects every tenant's, and the
    tenant in each payload decides."""
    events.validate_tenant(tenant)  # no wildcard or separator can reach a filter
    if stream == deadletter.STREAM:
        originals = [f for name in STREAMS if name != stream for f in tenant_filters(name, tenant)]
        return [deadletter.parked_subject("*", f) for f in originals]
    out = []
    for pattern in events.STREAMS[stream]:
        prefix = pattern.removesuffix(">")
        templates = [s.template for s in events.specs() if s.template.startswith(prefix)]
        by_tenant = bool(templates) and all(t.split(".")[1] == "{tenant}" for t in templates)
        out.append(f"{prefix}{tenant}.>" if by_tenant else pattern)
    return out


def belongs(msg: Any, tenant: str, contact_ids: frozenset[str]) -> bool:
    """Whether the stored message `msg` (a Msg or RawStreamMsg: headers and data) is an event of
    `tenant` that belongs to one of `contact_ids`. A parked event carries the original's
    headers and payload, so it is read the same way."""
    spec = events.spec_by_name((msg.headers or {}).get(events.TYPE_HEADER, ""))
    if spec is None:
        return False
    try:
        event = spec.type.FromString(msg.data or b"")
    except DecodeError:
        return False
    if getattr(event, "meta", None) is None or event.meta.tenant != tenant:  # type: ignore[attr-defined]
        return False
    contact = contact_of(event)
    return bool(contact) and contact in contact_ids


async def erase_contacts(js: JetStreamContext, tenant: str, contact_ids: Iterable[str]) -> int:
    """Securely delete every message of EVENTS, OUTBOUND and DEADLETTER that belongs to one of
    `tenant`'s `contact_ids`; return how many were deleted (0 when run again). Messages stored
    after the call began are not read."""
    events.validate_tenant(tenant)
    wanted = frozenset(c for c in contact_ids if c)
    if not wanted:
        return 0
    erased = 0
    for stream in STREAMS:
        in_stream = 0
        state = (await js.stream_info(stream)).state
        for subject in tenant_filters(stream, tenant):
            in_stream += await _erase_in(
                js, stream, subject, state.first_seq, state.last_seq, tenant, wanted
            )
        if in_stream:
            logger.info("erased %d messages of tenant %s from %s", in_stream, tenant, stream)
        erased += in_stream
    return erased


async def _erase_in(
    js: JetStreamContext,
    stream: str,
    subject: str,
    first: int,
    last: int,
    tenant: str,
    wanted: frozenset[str],
) -> int:
    """Read `stream`'s messages on `subject` from sequence `first` to `last`, one at a time
    (JetStream's next-by-subject get: no consumer, one message in memory), deleting those that
    belong to `wanted`."""
    erased = 0
    seq = max(first, 1)
    while seq <= last:
        try:
            raw = await js.get_msg(stream, seq, subject=subject, next=True)
        except NotFoundError:
            break
        found = raw.seq or seq
        if found > last:
            break
        if belongs(raw, tenant, wanted) and await secure_delete(js, stream, found):
            erased += 1
        seq = found + 1
    return erased


async def secure_delete(js: JetStreamContext, stream: str, seq: int) -> bool:
    """Delete message `seq` of `stream`, overwriting it in the store; False if it was not there.

    nats-py's delete request carries no ``no_erase``, and nats-server's default is to erase: the
    message's record is overwritten with random data, not only marked deleted."""
    try:
        return bool(await js.delete_msg(stream, seq))
    except APIError as exc:
        if exc.err_code in _GONE:
            return False
        raise
