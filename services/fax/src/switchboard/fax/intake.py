"""Accepting a received fax: every intake path (hook, spool, HTTP upload, email) ends here.

A fax is accepted once its original is in the JetStream object store and a FaxReceived event
naming it is stored in the EVENTS stream; only then may the source be acknowledged (the spool
file removed, the webhook answered 202, the hook exit 0, the email event acked)."""

from __future__ import annotations

import hashlib

from switchboard.core import events
from switchboard.fax.adapters.objects import Objects
from switchboard.fax.domain.document import Rejected, sniff
from switchboard.fax.notifier import FaxNotifier
from switchboard.v1 import fax_pb2

CONTENT_TYPES = {"tiff": ("tif", "image/tiff"), "pdf": ("pdf", "application/pdf")}


def fax_id_for(*parts: str | bytes) -> str:
    """A stable id for one received document: the same source and bytes give the same id, so a
    re-submission is de-duplicated by JetStream and by the contact id."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def kind_of(data: bytes) -> tuple[str, str]:
    """File extension and content type by the magic bytes (bin for anything else)."""
    try:
        return CONTENT_TYPES[sniff(data)]
    except Rejected:
        return "bin", "application/octet-stream"


async def accept(
    objects: Objects,
    notifier: FaxNotifier,
    bucket: str,
    tenant: str,
    fax_id: str,
    data: bytes,
    origin: fax_pb2.FaxOrigin,
) -> fax_pb2.FaxReceived:
    """Store the original and publish FaxReceived; returns after JetStream acked both."""
    events.validate_tenant(tenant)
    ext, content_type = kind_of(data)
    name = f"{tenant}/{fax_id}/original.{ext}"
    filename = origin.filename or f"fax-{fax_id[:8]}.{ext}"
    ref = await objects.put(bucket, name, data, filename, content_type)
    return await notifier.fax_received(tenant, fax_id, origin, ref)
