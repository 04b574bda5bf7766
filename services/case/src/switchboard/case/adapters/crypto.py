"""Personal data sealed with AES-256-GCM, as the case store keeps it (docs/security.md,
"Personal data at rest").

A sealed value is text: `sb1e:<key id>:<base64url(nonce || ciphertext)>`, the key id naming the
data key (a customer's or a tenant's) it was sealed with, so reading needs no other column and a
rotation of the keys above it changes no sealed value. The data keys a process has unwrapped are
held here by id (ids are random, so one table serves every database a process opens); a key that
was destroyed (erasure) reads as `ERASED`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Text, TypeDecorator
from sqlalchemy.engine import Dialect

PREFIX = "sb1e:"
ERASED = "[erased]"
KEY_BYTES = 32
_NONCE = 12

_keys: dict[str, AESGCM] = {}
_erased: set[str] = set()


class Sealable(str):
    """Plain text that names the data key it is to be sealed with when written (the domain keeps
    handling it as the text it is)."""

    key_id: str

    def __new__(cls, text: str, key_id: str) -> Sealable:
        value = super().__new__(cls, text)
        value.key_id = key_id
        return value


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def remember(key_id: str, key: bytes) -> None:
    if key_id not in _erased:
        _keys[key_id] = AESGCM(key)


def forget(key_id: str) -> None:
    """The key was destroyed: what it sealed reads as ERASED from now on."""
    _erased.add(key_id)
    _keys.pop(key_id, None)


def wrap(kek: bytes, key: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(kek).encrypt(nonce, key, aad)


def unwrap(kek: bytes, wrapped: bytes, aad: bytes) -> bytes:
    return AESGCM(kek).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)


def seal(key_id: str, text: str) -> str:
    nonce = os.urandom(_NONCE)
    body = _keys[key_id].encrypt(nonce, text.encode(), key_id.encode())
    return f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + body).decode()}"


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def key_of(value: str) -> str:
    return value[len(PREFIX) :].partition(":")[0]


def open_(value: str) -> str:
    """The text of a sealed value (`ERASED` if its key was destroyed); other text as it is
    (rows written before encryption, until the backfill reaches them)."""
    if not is_sealed(value):
        return value
    key_id, _, body = value[len(PREFIX) :].partition(":")
    key = _keys.get(key_id)
    if key is None:
        return ERASED
    raw = base64.urlsafe_b64decode(body)
    try:
        text = key.decrypt(raw[:_NONCE], raw[_NONCE:], key_id.encode()).decode()
    except InvalidTag:
        return ERASED
    return Sealable(text, key_id)


def blind_index(index_key: bytes, value: str) -> str:
    """A keyed, deterministic stand-in for an identity value: equal values of one tenant match,
    and nobody without the tenant's index key can compute or reverse it."""
    return hmac.new(index_key, value.encode(), hashlib.sha256).hexdigest()


def index_key(tenant_key: bytes) -> bytes:
    return hmac.new(tenant_key, b"switchboard blind index v1", hashlib.sha256).digest()


class SealedText(TypeDecorator[str]):
    """A column of personal data: written sealed with the key its `Sealable` value names, read
    back as its text. Writing other non-empty text is refused, so no path stores it in clear."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if isinstance(value, Sealable):
            return seal(value.key_id, value) if value else ""
        if value is None or value == "" or value == ERASED or is_sealed(value):
            return value  # type: ignore[no-any-return]
        raise ValueError("personal data written without a data key")

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return open_(value)
