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


def assigned_conversations(
    contacts: int, customers: int, tenant: str = "acme", prefix: str = "c"
) -> list[events_pb2.ContactCreated | events_pb2.ContactAssigned | events_pb2.MessageAdded]:
    """For each of `contacts` chat contacts (written by `customers` customers in turn, so several
    join one customer's case): its ContactCreated, its ContactAssigned and the agent's reply, in
    that order per contact, as the channel, the router and the agent publish them."""
    out: list[events_pb2.ContactCreated | events_pb2.ContactAssigned | events_pb2.MessageAdded] = []
    chat = contact_pb2.CHANNEL_CHAT
    for i in range(contacts):
        cid = f"{prefix}{i}"
        agent = f"agent-{i % 7}"
        out.append(
            contact_created(
                cid, tenant=tenant, email=f"customer-{i % customers}@example.com", text=f"hi {i}"
            )
        )
        out.append(
            events_pb2.ContactAssigned(
                meta=events.new_meta(tenant, chat, "router"),
                contact_id=cid,
                agent_id=agent,
                queue="general",
            )
        )
        out.append(
            events_pb2.MessageAdded(
                meta=events.new_meta(tenant, chat, "chat"),
                message=contact_pb2.Message(
                    message_id=f"{cid}-reply",
                    contact_id=cid,
                    author=contact_pb2.AUTHOR_AGENT,
                    agent_id=agent,
                    parts=[contact_pb2.ContentPart(content_type="text/plain", text=f"re {i}")],
                ),
            )
        )
    return out
