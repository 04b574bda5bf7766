"""Contacts for the engine's tests (features and snapshots), as the channels describe them."""

from __future__ import annotations

from switchboard.v1 import contact_pb2


def contact(
    cid: str,
    language: str = "ko",
    skills: tuple[str, ...] = (),
    queue: str = "general",
    phone: str = "",
    callback: bool = False,
    priority: int = 0,
    channel: int = contact_pb2.CHANNEL_CHAT,
) -> contact_pb2.Contact:
    c = contact_pb2.Contact(
        contact_id=cid,
        tenant="acme",
        channel=channel,  # type: ignore[arg-type]
        language=language,
        skills=list(skills),
        queue=queue,
        callback=callback,
        priority=priority,
    )
    if phone:
        c.identities.add(kind=contact_pb2.IDENTITY_KIND_PHONE, value=phone)
    return c
