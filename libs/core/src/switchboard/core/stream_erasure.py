"""Erasing contacts from JetStream: the shared streams (EVENTS, OUTBOUND, DEADLETTER) and the
chat's history.

Every stored event, outbound command and parked event that belongs to one of a tenant's erased
contacts, and every message of their chat history, is deleted with JetStream's secure erase:
nats-server overwrites the message's record in its store file with random bytes, so neither the
payload nor its headers stay on disk.

Subjects carry the tenant, never the contact, so the messages on the tenant's subjects
(`tenant_filters`) are read one at a time with JetStream's next-by-subject message get, each is
decoded by its ``Sb-Event-Type`` header (a parked event keeps the original's), and `contact_of`
says which contact it belongs to. An event type that names no contact (`NO_CONTACT`: an agent's
presence, a queue's surge level, a case's later status) is never deleted, nor is a message that
cannot be decoded or that belongs to another tenant. Erasing is idempotent: a second run finds
nothing and deletes nothing.

No consumer is created: nats-server takes a consumer create naming an existing consumer as an
update of it, so permission to create ephemeral consumers on a shared stream would let the
erasing user rewrite another service's durable; it gets stream info, message get and message
delete only (switchboard.core.nats_auth).

Not erased here, and why:

- Key-value buckets (the chat's conversation records, the email thread index, the fax jobs):
  a key-value stream denies message deletes. Each channel purges its own keys of the contacts
  when it receives the case service's CustomerErased (which is therefore never erased here);
  a purged value's bytes stay in the store files until the block is compacted.
- The router's journal (``ROUTER_<GROUP>``, kept seven days) and snapshots (``ROUTER_SNAPSHOTS``):
  both hold whole contacts (the journal's AddContact; the snapshot's live contacts and the last
  50,000 ended ones the engine keeps to explain its decisions). A journal entry holds the
  commands of many contacts and the engine is rebuilt by replaying them, so no entry can be cut
  out; the snapshot is one object the router rewrites. Erasing there is the router's to do.
- Object stores (attachments, raw mail, fax documents): erased with the customer's files, not
  here.
- What a channel quarantined (a fax as received and its FaxQuarantined, an EmailQuarantined):
  never a contact, so no contact id finds it. The channel that quarantined it deletes its events
  with `erase_items` when it deletes the item (its sender's erasure, or its retention).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    events_pb2.ContactOfferWithdrawn: _CONTACT_ID,
    events_pb2.ContactAssigned: _CONTACT_ID,
    events_pb2.ContactHeld: _CONTACT_ID,
    events_pb2.ContactTransferred: _CONTACT_ID,
    events_pb2.ContactSupervised: _CONTACT_ID,  # a note's text is the customer's case's
    events_pb2.RecordingPlayed: _CONTACT_ID,
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
        # Names the erased contacts, ids only: it must stay on the stream for the channels to
        # erase those contacts from their key-value buckets.
        case_events_pb2.CustomerErased,
    }
)

# The events of an item a channel quarantined, by the item's id: the channel deletes them with
# the item (erase_items). They carry the sender's address or number.
ITEM_OF: dict[type[Message], Callable[[Any], str]] = {
    fax_pb2.FaxReceived: attrgetter("fax_id"),
    fax_pb2.FaxQuarantined: attrgetter("fax_id"),
    email_pb2.EmailQuarantined: attrgetter("quarantine_id"),
}

# JetStream's answers to a message delete.
_NOT_FOUND = 10043  # deleting a sequence that is not there (any more)
_DELETE_FAILED = 10057  # deleting failed: beyond the stream's end, or not permitted
# Parts of a stream read at once (see erase_contacts).
PARTS = 8
_TOKEN = re.compile(r"^[^.*>\s]+$")


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


def _tenant_filters_of(stream: str) -> Filters:
    return lambda tenant, _: tenant_filters(stream, tenant)


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


Match = Callable[[Any, str, frozenset[str]], bool]
Filters = Callable[[str, frozenset[str]], list[str]]


@dataclass(frozen=True)
class Store:
    """A stream erased from: the subject filters to read for a tenant's contacts, and which of
    the messages read belong to them."""

    stream: str
    filters: Filters
    match: Match


def _every(raw: Any, tenant: str, contact_ids: frozenset[str]) -> bool:
    return True  # read on subjects that name the contact: every message there is its


def _per_contact(template: str) -> Filters:
    def filters(tenant: str, contact_ids: frozenset[str]) -> list[str]:
        # An id that is no single subject token cannot be on such a subject (nor widen a filter).
        ids = sorted(c for c in contact_ids if _TOKEN.match(c))
        return [template.format(tenant=tenant, contact=c) for c in ids]

    return filters


# The chat service's history (services/chat adapters/conversations.py): each contact's messages
# on its own subject of CHAT_HISTORY. Its conversation records (bucket chat_conversations) are
# not erased here (a key-value stream denies message deletes): the chat purges them itself when
# it receives CustomerErased.
CHAT_HISTORY = "CHAT_HISTORY"

STORES: tuple[Store, ...] = (
    *(Store(stream, _tenant_filters_of(stream), belongs) for stream in STREAMS),
    Store(CHAT_HISTORY, _per_contact("chat.history.{tenant}.{contact}"), _every),
)


# Every stream erased from (the case service's NATS user may read and delete in these).
ERASED_STREAMS: tuple[str, ...] = tuple(dict.fromkeys(store.stream for store in STORES))


async def erase_contacts(js: JetStreamContext, tenant: str, contact_ids: Iterable[str]) -> int:
    """Securely delete every message that belongs to one of `tenant`'s `contact_ids` from the
    shared streams (EVENTS, OUTBOUND, DEADLETTER) and the chat's history; return how many were deleted (0 when run again). A store that does not exist (no
    chat in this deployment) is skipped; messages stored after the call began are not read."""
    events.validate_tenant(tenant)
    wanted = frozenset(c for c in contact_ids if c)
    if not wanted:
        return 0
    erased = 0
    for store in STORES:
        try:
            state = (await js.stream_info(store.stream)).state
        except NotFoundError:
            continue
        # Each filter's sequence range is read in parts at once: every part is one request at a
        # time, so memory stays at one message a part while the round trips overlap.
        ranges = _parts(state.first_seq, state.last_seq, PARTS)
        scans = [
            _erase_in(js, store, subject, first, last, tenant, wanted)
            for subject in store.filters(tenant, wanted)
            for first, last in ranges
        ]
        in_store = sum(await asyncio.gather(*scans))
        if in_store:
            logger.info("erased %d messages of tenant %s from %s", in_store, tenant, store.stream)
        erased += in_store
    return erased


def _parts(first: int, last: int, parts: int) -> list[tuple[int, int]]:
    """`first`..`last` cut into at most `parts` consecutive ranges."""
    first = max(first, 1)
    if last < first:
        return []
    size = -(-(last - first + 1) // parts)
    return [(lo, min(lo + size - 1, last)) for lo in range(first, last + 1, size)]


async def _erase_in(
    js: JetStreamContext,
    store: Store,
    subject: str,
    first: int,
    last: int,
    tenant: str,
    wanted: frozenset[str],
) -> int:
    """Read the store's messages on `subject` from sequence `first` to `last`, one at a time
    (JetStream's next-by-subject get: no consumer, one message in memory), deleting those that
    belong to `wanted`."""
    stream = store.stream
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
        if store.match(raw, tenant, wanted) and await secure_delete(js, stream, found):
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
        if exc.err_code == _NOT_FOUND:
            return False
        if exc.err_code != _DELETE_FAILED:
            raise
        # The same code says "beyond the stream's end" and "deletes not permitted" (a key-value
        # stream): only a message that is not there is no failure.
        try:
            await js.get_msg(stream, seq)
        except NotFoundError:
            return False
        raise


def _item_filters(types: tuple[type[Message], ...], stream: str) -> Filters:
    def filters(tenant: str, _: frozenset[str]) -> list[str]:
        subjects = [events.spec_for(t).template.format(tenant=tenant, channel="*") for t in types]
        if stream == deadletter.STREAM:
            return [deadletter.parked_subject("*", s) for s in subjects]
        return subjects

    return filters


def _item_match(types: tuple[type[Message], ...]) -> Match:
    def match(msg: Any, tenant: str, items: frozenset[str]) -> bool:
        spec = events.spec_by_name((msg.headers or {}).get(events.TYPE_HEADER, ""))
        if spec is None or spec.type not in types:
            return False
        try:
            event = spec.type.FromString(msg.data or b"")
        except DecodeError:
            return False
        if event.meta.tenant != tenant:  # type: ignore[attr-defined]
            return False
        return ITEM_OF[spec.type](event) in items

    return match


async def erase_items(
    js: JetStreamContext, tenant: str, types: Iterable[type[Message]], items: Iterable[str]
) -> int:
    """Securely delete `tenant`'s events of `types` (keys of ITEM_OF) that name one of `items`
    (quarantined items' ids), from EVENTS and, parked, from DEADLETTER; return how many were
    deleted (0 when run again). Only the types' own subjects are read."""
    events.validate_tenant(tenant)
    kinds = tuple(types)
    wanted = frozenset(i for i in items if i)
    if not wanted or not kinds:
        return 0
    erased = 0
    for stream in ("EVENTS", deadletter.STREAM):
        store = Store(stream, _item_filters(kinds, stream), _item_match(kinds))
        try:
            state = (await js.stream_info(stream)).state
        except NotFoundError:
            continue
        scans = [
            _erase_in(js, store, subject, state.first_seq, state.last_seq, tenant, wanted)
            for subject in store.filters(tenant, wanted)
        ]
        erased += sum(await asyncio.gather(*scans))
    return erased
