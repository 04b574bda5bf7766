"""Recordings at rest: envelope encryption with AES-256-GCM, streamed in chunks so a long call is
never held in memory (docs/security.md, "Recordings at rest").

Each recording has its own random data key, wrapped with its tenant's key (HKDF-SHA256 of the
gateway's recording master key and the tenant's name), so one tenant's key never opens another's
recordings. Every chunk's nonce is the recording's random prefix and the chunk's index, and its
associated data names the tenant, the contact and whether it is the last chunk: chunks cannot be
reordered, dropped, cut off at the end, or moved to another contact or tenant unnoticed.

Layout: MAGIC, the wrapped data key (2-byte length, nonce || key ciphertext), the 8-byte nonce
prefix, then chunks (4-byte length, ciphertext) of at most CHUNK plaintext bytes."""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"SBREC1\n"
CHUNK = 64 * 1024
KEY_BYTES = 32
_NONCE = 12
_PREFIX = 8
_TAG = 16


class SealError(ValueError):
    """A sealed recording that does not open: another tenant's or contact's, or altered."""


def tenant_key(master: bytes, tenant: str) -> bytes:
    """The key that wraps `tenant`'s recordings' data keys."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=b"switchboard-recording-v1",
        info=tenant.encode(),
    ).derive(master)


def _aad(tenant: str, contact_id: str, index: int, last: bool) -> bytes:
    return f"{tenant}/{contact_id}".encode() + struct.pack("!IB", index, last)


def seal(master: bytes, tenant: str, contact_id: str, src: BinaryIO, dst: BinaryIO) -> None:
    """Encrypt everything `src` holds into `dst`, chunk by chunk."""
    data_key = AESGCM.generate_key(bit_length=256)
    wrap_nonce = os.urandom(_NONCE)
    wrapped = wrap_nonce + AESGCM(tenant_key(master, tenant)).encrypt(
        wrap_nonce, data_key, f"{tenant}/{contact_id}".encode()
    )
    prefix = os.urandom(_PREFIX)
    dst.write(MAGIC + struct.pack("!H", len(wrapped)) + wrapped + prefix)
    aead = AESGCM(data_key)
    index = 0
    chunk = src.read(CHUNK)
    while True:
        following = src.read(CHUNK)
        last = not following
        nonce = prefix + struct.pack("!I", index)
        body = aead.encrypt(nonce, chunk, _aad(tenant, contact_id, index, last))
        dst.write(struct.pack("!I", len(body)) + body)
        if last:
            return
        chunk, index = following, index + 1


def _read(src: BinaryIO, n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise SealError("the recording is cut short")
    return data


def open_sealed(master: bytes, tenant: str, contact_id: str, src: BinaryIO, dst: BinaryIO) -> None:
    """Decrypt a recording sealed for `tenant`'s `contact_id` into `dst`; SealError otherwise."""
    if src.read(len(MAGIC)) != MAGIC:
        raise SealError("not a sealed recording")
    (size,) = struct.unpack("!H", _read(src, 2))
    wrapped = _read(src, size)
    try:
        data_key = AESGCM(tenant_key(master, tenant)).decrypt(
            wrapped[:_NONCE], wrapped[_NONCE:], f"{tenant}/{contact_id}".encode()
        )
    except InvalidTag:
        raise SealError("the recording is not this tenant's or contact's") from None
    prefix = _read(src, _PREFIX)
    aead = AESGCM(data_key)
    index = 0
    head = src.read(4)
    while head:
        (length,) = struct.unpack("!I", head) if len(head) == 4 else (-1,)
        if length < _TAG or length > CHUNK + _TAG:
            raise SealError("a chunk's length is wrong")
        body = _read(src, length)
        head = src.read(4)
        nonce = prefix + struct.pack("!I", index)
        try:
            dst.write(aead.decrypt(nonce, body, _aad(tenant, contact_id, index, not head)))
        except InvalidTag:
            raise SealError("the recording was altered or cut short") from None
        index += 1
    if index == 0:
        raise SealError("the recording is empty")
