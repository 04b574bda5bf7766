"""Recordings at rest: envelope encryption with AES-256-GCM, streamed in chunks so a long call is
never held in memory (docs/security.md, "Recordings at rest").

Each recording has its own random data key, wrapped with its tenant's key (HKDF-SHA256 of the
gateway's recording master key and the tenant's name), so one tenant's key never opens another's
recordings. Every chunk's nonce is the recording's random prefix and the chunk's index, and its
associated data names the tenant, the contact and whether it is the last chunk: chunks cannot be
reordered, dropped, cut off at the end, or moved to another contact or tenant unnoticed.

Layout: MAGIC, the master key's id (1-byte length, the id: `key_id`), the wrapped data key
(2-byte length, nonce || key ciphertext), the 8-byte nonce prefix, then chunks (4-byte length,
ciphertext) of at most CHUNK plaintext bytes. Recordings sealed before the id was written
(MAGIC_V1, no id) still open: every key configured is tried.

The key id lets the master key change (`RecordingKeys`): new recordings are sealed under the
current key, and the ones sealed under an older key open with that key as long as it is listed
among the old keys.

The voice gateway seals (`Sealer`, as a call's recording is written); the chat's inbox opens a byte range of one (`SealedRecording`) to play
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


MAGIC = b"SBREC2\n"
MAGIC_V1 = b"SBREC1\n"  # no key id: sealed before keys could change
CHUNK = 64 * 1024
KEY_BYTES = 32
_NONCE = 12
_PREFIX = 8
_TAG = 16


class SealError(ValueError):
    """A sealed recording that does not open: another tenant's or contact's, or altered."""


def key_id(master: bytes) -> bytes:
    """The id of a master key written in what it seals: 8 bytes of a hash of it (it tells which
    key to use, and nothing of the key)."""
    return hashlib.sha256(b"switchboard-recording-key-id\0" + master).digest()[:8]


@dataclass(frozen=True)
class RecordingKeys:
    """The master key that seals new recordings, and older ones that open what they sealed."""

    current: bytes
    old: tuple[bytes, ...] = ()

    @property
    def current_id(self) -> str:
        return key_id(self.current).hex()

    def for_id(self, wanted: bytes | None) -> list[bytes]:
        """The keys to try on a recording sealed under the key `wanted` (None: an old recording
        with no id, which any of them may have sealed)."""
        keys = [self.current, *self.old]
        if wanted is None:
            return keys
        found = [k for k in keys if key_id(k) == wanted]
        if not found:
            raise SealError(
                f"the recording was sealed under the key {wanted.hex()}, which is neither the "
                "current recording key nor one of the old ones (VOICE_RECORDING_OLD_KEYS_FILE)"
            )
        return found[:1]


Keys = RecordingKeys | bytes


def _keys(keys: Keys) -> RecordingKeys:
    return keys if isinstance(keys, RecordingKeys) else RecordingKeys(keys)


def _unwrap(
    keys: Keys, wanted: bytes | None, tenant: str, contact_id: str, wrapped: bytes
) -> bytes:
    """The recording's data key, unwrapped with the first of the candidate keys that opens it."""
    for master in _keys(keys).for_id(wanted):
        try:
            return AESGCM(tenant_key(master, tenant)).decrypt(
                wrapped[:_NONCE], wrapped[_NONCE:], f"{tenant}/{contact_id}".encode()
            )
        except (InvalidTag, ValueError):
            continue
    raise SealError("the recording is not this tenant's or contact's")


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


def seal(keys: Keys, tenant: str, contact_id: str, src: BinaryIO, dst: BinaryIO) -> None:
    """Encrypt everything `src` holds into `dst`, chunk by chunk, under the current key."""
    master = _keys(keys).current
    data_key = AESGCM.generate_key(bit_length=256)
    wrap_nonce = os.urandom(_NONCE)
    wrapped = wrap_nonce + AESGCM(tenant_key(master, tenant)).encrypt(
        wrap_nonce, data_key, f"{tenant}/{contact_id}".encode()
    )
    prefix = os.urandom(_PREFIX)
    kid = key_id(master)
    dst.write(MAGIC + bytes([len(kid)]) + kid + struct.pack("!H", len(wrapped)) + wrapped + prefix)
    aead = AESGCM(data_key)
    index = 0
    chunk = src.read(CHUNK)
    while True:
        following = src.read(CHUNK)
        last = not following
        nonce = prefix + struct.pack("!I", index)
        body = aead.encrypt(nonce, chunk, _aad(tenant, contact_id, index, last))
        dst.write(struct.pack("!I", len(body)))
        dst.write(body)
        if last:
            return
        chunk, index = following, index + 1


class Sealer:
    """`seal` as the plaintext is written, a piece at a time, into `dst` (a seekable file): the
    same layout, so every reader opens it, without a plaintext copy on disk or a second pass.
    The first chunk is held until `finish`, which may rewrite the plaintext's first bytes (a
    WAV header whose sizes are known only at the end); a recording's file holds the sealed
    bytes only, with room kept for that chunk."""

    def __init__(self, keys: Keys, tenant: str, contact_id: str, dst: BinaryIO) -> None:
        self._keys = keys
        self._tenant = tenant
        self._contact_id = contact_id
        self._dst = dst
        self._aead: AESGCM | None = None
        self._prefix = b""
        self._first_at = 0  # where the first chunk goes in `dst`
        self._first: bytearray | None = None  # the first chunk, once more than it was written
        self._buf = bytearray()
        self._index = 1  # of the next chunk after the first

    def _start(self) -> AESGCM:
        master = _keys(self._keys).current
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce = os.urandom(_NONCE)
        ad = f"{self._tenant}/{self._contact_id}".encode()
        wrapped = wrap_nonce + AESGCM(tenant_key(master, self._tenant)).encrypt(
            wrap_nonce, data_key, ad
        )
        self._prefix = os.urandom(_PREFIX)
        kid = key_id(master)
        head = MAGIC + bytes([len(kid)]) + kid + struct.pack("!H", len(wrapped)) + wrapped
        self._dst.write(head + self._prefix)
        self._first_at = self._dst.tell()
        self._aead = AESGCM(data_key)
        return self._aead

    def _chunk(self, aead: AESGCM, index: int, plain: bytes | bytearray, last: bool) -> bytes:
        nonce = self._prefix + struct.pack("!I", index)
        body = aead.encrypt(nonce, bytes(plain), _aad(self._tenant, self._contact_id, index, last))
        return struct.pack("!I", len(body)) + body

    def write(self, data: bytes) -> None:
        aead = self._aead or self._start()
        buf = self._buf
        buf += data
        if self._first is None:
            if len(buf) <= CHUNK:
                return
            self._first = buf[:CHUNK]
            del buf[:CHUNK]
            self._dst.write(bytes(4 + CHUNK + _TAG))  # the first chunk's room
        if len(buf) <= CHUNK:
            return
        out = []
        while len(buf) > CHUNK:  # more follows: none of these is the last
            out.append(self._chunk(aead, self._index, buf[:CHUNK], False))
            del buf[:CHUNK]
            self._index += 1
        self._dst.write(b"".join(out))

    def finish(self, head: bytes = b"") -> None:
        """Seal what is left, with `head` in place of the plaintext's first bytes."""
        aead = self._aead or self._start()
        if self._first is None:  # one chunk in all
            first = self._buf
            first[: len(head)] = head
            self._dst.write(self._chunk(aead, 0, first, True))
            return
        self._dst.write(self._chunk(aead, self._index, self._buf, True))
        end = self._dst.tell()
        self._first[: len(head)] = head
        self._dst.seek(self._first_at)
        self._dst.write(self._chunk(aead, 0, self._first, False))
        self._dst.seek(end)


def _read(src: BinaryIO, n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise SealError("the recording is cut short")
    return data


def open_sealed(keys: Keys, tenant: str, contact_id: str, src: BinaryIO, dst: BinaryIO) -> None:
    """Decrypt a recording sealed for `tenant`'s `contact_id` into `dst`; SealError otherwise."""
    magic = src.read(len(MAGIC))
    if magic not in (MAGIC, MAGIC_V1):
        raise SealError("not a sealed recording")
    wanted = None
    if magic == MAGIC:
        wanted = _read(src, _read(src, 1)[0])
    (size,) = struct.unpack("!H", _read(src, 2))
    wrapped = _read(src, size)
    data_key = _unwrap(keys, wanted, tenant, contact_id, wrapped)
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


_KEY_HINT = "32 random bytes or their base64 (e.g. `head -c 32 /dev/urandom | base64`)"


def parse_key(text: str) -> bytes:
    """A master key written as the base64 of 32 bytes; ValueError otherwise."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError(f"VOICE_RECORDING_KEY(_FILE) must hold {_KEY_HINT}")
    return key


def master_key(text: str, file: str, auth_secret: str) -> bytes:
    """The recording master key (32 bytes): the file's (32 raw bytes or their base64), else
    `text` (base64), else one derived from the platform's auth secret (a developer's machine;
    production refuses to start without a key of its own)."""
    if file:
        try:
            raw = Path(file).read_bytes()
        except OSError as exc:
            raise ValueError(
                f"VOICE_RECORDING_KEY_FILE {file} cannot be read ({exc.strerror})"
            ) from None
        if len(raw) == KEY_BYTES:
            return raw
        text = raw.decode("ascii", "replace").strip()
        if not text:
            raise ValueError(f"VOICE_RECORDING_KEY_FILE {file} is empty: it must hold {_KEY_HINT}")
    if not text:
        return hashlib.sha256(b"switchboard-recording-master\0" + auth_secret.encode()).digest()
    return parse_key(text)


def old_keys(file: str) -> tuple[bytes, ...]:
    """The old master keys in `file`, one base64 key a line (blank lines and `#` comments
    skipped); none when `file` is empty or absent (a Secret without the key `old-keys`)."""
    if not file:
        return ()
    try:
        text = Path(file).read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise ValueError(
            f"VOICE_RECORDING_OLD_KEYS_FILE {file} cannot be read ({exc.strerror})"
        ) from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(parse_key(line))
        except ValueError:
            raise ValueError(
                f"VOICE_RECORDING_OLD_KEYS_FILE {file}:{number}: an old recording key is the "
                "base64 of 32 bytes"
            ) from None
    return tuple(keys)


def recording_keys(text: str, file: str, old_file: str, auth_secret: str) -> RecordingKeys:
    """The current master key (`master_key`) and the old ones (`old_keys`)."""
    return RecordingKeys(master_key(text, file, auth_secret), old_keys(old_file))


def production_problem(text: str, file: str, old_file: str) -> str:
    """Why a production service must not start with these recording key settings ("" if it
    may): no key of its own, or one that cannot be read."""
    if not (text or file):
        return (
            "VOICE_RECORDING_KEY_FILE (or VOICE_RECORDING_KEY) is unset: call recordings would be "
            "sealed with a key derived from SWITCHBOARD_AUTH_SECRET, and changing that secret "
            "would leave them unreadable. Mount the Secret voice-recording-key (docs/deploy.md, "
            '"Secrets"), or SWITCHBOARD_MODE=development on a developer\'s machine'
        )
    try:
        recording_keys(text, file, old_file, "")
    except ValueError as exc:
        return str(exc)
    return ""


@dataclass(frozen=True)
class _Chunk:
    offset: int  # of its ciphertext in the sealed bytes
    length: int  # of its ciphertext
    start: int  # of its plaintext in the recording
    last: bool


class SealedRecording:
    """A sealed recording held in memory, opened a byte range at a time: only the chunks the
    range touches are decrypted (a player seeking in a long call)."""

    def __init__(self, keys: Keys, tenant: str, contact_id: str, sealed: bytes) -> None:
        self.tenant = tenant
        self.contact_id = contact_id
        self.sealed = sealed
        magic = sealed[: len(MAGIC)]
        if magic not in (MAGIC, MAGIC_V1):
            raise SealError("not a sealed recording")
        pos = len(MAGIC)
        wanted = None
        if magic == MAGIC:
            size = sealed[pos] if pos < len(sealed) else 0
            wanted = sealed[pos + 1 : pos + 1 + size]
            if not size or len(wanted) != size:
                raise SealError("the recording is cut short")
            pos += 1 + size
        if pos + 2 > len(sealed):
            raise SealError("the recording is cut short")
        (size,) = struct.unpack_from("!H", sealed, pos)
        pos += 2
        wrapped = sealed[pos : pos + size]
        pos += size
        data_key = _unwrap(keys, wanted, tenant, contact_id, wrapped)
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
