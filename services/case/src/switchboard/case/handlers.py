"""The case service's bus handlers: each applies one event in one transaction, at most once.

Delivery is at least once and in no guaranteed order across redeliveries, so every handler
- records (event_id, consumer) in processed_events in the same transaction as its effects, and
  does nothing when the event was already applied;
- also treats natural keys (contact_id, message_id) as idempotency keys, since a channel may
  republish the same contact or message under a new event id;
- raises Retry when the event refers to a contact not recorded yet (the bus redelivers later),
  and InvalidArgument when the event itself is unusable (the bus terminates it).

Changes to a case go through CaseRecords, so they are audited, reach the SLA clocks and stage
their case events in the outbox.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Select, Table, bindparam, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from switchboard.case import audit, csat, customers, object_erasure
from switchboard.case.adapters import bulk, collector, keyring, rows
from switchboard.case.adapters.database import (
    Rider,
    get_locked,
    get_row,
    hold_writes,
    insert_ignore,
    insert_ignore_many,
    preload_locked_with,
    ride,
    row_added,
    settle,
)
from switchboard.case.adapters.orm import (
    EXTERNAL_ID,
    Case,
    Contact,
    ContactHold,
    Customer,
    Message,
    ProcessedEvent,
    utc_now,
)
from switchboard.case.commands import MAX_NOTE_CHARS
from switchboard.case.domain import lifecycle
from switchboard.case.domain.reference import looks_like_reference, normalise
from switchboard.case.records import SYSTEM, CaseRecords
from switchboard.case.reports.orm import AgentStateChange
from switchboard.case.sla import policy as sla_policy
from switchboard.case.sla.engine import SlaEngine
from switchboard.case.unit_of_work import Conflict, UnitOfWork
from switchboard.core import roles
from switchboard.core.errors import DomainError, InvalidArgument, Retry, RetryUntouched
from switchboard.v1 import case_pb2, contact_pb2, email_pb2, events_pb2, fax_pb2, router_pb2

logger = logging.getLogger(__name__)

QUEUED, OFFERED, ASSIGNED, ENDED, ABANDONED = "queued", "offered", "assigned", "ended", "abandoned"
TERMINAL = frozenset({ENDED, ABANDONED})
# Wrap-up codes that say the agent resolved the customer's matter: the case goes to resolved
# (the lifecycle's resolved state: reopened if the customer comes back, closed after review or
# auto_close_after) once no other contact of it is still being worked on.
RESOLVING_WRAP_UP_CODES = frozenset({"resolved"})
# Not open for a new contact to join unless it is threaded into it.
CLOSED_CASE = (*lifecycle.SETTLED, lifecycle.CLOSED)
SUBJECT_CHARS = 120
INITIAL_SUFFIX = ":initial"
LIVE_CHANNELS = (contact_pb2.CHANNEL_VOICE,)  # answering the call is the first response
RATING = "rating"  # how a contact joined its case: an answer to the case's survey

Clock = Callable[[], datetime]


def _when(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _ms(d: Duration) -> int | None:
    if d.seconds == 0 and d.nanos == 0:
        return None
    return int(d.ToMilliseconds())


# The audit action of each supervision act (ContactSupervised).
SUPERVISION_ACTIONS = {
    events_pb2.SUPERVISION_ACTION_STARTED: "supervision_started",
    events_pb2.SUPERVISION_ACTION_STOPPED: "supervision_stopped",
    events_pb2.SUPERVISION_ACTION_NOTE: "supervisor_note",
    events_pb2.SUPERVISION_ACTION_MODE_CHANGED: "supervision_mode_changed",
}
SUPERVISION_MODES = {
    events_pb2.SUPERVISION_MODE_MONITOR: "monitor",
    events_pb2.SUPERVISION_MODE_WHISPER: "whisper",
    events_pb2.SUPERVISION_MODE_BARGE: "barge",
}
# The role an audited playback names its player by, the first the player has.
PLAYER_ROLES = (roles.ADMIN, roles.SUPERVISOR, roles.QA, roles.TEAM_LEAD, roles.AGENT)


# A presence as the agent-states report names it: router_pb2.PRESENCE_BREAK -> "break".
PRESENCE_NAMES: dict[int, str] = {
    value: name.removeprefix("PRESENCE_").lower()
    for name, value in router_pb2.Presence.items()
    if value != router_pb2.PRESENCE_UNSPECIFIED
}


def _text(value: str, field: str, limit: int = EXTERNAL_ID, required: bool = False) -> str:
    # Checked here so SQLite and PostgreSQL agree, and a too-long value is a clear termination
    # rather than a database error redelivered until the bus gives up.
    if required and not value:
        raise InvalidArgument(field)
    if len(value) > limit:
        raise InvalidArgument(field, f"is longer than {limit} characters")
    return value


def nul_field(message: ProtoMessage, prefix: str = "") -> str:
    """The first text field of `message` (or of a message inside it) holding a NUL character, by
    its path; "" if none does. PostgreSQL cannot store NUL in text, SQLite can: refused up front,
    such an event is invalid on both."""
    if not prefix and b"\x00" not in message.SerializeToString():
        # A NUL character is a zero byte in UTF-8, so text holding one puts a zero byte in the
        # encoding; most events encode without any (their other zero bytes, e.g. an empty
        # message set or a fixed-width number, are rarer): no walk over their fields.
        return ""
    if not _has_nul(message):
        return ""  # every valid event: no path built
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if _is_map(field):
            for key, item in value.items():
                if _nul_in_entry(key, item):
                    return f"{path}[{key!r}]"
            continue
        items = value if field.is_repeated else [value]
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if field.is_repeated else path
            if field.type == field.TYPE_STRING and "\x00" in item:
                return where
            if field.type == field.TYPE_MESSAGE:
                found = nul_field(item, where + ".")
                if found:
                    return found
    return ""


_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return field.type == _MESSAGE and entry is not None and entry.GetOptions().map_entry


def _nul_in_entry(key: object, value: object) -> bool:
    """A map entry (of strings, e.g. Contact.form) holding a NUL in its key or value."""
    if isinstance(value, ProtoMessage):
        return (isinstance(key, str) and "\x00" in key) or _has_nul(value)
    return any(isinstance(x, str) and "\x00" in x for x in (key, value))


def _has_nul(message: ProtoMessage) -> bool:
    for field, value in message.ListFields():
        kind = field.type
        if _is_map(field):
            if any(_nul_in_entry(k, v) for k, v in value.items()):
                return True
        elif kind == _STRING:
            if field.is_repeated:
                if any("\x00" in item for item in value):
                    return True
            elif "\x00" in value:
                return True
        elif kind == _MESSAGE:
            if field.is_repeated:
                if any(_has_nul(item) for item in value):
                    return True
            elif _has_nul(value):
                return True
    return False


def message_body(parts: Sequence[contact_pb2.ContentPart]) -> tuple[str, str]:
    """The text and content type kept for content parts: the text/plain parts when there are any
    (an email's alternatives), else the parts of the first part's type, joined by blank lines."""
    if not parts:
        return "", "text/plain"
    types = [p.content_type.split(";")[0].strip().lower() or "text/plain" for p in parts]
    chosen = "text/plain" if "text/plain" in types else types[0]
    text = "\n\n".join(p.text for p, t in zip(parts, types, strict=True) if t == chosen)
    return text, _text(chosen, "content_type")


def case_subject(contact: contact_pb2.Contact) -> str:
    if contact.subject:
        return contact.subject
    for part in contact.content:
        words = " ".join(part.text.split())
        if words:
            return words[:SUBJECT_CHARS]
    return ""


def case_priority(contact_priority: int) -> int:
    """A contact's priority (0 normal, higher more urgent) as the priority of the case it opens."""
    if contact_priority >= 2:
        return case_pb2.CASE_PRIORITY_URGENT
    if contact_priority == 1:
        return case_pb2.CASE_PRIORITY_HIGH
    return case_pb2.CASE_PRIORITY_NORMAL


def _latest_open(cases: list[Case], customer_id: str) -> Case | None:
    """The customer's open case created last (the lowest id among equals), as the query
    `ORDER BY created_at DESC, id LIMIT 1` would choose it."""
    candidates = sorted(
        (c for c in cases if c.customer_id == customer_id and c.status not in CLOSED_CASE),
        key=lambda c: c.id,
    )
    candidates.sort(key=lambda c: c.created_at, reverse=True)  # stable: ties stay by id
    return candidates[0] if candidates else None


# The transaction of the batch being handled, when the bus runs a batch scope.
_batch_session: ContextVar[AsyncSession | None] = ContextVar("case_batch_session", default=None)


def _claims_on_sqlite(
    session: AsyncSession, ids: list[str], consumer: str, now: datetime
) -> Callable[[sqlite3.Connection], tuple[list[str], int]]:
    """The batch's claims as work for SQLite's thread (see `database.ride`): one multi-row
    INSERT … ON CONFLICT DO NOTHING RETURNING, as elsewhere; the ids it returns are claimed."""
    column = ProcessedEvent.__table__.c.processed_at  # type: ignore[attr-defined]
    bind = column.type.bind_processor(session.get_bind().dialect)
    stamp = bind(now) if bind is not None else now
    table = ProcessedEvent.__tablename__

    def claim(connection: sqlite3.Connection) -> tuple[list[str], int]:
        claimed: list[str] = []
        statements = 0
        for k in range(0, len(ids), _IDS_PER_STATEMENT):
            chunk = ids[k : k + _IDS_PER_STATEMENT]
            rows = connection.execute(
                f"INSERT INTO {table} (event_id, consumer, processed_at)"
                f" VALUES {', '.join(['(?, ?, ?)'] * len(chunk))}"
                " ON CONFLICT (event_id, consumer) DO NOTHING RETURNING event_id",
                [v for i in chunk for v in (i, consumer, stamp)],
            )
            claimed.extend(r[0] for r in rows.fetchall())
            statements += 1
        return claimed, statements

    return claim


_IDS_PER_STATEMENT = 500  # 1,500 parameters, well under SQLite's limit on a statement's


_STATUS_EVENTS = (
    events_pb2.ContactQueued,
    events_pb2.ContactOffered,
    events_pb2.ContactOfferWithdrawn,
)
_STATUS_COLUMNS = ("contact_id", "tenant", "case_id", "status", "queue", "queued_at", "offered_at")


class _StatusRows:
    """The contacts of a batch that only ContactQueued and ContactOffered events touch, as plain
    rows read with one Core SELECT (locked, like the ORM preload) and written back with one
    executemany UPDATE per table at the end of the batch; the same rules as `_set_status`."""

    KEY = "status_rows"

    def __init__(self, loaded: dict[str, dict[str, object]]) -> None:
        self.loaded = loaded
        self.changed: set[str] = set()
        self.cases: dict[str, datetime] = {}

    @classmethod
    async def load(cls, session: AsyncSession, contact_ids: set[str]) -> _StatusRows:
        connection = await session.connection()  # plain rows: no ORM result (see rows.py)
        result = await connection.execute(_status_select(), {"ids": sorted(contact_ids)})
        return cls({r[0]: dict(zip(_STATUS_COLUMNS, r, strict=True)) for r in result})

    def apply(
        self, tenant: str, contact_id: str, status: str, queue: str, at: datetime, now: datetime
    ) -> None:
        row = self.loaded.get(contact_id)
        if row is None:
            # Events can overtake the ContactCreated they refer to; see `CaseHandlers._contact`.
            raise RetryUntouched(f"contact {contact_id} is not recorded yet")
        if row["tenant"] != tenant:
            raise InvalidArgument("contact_id", "belongs to another tenant")
        self.changed.add(contact_id)
        if queue:
            row["queue"] = queue
        if status == QUEUED and row["queued_at"] is None:
            row["queued_at"] = at
        if status == OFFERED and row["offered_at"] is None:
            row["offered_at"] = at
        # A late queued/offered must not undo an assignment or an end.
        if row["status"] == ASSIGNED or row["status"] in TERMINAL:
            return
        row["status"] = status
        self.cases[row["case_id"]] = now  # type: ignore[index]


@cache
def _status_select() -> Select[Any]:
    """The SELECT `_StatusRows.load` runs, of the contacts `ids` (built once)."""
    table: Table = Contact.__table__  # type: ignore[assignment]
    return (
        select(*(table.c[c] for c in _STATUS_COLUMNS))
        .where(table.c.contact_id.in_(bindparam("ids", expanding=True)))
        .order_by(table.c.contact_id)
        .with_for_update()
    )


async def _write_status_rows(session: AsyncSession) -> None:
    rows: _StatusRows | None = session.info.pop(_StatusRows.KEY, None)
    if rows is None:
        return
    contacts, cases = _status_updates()
    if rows.changed:
        changed = [
            {f"b_{k}": v for k, v in rows.loaded[i].items() if k not in ("tenant", "case_id")}
            for i in sorted(rows.changed)
        ]
        await session.run_sync(lambda s: bulk.executemany(s.connection(), contacts, changed))
    if rows.cases:
        touched = [{"b_id": k, "b_updated_at": v} for k, v in sorted(rows.cases.items())]
        await session.run_sync(lambda s: bulk.executemany(s.connection(), cases, touched))


@cache
def _status_updates() -> tuple[Update, Update]:
    """The UPDATEs `_write_status_rows` runs (built once)."""
    contacts: Table = Contact.__table__  # type: ignore[assignment]
    cases: Table = Case.__table__  # type: ignore[assignment]
    return (
        bulk.keyed_update(
            contacts,
            {"b_contact_id": contacts.c.contact_id},
            {f"b_{k}": contacts.c[k] for k in ("status", "queue", "queued_at", "offered_at")},
        ),
        bulk.keyed_update(cases, {"b_id": cases.c.id}, {"b_updated_at": cases.c.updated_at}),
    )


class _RoutedRows:
    """The contacts of a batch that only its ContactQueued, ContactOffered and ContactAssigned
    events touch (an assignment among them), and their cases, as plain rows (adapters/rows.py)
    read with one joined SELECT: `_contact` and `_case` hand them to the handlers, which change
    them as they would the ORM objects, and what changed is written with one executemany per
    table and set of columns at the end of the batch. A case some other event of the batch reads
    through the ORM is left to the ORM (`drop`); one read through the ORM only later, which two
    copies of a row would make ambiguous, fails the batch for its isolated retry."""

    KEY = "routed_rows"

    def __init__(self, contacts: dict[str, rows.PlainRow], cases: dict[str, rows.PlainRow]) -> None:
        self.contacts = contacts
        self.cases = cases

    def drop(self, case_ids: set[str]) -> None:
        """Leave the cases `case_ids` and their contacts to the ORM."""
        for case_id in case_ids & self.cases.keys():
            del self.cases[case_id]
        for contact_id in [k for k, c in self.contacts.items() if c.case_id in case_ids]:
            del self.contacts[contact_id]

    def write(self, session: Session) -> None:
        if rows.also_in_session(session, Contact, self.contacts) or rows.also_in_session(
            session, Case, self.cases
        ):
            raise Retry("a contact or case of the batch was read as a plain row and an object")
        rows.write(session, Contact, self.contacts)
        rows.write(session, Case, self.cases)


@cache
def _open_cases_of() -> Select[Case]:
    """The open cases of the customers `ids`, locked (built once, as the batch's other reads)."""
    return (
        select(Case)
        .where(
            Case.customer_id.in_(bindparam("ids", expanding=True)),
            Case.status.not_in(CLOSED_CASE),
        )
        .order_by(Case.id)
        .with_for_update()
    )


@cache
def _stored_messages() -> Select[str]:
    """Which of the message ids `ids` are stored."""
    return select(Message.message_id).where(
        Message.message_id.in_(bindparam("ids", expanding=True))
    )


def default_records(clock: Clock) -> CaseRecords:
    policies = sla_policy.load(None)
    return CaseRecords(policies, SlaEngine(policies), clock)


class _BatchUnit:
    """Each event of a batch in a savepoint of the batch's transaction (see CaseHandlers.batch)."""

    def __init__(self, handlers: CaseHandlers, session: AsyncSession, isolate: bool) -> None:
        self._handlers = handlers
        self._session = session
        self._isolate = isolate

    @asynccontextmanager
    async def each(self, event: ProtoMessage) -> AsyncIterator[None]:
        if not self._isolate:
            # An event refused before it changed anything (its contact is not recorded yet)
            # gives up its claim; the rest of the batch goes on without a savepoint.
            try:
                yield
            except RetryUntouched:
                await self._handlers._unclaim(self._session, event)
                raise
            return
        savepoint = await self._session.begin_nested()
        try:
            yield
        except (DomainError, Retry):
            await savepoint.rollback()
            await self._handlers._unclaim(self._session, event)
            raise
        except BaseException:
            await savepoint.rollback()
            raise
        await savepoint.commit()


class CaseHandlers:
    """Applies contact and routing events to the case store."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        consumer: str,
        clock: Clock = utc_now,
        records: CaseRecords | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self._clock = clock
        self.records = records or default_records(clock)
        self._uow = UnitOfWork(sessions, on_commit or (lambda: None), what="event")

    @asynccontextmanager
    async def batch(
        self, events: Sequence[ProtoMessage] = (), isolate: bool = True
    ) -> AsyncIterator[_BatchUnit]:
        """One transaction for a whole batch of events (the bus's batch scope): one commit, one
        fsync, instead of one per event. Up front, the batch's event ids are claimed in one
        statement, and the contacts, cases, audit chain heads and SLA timers it touches are read
        (and locked) with a few IN queries; the handlers then find them in the session.

        With `isolate`, each event runs in a savepoint (`_BatchUnit.each`): one that is not ready
        or invalid is undone and unclaimed alone, and the rest commits. Without it (the bus's
        first try, cheaper: no savepoint, so the session flushes many events' rows together),
        such an event fails the batch, and the bus tries again with isolation. Any other failure
        rolls all of it back, and the bus hands each event over again on its own."""
        # The batch's transaction maps no errors: one it fails with cannot be told apart from
        # its events, so the bus hands each event over alone, to `_apply`, which maps them.
        with collector.held():
            async with self._uow.transaction() as session:
                token = _batch_session.set(session)
                try:
                    await self._claim_all(session, events)
                    await self._preload(session, events, plain=not isolate)
                    if not isolate:
                        # New rows go in with one INSERT per table (bulk.py); a savepoint would
                        # have to undo staged rows too, so the isolated retry uses plain ORM
                        # flushes.
                        session.info[bulk.KEY] = staged = bulk.BulkInserts()
                        # Every failure fails the whole batch: its writes can go with the next
                        # statement or the commit.
                        await hold_writes(session)
                    yield _BatchUnit(self, session, isolate)
                    if not isolate:
                        routed: _RoutedRows | None = session.info.pop(_RoutedRows.KEY, None)
                        if routed is not None:
                            # Before the writes below: they leave the session.
                            await session.run_sync(routed.write)
                        await session.run_sync(staged.write, False)
                        await session.run_sync(bulk.write_changes)
                        await _write_status_rows(session)
                finally:
                    _batch_session.reset(token)

    async def _preload(
        self, session: AsyncSession, events: Sequence[ProtoMessage], plain: bool = False
    ) -> None:
        """Read (and lock) what the batch touches. With `plain`, the contacts that only
        ContactQueued and ContactOffered events of the batch touch are read as plain rows
        (`_StatusRows`) instead of ORM objects, and written back with one executemany; so are
        those that only these, ContactAssigned and MessageAdded events touch, with their cases
        (`_RoutedRows`)."""
        contact_ids: set[str] = set()
        status_only: set[str] = set()
        assigned: set[str] = set()  # by ContactAssigned or MessageAdded
        messaged: set[str] = set()
        message_ids: set[str] = set()
        identities: dict[str, list[customers.Identity]] = {}
        for e in events:
            if isinstance(e, events_pb2.ContactCreated):
                contact_ids.add(e.contact.contact_id)
                tenant = e.meta.tenant
                try:
                    found = customers.normalise_identities(
                        e.contact.identities, self.records.policies.default_phone_region, False
                    )
                except InvalidArgument:
                    found = []  # its handler refuses it
                identities.setdefault(tenant, []).extend(found)
            elif isinstance(e, events_pb2.MessageAdded):
                messaged.add(e.message.contact_id)
                message_ids.add(e.message.message_id)
            elif isinstance(e, _STATUS_EVENTS):
                status_only.add(e.contact_id)
            elif isinstance(e, events_pb2.ContactAssigned):
                assigned.add(e.contact_id)
            elif getattr(e, "contact_id", ""):
                contact_ids.add(e.contact_id)  # type: ignore[attr-defined]
        status_only.discard("")
        assigned |= messaged
        assigned.discard("")
        if plain:
            assigned -= contact_ids
            status_only -= contact_ids | assigned
        else:
            contact_ids |= status_only | assigned
            status_only, assigned = set(), set()
        contact_ids.discard("")
        message_ids.discard("")
        contacts, cases, heads = await preload_locked_with(
            session, Contact, contact_ids, Case, "case_id", audit.head_columns(audit.CASE, Case.id)
        )
        if status_only:
            session.info[_StatusRows.KEY] = await _StatusRows.load(session, status_only)
        case_ids = {c.id for c in cases}
        routed = None
        if assigned:
            sqlite = session.get_bind().dialect.name == "sqlite"
            loaded, their_cases, more = await rows.load_with_parent(
                session,
                Contact,
                assigned,
                Case,
                "case_id",
                audit.head_columns(audit.CASE, Case.id) if sqlite else (),
            )
            absent: set[tuple[object, object]] = session.info.setdefault("absent_rows", set())
            absent.update((Contact, k) for k in assigned if k not in loaded)
            routed = session.info[_RoutedRows.KEY] = _RoutedRows(loaded, their_cases)
            routed.drop(case_ids)  # the ORM has those cases already
            if sqlite:
                heads.update(more)
            case_ids |= routed.cases.keys()
            # The SLA clocks a message changes, and those an assignment changes: a live
            # contact's.
            timed = {c.id for c in cases} | {
                c.case_id
                for k, c in routed.contacts.items()
                if k in messaged or c.channel in LIVE_CHANNELS
            }
        else:
            timed = case_ids
        audit.known_heads(session, audit.CASE, heads)  # on SQLite, read with the cases
        await audit.preload_heads(session, audit.CASE, case_ids)  # the others
        await self.records.sla.preload(session, timed)
        owners: set[str] = set()
        for tenant, found in identities.items():
            owners |= await customers.preload(session, tenant, found)
        if identities:
            # The open cases of the customers the batch's new contacts name, for
            # `_join_or_open_case` to choose from; customers and cases new in the batch join.
            index: dict[str, list[Case]] = session.info.setdefault("open_cases", {})
        if owners:
            open_cases = await session.scalars(_open_cases_of(), {"ids": sorted(owners)})
            locked: dict[tuple[object, object], object] = session.info.setdefault("locked_rows", {})
            for owner in owners:
                index.setdefault(owner, [])
            for case in open_cases:
                locked[(Case, case.id)] = case
                index[case.customer_id].append(case)
                if routed is not None:
                    routed.drop({case.id})
        if identities:
            # Each new contact may open a case.
            created = {c.contact_id for c in contacts}
            wanted: dict[str, int] = {}
            for e in events:
                if isinstance(e, events_pb2.ContactCreated) and e.contact.contact_id not in created:
                    wanted[e.meta.tenant] = wanted.get(e.meta.tenant, 0) + 1
            await self.records.reserve_references(session, wanted)
        if message_ids:
            stored = set(await session.scalars(_stored_messages(), {"ids": sorted(message_ids)}))
            session.info["message_ids"] = {i: i in stored for i in message_ids}
        # The keyring looked at the data keys when the transaction began. Another replica may
        # have committed since then a customer read above, with its key: look again, so that
        # this batch seals with that key rather than making the customer a second one. (SQLite's
        # write transaction holds the database's one write lock from its BEGIN IMMEDIATE on:
        # nothing can have been committed since.)
        if session.get_bind().dialect.name != "sqlite":
            keys = keyring.of(session)
            await session.run_sync(lambda sync: keys.refresh(sync.connection()))

    async def _claim_all(self, session: AsyncSession, events: Sequence[ProtoMessage]) -> None:
        """Claim every event id of the batch in one INSERT … ON CONFLICT DO NOTHING RETURNING;
        `_claim` then answers from what it returned."""
        ids = {e.meta.event_id for e in events}  # type: ignore[attr-defined]
        if not ids:
            return
        now = self._clock()
        # On SQLite, the claims go to the driver's thread with the batch's first preload query,
        # not in a hop of their own; `_claim` reads them once that query ran.
        rider = await ride(session, _claims_on_sqlite(session, sorted(ids), self._consumer, now))
        if rider is not None:
            session.info["claims"] = (set(ids), rider)
            return
        rows = [{"event_id": i, "consumer": self._consumer, "processed_at": now} for i in ids]
        claimed = await insert_ignore_many(session, ProcessedEvent, rows, ["event_id", "consumer"])
        session.info["claims"] = (set(ids), set(claimed))

    async def _unclaim(self, session: AsyncSession, event: ProtoMessage) -> None:
        """Forget the claim of an event whose work was undone, so its redelivery applies it."""
        event_id = event.meta.event_id  # type: ignore[attr-defined]
        await session.execute(
            delete(ProcessedEvent).where(
                ProcessedEvent.event_id == event_id, ProcessedEvent.consumer == self._consumer
            )
        )
        claims = session.info.get("claims")
        if claims is not None:
            claims[0].discard(event_id)

    async def _claim(self, session: AsyncSession, event: ProtoMessage) -> bool:
        """Record the event as processed; False if it already was (a redelivery)."""
        event_id = event.meta.event_id  # type: ignore[attr-defined]
        claims: tuple[set[str], set[str] | Rider] | None = session.info.get("claims")
        if claims is not None and event_id in claims[0]:
            claimed = claims[1]
            if isinstance(claimed, Rider):
                claimed = set(await settle(session, claimed))
                session.info["claims"] = (claims[0], claimed)
            if event_id in claimed:
                claimed.discard(event_id)  # the same event twice in a batch applies once
                return True
            logger.debug("%s %s already applied", type(event).__name__, event_id)
            return False
        claimed_now = await insert_ignore(
            session,
            ProcessedEvent,
            {"event_id": event_id, "consumer": self._consumer, "processed_at": self._clock()},
            ["event_id", "consumer"],
        )
        if not claimed_now:
            logger.debug("%s %s already applied", type(event).__name__, event_id)
        return claimed_now

    async def _apply(
        self, event: ProtoMessage, work: Callable[[AsyncSession], Awaitable[None]]
    ) -> None:
        nul = nul_field(event)
        if nul:
            raise InvalidArgument(nul, "contains a NUL character")
        shared = _batch_session.get()
        if shared is not None:
            if await self._claim(shared, event):
                await work(shared)
            return

        async def claimed(session: AsyncSession) -> None:
            if await self._claim(session, event):
                await work(session)

        # A value the database refuses fails the same way on every delivery: InvalidArgument,
        # for the bus to park the event. (In a batch, such a failure rolls the batch back and the
        # bus hands each event over alone, to here.)
        try:
            await self._uow.run(claimed)
        except Conflict as exc:
            # Another replica wrote the same key (an identity, a contact, an audit entry) at the
            # same moment; redelivered, this event sees the row that won.
            raise Retry(str(exc)) from exc

    async def _contact(self, session: AsyncSession, tenant: str, contact_id: str) -> Contact:
        routed: _RoutedRows | None = session.info.get(_RoutedRows.KEY)
        if routed is not None and contact_id in routed.contacts:
            row = routed.contacts[contact_id]
            if row.tenant != tenant:
                raise InvalidArgument("contact_id", "belongs to another tenant")
            # A plain row has the contact's columns: the handlers that see it (see `_preload`)
            # read and change only those.
            return cast(Contact, row)
        contact = await get_locked(session, Contact, contact_id)
        if contact is None:
            # Events can overtake the ContactCreated they refer to (another replica may be
            # recording it right now). Every handler looks its contact up before it changes
            # anything, so in a batch this event alone waits for its redelivery.
            raise RetryUntouched(f"contact {contact_id} is not recorded yet")
        if contact.tenant != tenant:
            raise InvalidArgument("contact_id", "belongs to another tenant")
        return contact

    async def _case(self, session: AsyncSession, contact: Contact) -> Case:
        if isinstance(contact, rows.PlainRow):
            routed: _RoutedRows = session.info[_RoutedRows.KEY]
            return cast(Case, routed.cases[contact.case_id])
        case = await get_locked(session, Case, contact.case_id)
        assert case is not None  # a foreign key
        return case

    # ---- ContactCreated ---------------------------------------------------------------------

    async def on_contact_created(self, event: events_pb2.ContactCreated) -> None:
        """Record a contact: resolve its customer, then join the case the channel threaded it into,
        or the customer's open case, or open one."""
        tenant = event.meta.tenant
        if not event.HasField("contact"):
            raise InvalidArgument("contact")
        c = event.contact
        _text(c.contact_id, "contact.contact_id", EXTERNAL_ID - len(INITIAL_SUFFIX), required=True)
        if c.tenant and c.tenant != tenant:
            raise InvalidArgument("contact.tenant", "does not match meta.tenant")
        _text(c.language, "contact.language", 35)
        _text(c.queue, "contact.queue")
        _text(c.case_id, "contact.case_id")
        _text(c.conversation_id, "contact.conversation_id")
        identities = customers.normalise_identities(
            c.identities, self.records.policies.default_phone_region, strict=False
        )
        text, content_type = message_body(c.content)
        created = _when(c.created_at) or _when(event.meta.occurred_at) or self._clock()
        channel = c.channel or event.meta.channel
        actor = f"channel:{contact_pb2.Channel.Name(channel).removeprefix('CHANNEL_').lower()}"
        objects = object_erasure.objects_of(tenant, c.attachments)

        async def work(session: AsyncSession) -> None:
            existing = await get_row(session, Contact, c.contact_id)
            if existing is not None:
                if existing.tenant != tenant:
                    raise InvalidArgument("contact.contact_id", "belongs to another tenant")
                return  # republished under a new event id: already recorded
            customer = await customers.resolve(
                session, tenant, identities, c.customer_name, created, actor
            )
            # Read before the reply reopens the case: a rating it starts with is the survey's.
            rated = await self._rated_by_reply(session, tenant, c)
            case, how = await self._join_or_open_case(session, customer, c, created, actor)
            score = c.survey_answer if how == RATING else None
            # The channel threaded a bare rating into a case this service does not know: no
            # agent will be offered it (the router does not queue it), so it ends as it arrives,
            # its message kept in the case it joined, and rates nothing.
            unmatched = bool(c.survey_answer) and how != RATING
            if unmatched:
                logger.warning("survey answer %s names no known case", c.contact_id)
            ends = score is not None or unmatched
            keys = keyring.of(session)
            bulk.new(
                session,
                Contact,
                {
                    "contact_id": c.contact_id,
                    "tenant": tenant,
                    "case_id": case.id,
                    "channel": channel,
                    "language": c.language,
                    "skills": list(c.skills),
                    "queue": c.queue,
                    "subject": keys.seal(session, tenant, customer.id, c.subject),
                    "agent_id": "",
                    # A rating needs no agent: it ends as it arrives.
                    "status": ENDED if ends else QUEUED,
                    "ended_at": created if ends else None,
                    "wrap_up_code": csat.SURVEY_REPLY_UNMATCHED
                    if unmatched
                    else csat.SURVEY_REPLY
                    if score is not None
                    else "",
                    "created_at": created,
                    # Who wrote, which may differ from the case's customer in a shared thread.
                    "customer_id": customer.id,
                    "conversation_id": c.conversation_id,
                    "priority": c.priority,
                },
            )
            row_added(session, Contact, c.contact_id)
            if objects:
                # An erasure that held the customer's lock while this waited for it has
                # committed: the contact is the erased customer's, and so are its objects.
                new = customer.id in session.info.get("new_customers", ())
                erased = not new and await object_erasure.is_erased(session, tenant, customer.id)
                await object_erasure.record(session, tenant, c.contact_id, objects, erased, created)
            if c.content:
                bulk.add_row(
                    session,
                    Message,
                    {
                        "message_id": c.contact_id + INITIAL_SUFFIX,
                        "contact_id": c.contact_id,
                        "tenant": tenant,
                        "author": contact_pb2.AUTHOR_CUSTOMER,
                        "agent_id": "",
                        "text": keys.seal(session, tenant, customer.id, text),
                        "content_type": content_type,
                        "sent_at": created,
                    },
                )
            await self.records.audit(
                session,
                case,
                actor,
                "contact_added",
                {
                    "contact_id": c.contact_id,
                    "channel": contact_pb2.Channel.Name(channel),
                    "joined": how,
                },
                created,
            )
            if score is not None:
                await csat.record_reply_rating(session, case, c.contact_id, score, text, created)
                await self.records.audit(
                    session,
                    case,
                    "customer",
                    "satisfaction_rated",
                    {"contact_id": c.contact_id, "score": score, "channel": "email"},
                    created,
                )
            elif unmatched:
                await self.records.audit(
                    session,
                    case,
                    actor,
                    "survey_answer_unmatched",
                    {"contact_id": c.contact_id, "named_case": c.case_id},
                    created,
                )
                if how == "opened":
                    # A case of its own keeps the message; it holds nothing to do, so it is
                    # resolved as it opens (and not surveyed: its only contact is a rating).
                    await self.records.change_status(
                        session,
                        case,
                        lifecycle.RESOLVED,
                        actor,
                        created,
                        reason="a survey rating for a case this service does not know",
                    )
            elif how != "opened":
                await self._customer_wrote(session, case, created)
            if rated is not None:
                surveyed, given = rated
                await csat.record_reply_rating(
                    session, surveyed, c.contact_id, given, text, created
                )
                await self.records.audit(
                    session,
                    surveyed,
                    "customer",
                    "satisfaction_rated",
                    {"contact_id": c.contact_id, "score": given, "channel": "email"},
                    created,
                )
            logger.info("contact %s recorded in case %s (%s)", c.contact_id, case.id, how)

        await self._apply(event, work)

    async def _rated_by_reply(
        self, session: AsyncSession, tenant: str, contact: contact_pb2.Contact
    ) -> tuple[Case, int] | None:
        """The surveyed case and the rating a reply to its survey starts with, when the reply
        has more to say (a request, routed as usual); None for any other contact."""
        if contact.survey_answer or not contact.case_id:
            return None
        if contact.channel != contact_pb2.CHANNEL_EMAIL:
            return None
        case = await self._threaded_case(session, tenant, contact.case_id)
        if case is None or case.status not in CLOSED_CASE:
            return None
        score = await csat.survey_rating(session, case, contact)
        return (case, score) if score is not None else None

    async def _threaded_case(self, session: AsyncSession, tenant: str, ref: str) -> Case | None:
        """The case a channel named in Contact.case_id: by id or by reference."""
        conditions = [Case.id == ref]
        if looks_like_reference(ref):
            conditions.append(Case.reference == normalise(ref))
        return (
            await session.execute(
                select(Case).where(Case.tenant == tenant, or_(*conditions)).with_for_update()
            )
        ).scalar_one_or_none()

    async def _join_or_open_case(
        self,
        session: AsyncSession,
        customer: Customer,
        contact: contact_pb2.Contact,
        created: datetime,
        actor: str,
    ) -> tuple[Case, str]:
        now = self._clock()
        follow_up_of = ""
        if contact.case_id:
            case = await self._threaded_case(session, customer.tenant, contact.case_id)
            if case is not None and contact.survey_answer:
                # The channel read nothing but a rating in answer to the case's survey: it rates
                # the case, whatever its status; it neither reopens it nor opens a follow-up, and
                # the router offers it to no agent.
                case.updated_at = now
                return case, RATING
            if case is not None and case.status != case_pb2.CASE_STATUS_CLOSED:
                case.updated_at = now
                if case.status in lifecycle.SETTLED:
                    # The customer answered in the case's thread: it is not solved after all.
                    await self.records.change_status(
                        session,
                        case,
                        lifecycle.IN_PROGRESS,
                        actor,
                        created,
                        reason="the customer wrote again",
                    )
                    reopened: dict[str, list[Case]] | None = session.info.get("open_cases")
                    if reopened is not None and case.customer_id in reopened:
                        reopened[case.customer_id].append(case)  # open again
                return case, "threaded"
            if case is not None:
                follow_up_of = case.reference  # a closed case stays closed
            else:
                logger.info(
                    "contact %s names an unknown case; using its customer", contact.contact_id
                )
        template = self._catalogue_template(customer.tenant, contact)
        if template is not None and not follow_up_of:
            # A request from the portal's catalogue is a case of its own, of the template's kind.
            case = await self.records.open_case(
                session,
                customer,
                actor,
                created,
                subject=case_subject(contact) or template.subject,
                case_type=template.case_type,
                priority=template.priority,
                queue=template.queue or contact.queue,
                template=template.name,
                contact_id=contact.contact_id,
            )
            case.updated_at = now
            return case, "opened"
        case = None
        index: dict[str, list[Case]] | None = session.info.get("open_cases")
        if index is not None and customer.id in index:
            case = _latest_open(index[customer.id], customer.id)
        elif customer.id not in session.info.get("new_customers", ()):  # a new one has no case
            result = await session.execute(
                select(Case)
                .where(Case.customer_id == customer.id, Case.status.not_in(CLOSED_CASE))
                .order_by(Case.created_at.desc(), Case.id)
                .limit(1)
                .with_for_update()
            )
            case = result.scalar_one_or_none()
        if case is not None:
            case.updated_at = now
            if not case.subject:
                case.subject = keyring.of(session).seal(
                    session, case.tenant, case.customer_id, case_subject(contact)
                )
            return case, "open_case"
        case = await self.records.open_case(
            session,
            customer,
            actor,
            created,
            subject=case_subject(contact),
            priority=case_priority(contact.priority),
            queue=contact.queue,
            extra={"follow_up_of": follow_up_of} if follow_up_of else None,
            contact_id=contact.contact_id,
        )
        case.updated_at = now
        return case, "opened"

    def _catalogue_template(
        self, tenant: str, contact: contact_pb2.Contact
    ) -> sla_policy.Template | None:
        """The catalogue template a portal request names, if the tenant offers it."""
        if not contact.template:
            return None
        template = self.records.policies.template(tenant, contact.template)
        if template is None or template.catalogue is None:
            logger.info("contact %s names no catalogue template", contact.contact_id)
            return None
        return template

    async def _customer_wrote(self, session: AsyncSession, case: Case, at: datetime) -> None:
        """The customer came back: a case waiting on them resumes, and once the first response
        was given, the next response is due."""
        if case.status == lifecycle.PENDING:
            await self.records.change_status(
                session, case, lifecycle.IN_PROGRESS, SYSTEM, at, reason="the customer replied"
            )
        if case.first_response_at is not None:
            await self.records.sla.start(self.records, session, case, "next_response", at)

    async def _agent_responded(
        self, session: AsyncSession, case: Case, agent_id: str, at: datetime
    ) -> None:
        if case.first_response_at is None:
            case.first_response_at = at
            await self.records.sla.met(self.records, session, case, "first_response", at)
        else:
            await self.records.sla.met(self.records, session, case, "next_response", at)
        await self.records.acted(session, case, f"agent:{agent_id}" if agent_id else SYSTEM, at)

    # ---- MessageAdded -----------------------------------------------------------------------

    async def on_message_added(self, event: events_pb2.MessageAdded) -> None:
        """Append a message to its contact's conversation (once per message_id)."""
        tenant = event.meta.tenant
        if not event.HasField("message"):
            raise InvalidArgument("message")
        m = event.message
        _text(m.message_id, "message.message_id", required=True)
        _text(m.contact_id, "message.contact_id", required=True)
        _text(m.agent_id, "message.agent_id")
        text, content_type = message_body(m.parts)
        sent = _when(m.sent_at) or _when(event.meta.occurred_at) or self._clock()
        objects = object_erasure.objects_of(tenant, m.attachments)

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, m.contact_id)
            values = {
                "message_id": m.message_id,
                "contact_id": m.contact_id,
                "tenant": tenant,
                "author": m.author,
                "agent_id": m.agent_id,
                "text": keyring.of(session).seal(session, tenant, contact.customer_id or "", text),
                "content_type": content_type,
                "sent_at": sent,
            }
            if not await self._insert_message(session, values):
                return
            if objects:
                erased = await object_erasure.is_erased(session, tenant, contact.customer_id)
                await object_erasure.record(session, tenant, m.contact_id, objects, erased, sent)
            case = await self._case(session, contact)
            case.updated_at = self._clock()
            await self.records.audit(
                session,
                case,
                f"agent:{m.agent_id}" if m.agent_id else "customer",
                "message_added",
                {
                    "contact_id": m.contact_id,
                    "message_id": m.message_id,
                    "author": contact_pb2.Author.Name(m.author),
                },
                sent,
            )
            if m.author == contact_pb2.AUTHOR_AGENT:
                if contact.first_agent_response_at is None:
                    contact.first_agent_response_at = sent
                await self._agent_responded(session, case, m.agent_id, sent)
            elif m.author == contact_pb2.AUTHOR_CUSTOMER:
                await self._customer_wrote(session, case, sent)

        await self._apply(event, work)

    @staticmethod
    async def _insert_message(session: AsyncSession, values: dict[str, object]) -> bool:
        """Insert a message unless one with its id is stored; True when this call inserted it.
        A batch read which of its message ids are stored (`_preload`) and stages the rest."""
        known: dict[str, bool] | None = session.info.get("message_ids")
        message_id = values["message_id"]
        if known is None or message_id not in known:
            return await insert_ignore(session, Message, values, ["message_id"])
        if known[message_id]:  # type: ignore[index]
            return False
        known[message_id] = True  # type: ignore[index]
        bulk.add_row(session, Message, values)
        return True

    # ---- routing and lifecycle --------------------------------------------------------------

    async def on_contact_queued(self, event: events_pb2.ContactQueued) -> None:
        _text(event.contact_id, "contact_id", required=True)
        _text(event.queue, "queue")
        await self._set_status(event, event.contact_id, QUEUED, queue=event.queue)

    async def on_contact_offered(self, event: events_pb2.ContactOffered) -> None:
        _text(event.contact_id, "contact_id", required=True)
        await self._set_status(event, event.contact_id, OFFERED)

    async def on_contact_offer_withdrawn(self, event: events_pb2.ContactOfferWithdrawn) -> None:
        """An offer not accepted (timed out, declined, the agent went away): a contact that waits
        in its queue again is recorded as queued, not as offered to someone it is not."""
        _text(event.contact_id, "contact_id", required=True)
        if event.requeued:
            await self._set_status(event, event.contact_id, QUEUED)

    async def _set_status(
        self, event: ProtoMessage, contact_id: str, status: str, queue: str = ""
    ) -> None:
        tenant = event.meta.tenant  # type: ignore[attr-defined]
        at = _when(event.meta.occurred_at) or self._clock()  # type: ignore[attr-defined]

        async def work(session: AsyncSession) -> None:
            status_rows: _StatusRows | None = session.info.get(_StatusRows.KEY)
            if status_rows is not None and contact_id in status_rows.loaded:
                status_rows.apply(tenant, contact_id, status, queue, at, self._clock())
                return
            contact = await self._contact(session, tenant, contact_id)
            if queue:
                contact.queue = queue
            if status == QUEUED and contact.queued_at is None:
                contact.queued_at = at
            if status == OFFERED and contact.offered_at is None:
                contact.offered_at = at
            # A late queued/offered must not undo an assignment or an end.
            if contact.status == ASSIGNED or contact.status in TERMINAL:
                return
            contact.status = status
            case = await self._case(session, contact)
            case.updated_at = self._clock()

        await self._apply(event, work)

    async def on_contact_assigned(self, event: events_pb2.ContactAssigned) -> None:
        """The contact is with an agent; so is its case."""
        tenant = event.meta.tenant
        _text(event.contact_id, "contact_id", required=True)
        _text(event.agent_id, "agent_id", required=True)
        _text(event.queue, "queue")
        assigned = _when(event.meta.occurred_at) or self._clock()

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, event.contact_id)
            contact.agent_id = event.agent_id
            contact.assigned_at = assigned
            if event.queue:
                contact.queue = event.queue
            if contact.wait_ms is None and _ms(event.waited) is not None:
                contact.wait_ms = _ms(event.waited)
            if contact.status not in TERMINAL:
                contact.status = ASSIGNED
            case = await self._case(session, contact)
            # A rating in answer to the survey is no request: it does not take the case.
            if case.status != lifecycle.CLOSED and contact.wrap_up_code not in csat.SURVEY_REPLIES:
                await self.records.assign(
                    session, case, event.agent_id, f"router:{event.agent_id}", assigned
                )
            if contact.channel in LIVE_CHANNELS:
                await self._agent_responded(session, case, event.agent_id, assigned)
            case.updated_at = self._clock()
            logger.info("contact %s assigned to %s", event.contact_id, event.agent_id)

        await self._apply(event, work)

    async def on_contact_ended(self, event: events_pb2.ContactEnded) -> None:
        _text(event.contact_id, "contact_id", required=True)
        _text(event.agent_id, "agent_id")
        _text(event.wrap_up_code, "wrap_up_code")
        _text(event.queue, "queue")
        await self._end(event, event.contact_id, ENDED, agent_id=event.agent_id)

    async def on_contact_abandoned(self, event: events_pb2.ContactAbandoned) -> None:
        _text(event.contact_id, "contact_id", required=True)
        _text(event.queue, "queue")
        await self._end(event, event.contact_id, ABANDONED)

    async def _end(
        self, event: ProtoMessage, contact_id: str, status: str, agent_id: str = ""
    ) -> None:
        tenant = event.meta.tenant  # type: ignore[attr-defined]
        ended = _when(event.meta.occurred_at) or self._clock()  # type: ignore[attr-defined]

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, contact_id)
            resolves = False
            if isinstance(event, events_pb2.ContactEnded):
                resolves = (
                    event.wrap_up_code in RESOLVING_WRAP_UP_CODES and not contact.wrap_up_code
                )
                # Durations the router measured; a later ContactEnded may complete the wrap-up.
                for column, value in (
                    ("wait_ms", _ms(event.wait)),
                    ("talk_ms", _ms(event.talk)),
                    ("hold_ms", _ms(event.hold)),
                    ("wrap_up_ms", _ms(event.wrap_up)),
                ):
                    if value is not None and getattr(contact, column) in (None, 0):
                        setattr(contact, column, value)
                if event.wrap_up_code and not contact.wrap_up_code:
                    contact.wrap_up_code = event.wrap_up_code
                if event.reason and not contact.end_reason:
                    contact.end_reason = event.reason
                if event.queue and not contact.queue:
                    contact.queue = event.queue
            elif isinstance(event, events_pb2.ContactAbandoned):
                if contact.abandoned_at is None and contact.status not in TERMINAL:
                    contact.abandoned_at = ended
                if contact.wait_ms is None and _ms(event.waited) is not None:
                    contact.wait_ms = _ms(event.waited)
                if event.queue and not contact.queue:
                    contact.queue = event.queue
            if contact.status not in TERMINAL:  # the first end is the one that happened
                contact.status = status
                contact.ended_at = ended
                if agent_id and not contact.agent_id:
                    contact.agent_id = agent_id
                case = await self._case(session, contact)
                case.updated_at = self._clock()
                await self.records.audit(
                    session, case, SYSTEM, f"contact_{status}", {"contact_id": contact_id}, ended
                )
                logger.info("contact %s %s", contact_id, status)
            if resolves:
                await self._resolve_on_wrap_up(session, contact, agent_id or SYSTEM, ended)

        await self._apply(event, work)

    async def _resolve_on_wrap_up(
        self, session: AsyncSession, contact: Contact, actor: str, at: datetime
    ) -> None:
        """The agent wrapped the contact up as resolved: so is its case, unless the case is no
        longer open or another of its contacts is still being worked on."""
        case = await self._case(session, contact)
        if case.status not in lifecycle.OPEN:
            return
        others = await session.scalar(
            select(Contact.contact_id).where(
                Contact.case_id == case.id,
                Contact.contact_id != contact.contact_id,
                Contact.status.not_in(TERMINAL),
            )
        )
        if others is not None:
            return
        await self.records.resolve(session, case, actor, at, reason="wrap-up: resolved")
        logger.info("case %s resolved at wrap-up of contact %s", case.reference, contact.contact_id)

    async def on_contact_held(self, event: events_pb2.ContactHeld) -> None:
        """Hold periods: held=true opens one, held=false closes the open one."""
        tenant = event.meta.tenant
        _text(event.contact_id, "contact_id", required=True)
        _text(event.agent_id, "agent_id")
        at = _when(event.meta.occurred_at) or self._clock()

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, event.contact_id)
            holds = list(
                await session.scalars(
                    select(ContactHold)
                    .where(ContactHold.contact_id == contact.contact_id)
                    .order_by(ContactHold.started_at)
                )
            )
            open_hold = next((h for h in holds if h.ended_at is None), None)
            if event.held:
                if open_hold is None and not any(h.started_at == at for h in holds):
                    session.add(
                        ContactHold(
                            contact_id=contact.contact_id,
                            started_at=at,
                            tenant=tenant,
                            agent_id=event.agent_id,
                            ended_at=None,
                        )
                    )
            elif open_hold is not None and at >= open_hold.started_at:
                open_hold.ended_at = at
                total = sum(
                    ((h.ended_at - h.started_at).total_seconds() for h in holds if h.ended_at),
                    0.0,
                )
                contact.hold_ms = int(total * 1000)

        await self._apply(event, work)

    async def on_contact_transferred(self, event: events_pb2.ContactTransferred) -> None:
        """A blind transfer: the contact waits in another queue."""
        tenant = event.meta.tenant
        _text(event.contact_id, "contact_id", required=True)
        _text(event.to_queue, "to_queue", required=True)
        _text(event.from_agent_id, "from_agent_id")
        at = _when(event.meta.occurred_at) or self._clock()

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, event.contact_id)
            previous = contact.queue
            contact.queue = event.to_queue
            contact.transfers += 1
            if contact.status not in TERMINAL:
                contact.status = QUEUED
            case = await self._case(session, contact)
            case.updated_at = self._clock()
            await self.records.audit(
                session,
                case,
                f"agent:{event.from_agent_id}" if event.from_agent_id else SYSTEM,
                "contact_transferred",
                {
                    "contact_id": contact.contact_id,
                    "from_queue": previous,
                    "to_queue": event.to_queue,
                },
                at,
            )

        await self._apply(event, work)

    async def on_contact_supervised(self, event: events_pb2.ContactSupervised) -> None:
        """A supervisor watched a live chat or joined a call, changed how it takes part in the
        call, stopped, or sent the agent a private note: each act is audited on the contact's case
        (actor `supervisor:<id>`); a note is also kept as an internal note of the case, by the
        supervisor."""
        tenant = event.meta.tenant
        _text(event.contact_id, "contact_id", required=True)
        _text(event.supervisor_id, "supervisor_id", required=True)
        _text(event.agent_id, "agent_id")
        action = SUPERVISION_ACTIONS.get(event.action)
        if action is None:
            raise InvalidArgument("action", "must be started, stopped, note or mode_changed")
        if event.action == events_pb2.SUPERVISION_ACTION_NOTE and not event.text.strip():
            raise InvalidArgument("text", "a note needs text")
        _text(event.text, "text", MAX_NOTE_CHARS)
        _text(event.supervision_id, "supervision_id")
        _text(event.changed_by, "changed_by")
        at = _when(event.meta.occurred_at) or self._clock()

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, event.contact_id)
            case = await self._case(session, contact)
            data = {"contact_id": contact.contact_id, "agent_id": event.agent_id}
            if event.supervision_id:  # a call's supervision: which one, and how it takes part
                data["supervision_id"] = event.supervision_id
                data["mode"] = SUPERVISION_MODES.get(event.mode, "monitor")
                if event.changed_by:
                    data["changed_by"] = event.changed_by
            if event.action == events_pb2.SUPERVISION_ACTION_NOTE:
                note = await self.records.add_note(
                    session, case, event.supervisor_id, event.text, at
                )
                data["note_id"] = note.id
            await self.records.audit(
                session, case, f"supervisor:{event.supervisor_id}", action, data, at
            )

        await self._apply(event, work)

    async def on_recording_played(self, event: events_pb2.RecordingPlayed) -> None:
        """Someone opened a call's recording to play it: audited on the contact's case (actor
        `<role>:<id>`, action `recording_played`), once per playback the inbox started."""
        tenant = event.meta.tenant
        _text(event.contact_id, "contact_id", required=True)
        _text(event.player_id, "player_id", required=True)
        held = sorted(_text(r, "roles") for r in event.roles)
        _text(event.via, "via")
        at = _when(event.meta.occurred_at) or self._clock()
        actor_role = next((r for r in PLAYER_ROLES if r in held), roles.AGENT)

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, event.contact_id)
            case = await self._case(session, contact)
            data = {"contact_id": contact.contact_id, "roles": held, "via": event.via}
            await self.records.audit(
                session, case, f"{actor_role}:{event.player_id}", "recording_played", data, at
            )

        await self._apply(event, work)

    # ---- agents' states (the agent-states report) ---------------------------------------------

    async def on_agent_state_changed(self, event: events_pb2.AgentStateChanged) -> None:
        """An agent's presence changed (signed in or out, available, wrap-up, a break, not
        responding): kept as it is, each change lasting until the agent's next."""
        _text(event.agent_id, "agent_id", required=True)
        presence = PRESENCE_NAMES.get(event.presence)
        if presence is None:
            raise InvalidArgument("presence", f"{event.presence} is not a presence")
        values = {
            "event_id": event.meta.event_id,
            "tenant": event.meta.tenant,
            "agent_id": event.agent_id,
            "presence": presence,
            "reason": _text(event.reason, "reason"),
            "changed_by": _text(event.changed_by, "changed_by"),
            "changed_at": _when(event.meta.occurred_at) or self._clock(),
        }

        async def work(session: AsyncSession) -> None:
            bulk.add_row(session, AgentStateChange, values)

        await self._apply(event, work)

    # ---- objects the channels stored (for erasure) -----------------------------------------

    async def on_email_received(self, event: email_pb2.EmailReceived) -> None:
        """Record the objects of a mail (the raw message, its attachments) for its contact."""
        refs = [event.raw, *event.attachments] if event.HasField("raw") else event.attachments
        await self._objects_stored(event, event.contact_id, refs)

    async def on_fax_processed(self, event: fax_pb2.FaxProcessed) -> None:
        """Record the objects of a fax (the document, its page images and thumbnails)."""
        refs = [event.original, *(r for p in event.pages for r in (p.image, p.thumbnail))]
        await self._objects_stored(event, event.contact_id, refs)

    async def _objects_stored(
        self, event: ProtoMessage, contact_id: str, refs: Sequence[contact_pb2.AttachmentRef]
    ) -> None:
        """Record what a channel stored for `contact_id` (before or after its ContactCreated);
        stage its deletion at once when the contact's customer is erased already."""
        tenant = event.meta.tenant  # type: ignore[attr-defined]
        _text(contact_id, "contact_id", required=True)
        objects = object_erasure.objects_of(tenant, refs)
        at = _when(event.meta.occurred_at) or self._clock()  # type: ignore[attr-defined]

        async def work(session: AsyncSession) -> None:
            contact = await get_locked(session, Contact, contact_id)
            if contact is not None and contact.tenant != tenant:
                raise InvalidArgument("contact_id", "belongs to another tenant")
            owner = contact.customer_id if contact is not None else None
            erased = await object_erasure.is_erased(session, tenant, owner)
            await object_erasure.record(session, tenant, contact_id, objects, erased, at)

        await self._apply(event, work)
