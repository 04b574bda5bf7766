"""The case store's tables, as SQLAlchemy 2 declarative models (the migrations mirror them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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
    return uuid.uuid4().hex


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
    display_name: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class CustomerIdentity(Base):
    """One way of recognising a customer; the key makes an identity belong to one customer."""

    __tablename__ = "customer_identities"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        # ListCases: a tenant's cases newest first, optionally by status.
        Index("ix_cases_tenant_created", "tenant", "created_at", "id"),
        Index("ix_cases_tenant_status_created", "tenant", "status", "created_at"),
        # ContactCreated: the customer's open case.
        Index("ix_cases_customer_status", "customer_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(ID), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(63))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    status: Mapped[int] = mapped_column(Integer)  # switchboard.v1.CaseStatus
    subject: Mapped[str] = mapped_column(Text, default="")
    assigned_agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (Index("ix_contacts_case_created", "case_id", "created_at"),)

    contact_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"))
    channel: Mapped[int] = mapped_column(Integer)  # switchboard.v1.Channel
    language: Mapped[str] = mapped_column(String(35), default="")
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    queue: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    status: Mapped[str] = mapped_column(String(16))  # queued/offered/assigned/ended/abandoned
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_contact_sent", "contact_id", "sent_at", "message_id"),)

    message_id: Mapped[str] = mapped_column(String(2 * EXTERNAL_ID), primary_key=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.contact_id"))
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    author: Mapped[int] = mapped_column(Integer)  # switchboard.v1.Author
    agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    content_type: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="text/plain")
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProcessedEvent(Base):
    """Which events each durable consumer has applied: the idempotency key of every handler."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
