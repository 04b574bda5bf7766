"""Contact events for tests."""

from __future__ import annotations

from switchboard.core import events
from switchboard.v1 import contact_pb2, events_pb2


def chat_contact_created(
    cid: str, language: str = "ko", tenant: str = "acme"
) -> events_pb2.ContactCreated:
    """A ContactCreated for a chat contact, as a channel would publish it."""
    return events_pb2.ContactCreated(
        meta=events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, "test"),
        contact=contact_pb2.Contact(
            contact_id=cid, tenant=tenant, channel=contact_pb2.CHANNEL_CHAT, language=language
        ),
    )
