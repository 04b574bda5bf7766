"""The case store's tables, as SQLAlchemy 2 declarative models (the migrations mirror them)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from switchboard.case.adapters.crypto import SealedText

# Stable constraint names, so migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = 32  # uuid4 hex
EXTERNAL_ID = 255  # ids chosen by channels and partners


def new_id() -> str:
    """A random UUID (version 4) as 32 hex digits: `uuid.uuid4().hex`, without making a UUID
    object (a case store makes several per contact)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return raw.hex()


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no offset, so it is restored)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # On SQLite, the text SQLAlchemy's DATETIME stores ("2024-05-01 09:30:00.000000", UTC)
        # in one step: the case store writes tens of these per contact.
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:
                if value.tzinfo is None:
                    raise ValueError("naive datetime given to a UTC column")
                value = value.astimezone(UTC)
            return value.isoformat(" ", "microseconds")[:26]

        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        # SQLAlchemy's DATETIME parsing and the offset restored, in one step.
        parse = DateTime(timezone=True).dialect_impl(dialect).result_processor(dialect, coltype)
        assert parse is not None

        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            at: Any = parse(value)
            return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(ID), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    display_name: Mapped[str] = mapped_column(SealedText, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    # Set when this customer was merged into another: its identities and cases moved there.
    merged_into: Mapped[str | None] = mapped_column(String(ID), nullable=True)


class CustomerIdentity(Base):
    """One way of recognising a customer; the key makes an identity belong to one customer.
    `value` is the identity's blind index (keyring.Keyring.index), `sealed` the identity itself."""

    __tablename__ = "customer_identities"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    sealed: Mapped[str | None] = mapped_column(SealedText, nullable=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    customer: Mapped[Customer] = relationship(lazy="raise")


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        # ListCases: a tenant's cases newest first, optionally by status.
        Index("ix_cases_tenant_created", "tenant", "created_at", "id"),
        Index("ix_cases_tenant_status_created", "tenant", "status", "created_at"),
        # ContactCreated: the customer's open case.
        Index("ix_cases_customer_status", "customer_id", "status"),
        Index("uq_cases_tenant_reference", "tenant", "reference", unique=True),
    )

    id: Mapped[str] = mapped_column(String(ID), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(63))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    customer: Mapped[Customer] = relationship(lazy="raise")
    status: Mapped[int] = mapped_column(Integer)  # switchboard.v1.CaseStatus
    subject: Mapped[str] = mapped_column(SealedText, default="")
    assigned_agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    # A short human reference, unique per tenant (e.g. C-7K3M9Q): subjects, reply addresses.
    reference: Mapped[str] = mapped_column(String(16), server_default="")
    case_type: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # CaseType
    priority: Mapped[int] = mapped_column(Integer, default=2, server_default="2")  # CasePriority
    queue: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="", server_default="")
    template: Mapped[str] = mapped_column(String(127), default="", server_default="")
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reopened_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (Index("ix_contacts_case_created", "case_id", "created_at"),)

    contact_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"))

    case: Mapped[Case] = relationship(lazy="raise")
    channel: Mapped[int] = mapped_column(Integer)  # switchboard.v1.Channel
    language: Mapped[str] = mapped_column(String(35), default="")
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    queue: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    subject: Mapped[str] = mapped_column(SealedText, default="")
    agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    status: Mapped[str] = mapped_column(String(16))  # queued/offered/assigned/ended/abandoned
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The facts the KPIs are computed from (see docs/case.md, "Stored contact facts").
    customer_id: Mapped[str | None] = mapped_column(String(ID), nullable=True, index=True)
    conversation_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="", server_default="")
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    abandoned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # EndReason
    wrap_up_code: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="", server_default="")
    wait_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    talk_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    hold_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    wrap_up_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    first_agent_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    transfers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ContactHold(Base):
    """One period a contact spent on hold (ContactHeld held=true, then held=false)."""

    __tablename__ = "contact_holds"

    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.contact_id"), primary_key=True)
    contact: Mapped[Contact] = relationship(lazy="raise")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CaseNote(Base):
    __tablename__ = "case_notes"
    __table_args__ = (Index("ix_case_notes_case_created", "case_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(ID), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"))
    case: Mapped[Case] = relationship(lazy="raise")
    tenant: Mapped[str] = mapped_column(String(63))
    author: Mapped[str] = mapped_column(String(EXTERNAL_ID))
    text: Mapped[str] = mapped_column(SealedText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """One append-only entry of an entity's audit trail (a case, or a customer for merges and
    splits). `hash` = SHA-256 over `prev_hash` and the entry's canonical JSON, so any edit of a
    stored entry breaks the chain from there on; (entity, entity_id, seq) forbids forks."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_tenant_at", "tenant", "at"),)

    entity: Mapped[str] = mapped_column(String(16), primary_key=True)  # case, customer
    entity_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(EXTERNAL_ID))
    action: Mapped[str] = mapped_column(String(64))
    # Canonical JSON, sealed (crypto.seal) since the keyring: the hash covers what is stored.
    data: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class SlaTimer(Base):
    """One SLA target of a case (first_response, next_response, resolution), measured in the
    policy's business time: `elapsed_s` accumulated until `running_since` (None while paused)."""

    __tablename__ = "sla_timers"
    __table_args__ = (Index("ix_sla_timers_state", "state"),)

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    case: Mapped[Case] = relationship(lazy="raise")
    metric: Mapped[str] = mapped_column(String(16), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    policy: Mapped[str] = mapped_column(String(127))
    target_s: Mapped[int] = mapped_column(Integer)
    elapsed_s: Mapped[float] = mapped_column(Float, default=0.0)
    state: Mapped[str] = mapped_column(String(16))  # running, paused, met, cancelled
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    running_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    fired: Mapped[list[int]] = mapped_column(JSON, default=list)  # thresholds (%) reached
    # The last escalation, repeated every policy interval until someone acts on the case.
    escalated_threshold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    next_repeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    repeats: Mapped[int] = mapped_column(Integer, default=0)


class ScheduledRun(Base):
    """One occurrence of a recurring task that opened a case: the key makes it happen once."""

    __tablename__ = "scheduled_runs"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    task: Mapped[str] = mapped_column(String(127), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    case_id: Mapped[str] = mapped_column(String(ID))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxEvent(Base):
    """An event written in the same transaction as the change it reports, published to the bus
    afterwards by the relay (and deleted once JetStream acknowledged it)."""

    __tablename__ = "outbox"

    event_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    type_name: Mapped[str] = mapped_column(String(127))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class OutboxMail(Base):
    """A mail written in the same transaction as the change that calls for it (an escalation),
    sent after the commit by the relay. `key` names the mail, so staging it again is a no-op and
    it goes out once; a sent row keeps its key as the record of that."""

    __tablename__ = "mail_outbox"

    key: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    case_id: Mapped[str] = mapped_column(String(ID))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Not tried before this time: a relay's claim on the mail while it sends it, or the back-off
    # after a failed attempt. None: due now.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_contact_sent", "contact_id", "sent_at", "message_id"),)

    message_id: Mapped[str] = mapped_column(String(2 * EXTERNAL_ID), primary_key=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.contact_id"))
    contact: Mapped[Contact] = relationship(lazy="raise")
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    author: Mapped[int] = mapped_column(Integer)  # switchboard.v1.Author
    agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    text: Mapped[str] = mapped_column(SealedText, default="")
    content_type: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="text/plain")
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProcessedEvent(Base):
    """Which events each durable consumer has applied: the idempotency key of every handler."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class DataKey(Base):
    """A data key, wrapped: a tenant's (customer_id "") by a master key, a customer's by its
    tenant's key. `wrapped` is None once the key was destroyed (erasure). `seq` orders the keys
    as they were added, so a replica reads only the keys added since it last looked."""

    __tablename__ = "data_keys"
    __table_args__ = (Index("uq_data_keys_owner", "tenant", "customer_id", unique=True),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(ID), unique=True)
    tenant: Mapped[str] = mapped_column(String(63))
    customer_id: Mapped[str] = mapped_column(String(ID))
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    wrapped_by: Mapped[str] = mapped_column(String(ID))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


OBJECT_NAME = 1024  # object store names chosen by the channels


class ContactObject(Base):
    """An object a channel stored in a JetStream object store for a contact (raw mail, fax
    document and pages, chat upload), as its events named it: what erasing the contact's
    customer deletes. Recorded by contact id, whether or not the contact is recorded yet."""

    __tablename__ = "contact_objects"
    __table_args__ = (Index("ix_contact_objects_object", "bucket", "object_name"),)

    contact_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    bucket: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    object_name: Mapped[str] = mapped_column(String(OBJECT_NAME), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ObjectErasure(Base):
    """An object to delete from the object store, written in the transaction that erased its
    customer (or that learnt of it after the erasure); deleted once the object is gone, so a
    relay that fails or dies leaves it for the next round."""

    __tablename__ = "object_erasures"

    bucket: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    object_name: Mapped[str] = mapped_column(String(OBJECT_NAME), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Not tried before this time: a relay's claim while it deletes, or the back-off after a
    # failed attempt. None: due now.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
