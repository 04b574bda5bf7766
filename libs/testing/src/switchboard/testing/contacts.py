"""Contact events for tests, as the channels publish them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from switchboard.core import events
from switchboard.v1 import contact_pb2, events_pb2


def contact_created(
    cid: str,
    *,
    tenant: str = "acme",
    channel: contact_pb2.Channel.ValueType = contact_pb2.CHANNEL_CHAT,
    email: str = "",
    language: str = "",
    queue: str = "",
    skills: Sequence[str] = (),
    subject: str = "",
    text: str = "",
    name: str = "",
    conversation_id: str = "",
    at: datetime | None = None,
    meta: events_pb2.EventMeta | None = None,
    source: str = "test",
) -> events_pb2.ContactCreated:
    """A ContactCreated: the customer known by `email` (if given), the first message `text` (if
    given), created `at` (if given); `meta` defaults to a new one of `tenant` and `channel`, from
    `source`."""
    contact = contact_pb2.Contact(
        contact_id=cid,
        tenant=tenant,
        channel=channel,
        language=language,
        queue=queue,
        skills=skills,
        subject=subject,
        customer_name=name,
        conversation_id=conversation_id,
    )
    if email:
        contact.identities.append(
            contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_EMAIL, value=email)
        )
    if text:
        contact.content.append(contact_pb2.ContentPart(content_type="text/plain", text=text))
    if at is not None:
        contact.created_at.FromDatetime(at)
    return events_pb2.ContactCreated(
        meta=meta or events.new_meta(tenant, channel, source), contact=contact
    )


def chat_contact_created(
    cid: str, language: str = "ko", tenant: str = "acme"
) -> events_pb2.ContactCreated:
    """A ContactCreated for a chat contact, as a channel would publish it."""
    return contact_created(cid, tenant=tenant, language=language)
