"""Recordings at rest: envelope encryption with AES-256-GCM, streamed in chunks so a long call is
never held in memory (docs/security.md, "Recordings at rest").

Each recording has its own random data key, wrapped with its tenant's key (HKDF-SHA256 of the
gateway's recording master key and the tenant's name), so one tenant's key never opens another's
recordings. Every chunk's nonce is the recording's random prefix and the chunk's index, and its
associated data names the tenant, the contact and whether it is the last chunk: chunks cannot be
reordered, dropped, cut off at the end, or moved to another contact or tenant unnoticed.

Layout: MAGIC, the wrapped data key (2-byte length, nonce || key ciphertext), the 8-byte nonce
prefix, then chunks (4-byte length, ciphertext) of at most CHUNK plaintext bytes.

The voice gateway seals; the chat's inbox opens a byte range of one (`SealedRecording`) to play
it, and draws its waveform from `peaks`."""

from __future__ import annotations

import array
import base64
import binascii
import hashlib
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Where the voice gateway keeps a call's recording, and the id of the message naming it in the
# call's conversation (the case keeps the message; the inbox plays the recording from it).
BUCKET = "recordings"


def object_name(tenant: str, contact_id: str) -> str:
    return f"{tenant}/{contact_id}.wav"


def message_id(contact_id: str) -> str:
    return f"{contact_id}:recording"


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


def master_key(text: str, file: str, auth_secret: str) -> bytes:
    """The recording master key (32 bytes): the file's (32 raw bytes or their base64), else
    `text` (base64), else one derived from the platform's auth secret."""
    if file:
        raw = Path(file).read_bytes()
        if len(raw) == KEY_BYTES:
            return raw
        text = raw.decode("ascii", "replace").strip()
    if not text:
        return hashlib.sha256(b"switchboard-recording-master\0" + auth_secret.encode()).digest()
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError(
            "the recording key must hold 32 random bytes or their base64 "
            "(e.g. `head -c 32 /dev/urandom | base64`)"
        )
    return key


@dataclass(frozen=True)
class _Chunk:
    offset: int  # of its ciphertext in the sealed bytes
    length: int  # of its ciphertext
    start: int  # of its plaintext in the recording
    last: bool


class SealedRecording:
    """A sealed recording held in memory, opened a byte range at a time: only the chunks the
    range touches are decrypted (a player seeking in a long call)."""

    def __init__(self, master: bytes, tenant: str, contact_id: str, sealed: bytes) -> None:
        self.tenant = tenant
        self.contact_id = contact_id
        self.sealed = sealed
        if sealed[: len(MAGIC)] != MAGIC or len(sealed) < len(MAGIC) + 2:
            raise SealError("not a sealed recording")
        pos = len(MAGIC)
        (size,) = struct.unpack_from("!H", sealed, pos)
        pos += 2
        wrapped = sealed[pos : pos + size]
        pos += size
        try:
            data_key = AESGCM(tenant_key(master, tenant)).decrypt(
                wrapped[:_NONCE], wrapped[_NONCE:], f"{tenant}/{contact_id}".encode()
            )
        except (InvalidTag, ValueError):
            raise SealError("the recording is not this tenant's or contact's") from None
        self._prefix = sealed[pos : pos + _PREFIX]
        if len(self._prefix) != _PREFIX:
            raise SealError("the recording is cut short")
        pos += _PREFIX
        self._aead = AESGCM(data_key)
        self._chunks: list[_Chunk] = []
        start = 0
        while pos < len(sealed):
            if pos + 4 > len(sealed):
                raise SealError("the recording is cut short")
            (length,) = struct.unpack_from("!I", sealed, pos)
            if length < _TAG or length > CHUNK + _TAG or pos + 4 + length > len(sealed):
                raise SealError("a chunk's length is wrong")
            last = pos + 4 + length == len(sealed)
            self._chunks.append(_Chunk(pos + 4, length, start, last))
            start += length - _TAG
            pos += 4 + length
        if not self._chunks:
            raise SealError("the recording is empty")
        self.size = start  # the plaintext's bytes

    def _open(self, index: int) -> bytes:
        c = self._chunks[index]
        nonce = self._prefix + struct.pack("!I", index)
        try:
            return self._aead.decrypt(
                nonce,
                self.sealed[c.offset : c.offset + c.length],
                _aad(self.tenant, self.contact_id, index, c.last),
            )
        except InvalidTag:
            raise SealError("the recording was altered or cut short") from None

    def read(self, start: int = 0, stop: int | None = None) -> bytes:
        """The plaintext bytes [start, stop) (stop: at most the end)."""
        stop = self.size if stop is None else min(stop, self.size)
        if start >= stop:
            return b""
        out = bytearray()
        first = start // CHUNK  # every chunk but the last holds exactly CHUNK bytes
        for index in range(first, len(self._chunks)):
            c = self._chunks[index]
            if c.start >= stop:
                break
            plain = self._open(index)
            out += plain[max(0, start - c.start) : stop - c.start]
        return bytes(out)


def wav_info(header: bytes) -> tuple[int, int, int, int]:
    """(channels, sample rate, bits per sample, offset of the data) of a PCM WAV's header;
    SealError if it is not one."""
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise SealError("not a WAV recording")
    pos, fmt = 12, None
    while pos + 8 <= len(header):
        kind, size = header[pos : pos + 4], struct.unpack_from("<I", header, pos + 4)[0]
        if kind == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", header, pos + 8)
        elif kind == b"data":
            if fmt is None:
                break
            return fmt[1], fmt[2], fmt[5], pos + 8
        pos += 8 + size + (size & 1)
    raise SealError("not a PCM WAV recording")


def peaks(wav: bytes, buckets: int) -> tuple[float, list[list[float]]]:
    """The duration in seconds of a 16-bit PCM WAV and, per channel, the peak level (0 to 1) of
    each of `buckets` equal slices: what a player draws as the waveform."""
    return peaks_of(lambda start, stop: wav[start:stop], len(wav), buckets)


def peaks_of(
    read: Callable[[int, int], bytes], size: int, buckets: int
) -> tuple[float, list[list[float]]]:
    """`peaks` of a WAV of `size` bytes read a slice at a time (`read(start, stop)`): a long
    call's recording is never all in memory."""
    channels, rate, bits, offset = wav_info(read(0, 4096))
    if bits != 16 or channels < 1 or rate < 1:
        raise SealError("not a 16-bit PCM recording")
    frame = 2 * channels
    frames = max(0, size - offset) // frame
    out: list[list[float]] = [[] for _ in range(channels)]
    if not frames:
        return 0.0, out
    per = max(1, -(-frames // buckets))
    # At most ~2000 samples looked at per slice: a long call's waveform is still quick.
    step = max(1, per // 2000)
    for lo in range(0, frames, per):
        hi = min(frames, lo + per)
        samples = array.array("h")
        samples.frombytes(read(offset + lo * frame, offset + hi * frame))
        if sys.byteorder == "big":
            samples.byteswap()
        for ch in range(channels):
            part = samples[ch :: channels * step]
            level = max(max(part), -min(part)) if part else 0
            out[ch].append(round(min(level, 32767) / 32767, 3))
    return frames / rate, out
