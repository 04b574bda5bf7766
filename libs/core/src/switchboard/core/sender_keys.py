"""Sender keys: how the channels name what they keep from a sender without a contact (quarantined
mail and faxes), so that erasing the customer who owns that identity finds it.

A sender key is an HMAC of the tenant, the identity's kind and its normalised value, keyed with a
key derived from the deployment's shared secret (SWITCHBOARD_AUTH_SECRET): the case service names
an erased customer's identities by these keys in CustomerErased, and a channel finds its items by
the same key in its own index, without the address or number ever being stored or sent in clear.
Changing the secret orphans the index entries written before (the quarantine's retention still
removes their items)."""

from __future__ import annotations

import hashlib
import hmac

from switchboard.v1 import contact_pb2

EMAIL = contact_pb2.IDENTITY_KIND_EMAIL
PHONE = contact_pb2.IDENTITY_KIND_PHONE


def secret_key(secret: str) -> bytes:
    """The sender-key key of a deployment secret."""
    return hmac.new(secret.encode(), b"switchboard sender key v1", hashlib.sha256).digest()


def sender_key(key: bytes, tenant: str, kind: int, value: str) -> str:
    """The sender key of `tenant`'s identity (`value` as the case service normalises it: an email
    address lower-cased, a phone number in E.164); "" for an empty value."""
    value = value.strip()
    if kind == EMAIL:
        value = value.lower()
    if not value:
        return ""
    text = "\x1f".join((tenant, str(int(kind)), value)).encode("utf-8", "surrogatepass")
    return hmac.new(key, text, hashlib.sha256).hexdigest()[:40]
