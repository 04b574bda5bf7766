"""The two-channel recorder of a bridged call: left the caller, right the agent.

The relay hands it every audio packet either leg receives (`tap`). Each packet is decoded from
G.711 to 16-bit PCM and placed on its side's timeline by its RTP timestamp, anchored to its
arrival time when a side starts, changes source (SSRC) or drifts away from the arrival clock
(a hold, a transfer to another agent): so both channels stay in step, and a side that sends
nothing, or any time the recording is paused, is silence. Samples older than the jitter window
are interleaved and appended to a WAV file as they come, never held for the whole call."""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

RATE = 8000
CALLER, AGENT = 0, 1
JITTER = RATE // 5  # 200 ms: packets later than this behind the newest are too late
FLUSH = RATE // 5  # written to the file 200 ms at a time
REANCHOR = RATE // 2  # a side whose timestamps stray 500 ms from its arrivals is re-anchored
PCMU, PCMA = 0, 8


def _ulaw(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = (((byte & 0x0F) << 3) + 0x84) << ((byte & 0x70) >> 4)
    return 0x84 - magnitude if byte & 0x80 else magnitude - 0x84


def _alaw(byte: int) -> int:
    byte ^= 0x55
    exponent = (byte & 0x70) >> 4
    mantissa = byte & 0x0F
    if exponent:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    else:
        magnitude = (mantissa << 4) + 8
    return magnitude if byte & 0x80 else -magnitude


def _tables(decode: Callable[[int], int]) -> tuple[bytes, bytes]:
    """Two byte-translation tables: the low and the high byte of each code's sample."""
    samples = [decode(b) & 0xFFFF for b in range(256)]
    return bytes(s & 0xFF for s in samples), bytes(s >> 8 for s in samples)


_DECODE = {PCMU: _tables(_ulaw), PCMA: _tables(_alaw)}


def decode(payload: bytes, payload_type: int) -> bytes:
    """G.711 (PCMU 0 or PCMA 8) to signed 16-bit little-endian PCM."""
    low, high = _DECODE[payload_type]
    out = bytearray(2 * len(payload))
    out[0::2] = payload.translate(low)
    out[1::2] = payload.translate(high)
    return bytes(out)


def wav_header(frames: int) -> bytes:
    """A RIFF/WAVE header for `frames` 16-bit stereo frames at 8 kHz."""
    data = frames * 4
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 2, RATE, RATE * 4, 4, 16)
        + b"data"
        + struct.pack("<I", data)
    )


class _Side:
    __slots__ = ("anchor_pos", "anchor_ts", "packets", "ssrc")

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self.anchor_ts = 0
        self.anchor_pos = 0
        self.packets = 0


class Recorder:
    """One call's recording, written to a temporary WAV file until `close`."""

    def __init__(
        self,
        folder: str | None = None,
        paused: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._start = clock()
        fd, name = tempfile.mkstemp(prefix="recording-", suffix=".wav", dir=folder)
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.file.write(wav_header(0))
        self.written = 0  # frames in the file
        # The stereo frames from `written` on, interleaved as in the file (left, right; 16-bit
        # little-endian): a packet's samples are translated straight into their side's bytes.
        self._pending = bytearray()
        self._sides = [_Side(), _Side()]
        self.paused = paused
        self.pauses = 0
        self.closed = False
        self.failed = False  # the file could not be written: nothing is stored
        self._keys = ""

    def _now(self) -> int:
        return int((self._clock() - self._start) * RATE)

    # ---- the relay's tap ----------------------------------------------------------------------

    def tap(self, side: int, packet: bytes) -> None:
        """An RTP packet received on the caller's (CALLER) or the agent's (AGENT) leg."""
        if self.closed or len(packet) < 12:
            return
        now = int((self._clock() - self._start) * RATE)
        if not self.paused:
            self._place(side, packet, now)
        if now - JITTER - self.written >= FLUSH:
            try:
                self._flush(now - JITTER)
            except OSError as exc:  # the disk is full or gone: the call goes on unrecorded
                logger.error("recording stopped: %s", exc)
                self.failed = True
                self.closed = True
                self.file.close()

    def _place(self, side: int, packet: bytes, now: int) -> None:
        pt = packet[1] & 0x7F
        if pt not in _DECODE:
            return
        offset = 12 + 4 * (packet[0] & 0x0F)
        if packet[0] & 0x10 and len(packet) >= offset + 4:  # a header extension
            offset += 4 + 4 * struct.unpack_from("!H", packet, offset + 2)[0]
        end = len(packet)
        if packet[0] & 0x20 and end > offset:  # padding
            end -= packet[-1]
        if end <= offset:
            return
        ts, ssrc = struct.unpack_from("!II", packet, 4)
        s = self._sides[side]
        pos = s.anchor_pos + ((ts - s.anchor_ts + 2**31) % 2**32 - 2**31)
        if s.ssrc != ssrc or abs(pos - now) > REANCHOR:
            s.ssrc, s.anchor_ts, s.anchor_pos = ssrc, ts, now
            pos = now
        s.packets += 1
        payload = packet[offset:end]
        start = pos - self.written
        if start < 0:  # later than the jitter window: what is already written stays
            payload = payload[-start:]
            start = 0
        if not payload:
            return
        pending = self._pending
        stop = 4 * (start + len(payload))
        if len(pending) < stop:
            pending.extend(bytes(stop - len(pending)))
        low, high = _DECODE[pt]
        first = 4 * start + 2 * side
        pending[first:stop:4] = payload.translate(low)
        pending[first + 1 : stop : 4] = payload.translate(high)

    def _flush(self, upto: int) -> None:
        """Append every frame before `upto` to the file (silence where a side has nothing)."""
        n = upto - self.written
        if n <= 0:
            return
        pending = self._pending
        have = min(len(pending), 4 * n)
        self.file.write(pending[:have])
        del pending[:have]
        if have < 4 * n:
            self.file.write(bytes(4 * n - have))
        self.written = upto

    # ---- pause and resume ---------------------------------------------------------------------

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.pauses += 1
            # What was received up to now is kept; nothing from here on until resumed.
            logger.info("recording paused")

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            logger.info("recording resumed")

    def agent_key(self, key: str) -> None:
        """A key the agent pressed: `*1` starts or resumes the recording, `*2` pauses it."""
        if key == "*":
            self._keys = "*"
            return
        if self._keys == "*" and key == "1":
            self.resume()
        elif self._keys == "*" and key == "2":
            self.pause()
        self._keys = ""

    # ---- the end ------------------------------------------------------------------------------

    @property
    def packets(self) -> int:
        """The audio packets recorded (none: an on-demand recording never started)."""
        return sum(s.packets for s in self._sides)

    def close(self) -> float:
        """Write what is left, finish the WAV header and close the file; the seconds recorded."""
        if self.closed:
            return self.written / RATE
        self.closed = True
        try:
            self._flush(max(self._now(), self.written + len(self._pending) // 4))
            self.file.seek(0)
            self.file.write(wav_header(self.written))
        finally:
            self.file.close()
        return self.written / RATE

    def discard(self) -> None:
        if not self.closed:
            self.closed = True
            self.file.close()
        self.path.unlink(missing_ok=True)
