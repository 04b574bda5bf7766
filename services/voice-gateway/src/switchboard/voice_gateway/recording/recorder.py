"""The two-channel recorder of a bridged call: left the caller, right the agent.

The relay hands it every audio packet either leg receives (`tap`). Each packet's G.711 payload
is placed on its side's timeline by its RTP timestamp, anchored to its arrival time when a side
starts, changes source (SSRC) or drifts away from the arrival clock (a hold, a transfer to
another agent): so both channels stay in step, and a side that sends nothing, or any time the
recording is paused, is silence. Samples older than the jitter window are decoded to 16-bit PCM
(a byte-translation table per byte of the sample, a second at a time), interleaved and appended to
a WAV file as they come, never held for the whole call.

A packet costs the tap's queueing; a side's usual batch (one size and source, timestamps one
after another) is copied into its side's buffer in one go, and decoding is left to the flush,
where one translation covers fifty packets (the relay's CPU per recorded call stays within 1.5
times an unrecorded call's: bench/voice.py).

A supervisor who speaks to a party (whisper: the agent; barge: both) is recorded too: its
packets get a timeline of their own (`extra_tap`), mixed at the flush into the channels its mode
reaches (summed with clipping). A recording without supervisors never pays for it."""

from __future__ import annotations

import logging
import operator
import os
import struct
import tempfile
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import BinaryIO

import numpy as np

logger = logging.getLogger(__name__)

RATE = 8000
CALLER, AGENT = 0, 1
JITTER = RATE // 5  # 200 ms: packets later than this behind the newest are too late
FLUSH = RATE  # written to the file a second at a time
PIECE = 10 * RATE  # the most decoded at once
BATCH = 100  # packets placed together: a second of a call's two sides
REANCHOR = RATE // 2  # a side whose timestamps stray 500 ms from its arrivals is re-anchored
PCMU, PCMA = 0, 8
_TS_SSRC = struct.Struct("!II").unpack_from
_SHORT = struct.Struct("!H").unpack_from
_NO_MARKER = bytes(b & 0x7F for b in range(256))  # the payload type byte without the marker bit


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
# The code a side's buffer is filled with where nothing was received: PCMU's zero, and A-law's
# smallest step (+8), which the recorder's table decodes as 0 (within A-law's quantisation of
# +-8 there) so that silence is exactly silent in either codec.
_FILLER = {PCMU: b"\xff", PCMA: b"\xd5"}
_RECORDED = {
    PCMU: _DECODE[PCMU],
    PCMA: (
        _DECODE[PCMA][0][:0xD5] + b"\0" + _DECODE[PCMA][0][0xD6:],
        _DECODE[PCMA][1][:0xD5] + b"\0" + _DECODE[PCMA][1][0xD6:],
    ),
}


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
    __slots__ = ("anchor_pos", "anchor_ts", "channels", "codecs", "codes", "packets", "pt", "ssrc")

    def __init__(self, channels: tuple[int, ...] = ()) -> None:
        self.channels = channels  # a supervisor's: the channels it is mixed into
        self.ssrc: int | None = None
        self.anchor_ts = 0
        self.anchor_pos = 0
        self.packets = 0
        # The side's G.711 codes from the recorder's `written` frame on (the filler where
        # nothing came), and from which frame on they are in which codec (a re-INVITE may
        # change it mid-call): (frame, payload type), the first at or before `written`.
        self.codes = bytearray()
        self.pt = PCMU
        self.codecs: list[tuple[int, int]] = [(0, PCMU)]


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
        self._sides = [_Side(), _Side()]  # the caller's and the agent's, then supervisors'
        self._extra: dict[Hashable, int] = {}  # a supervisor's key -> its side
        self._queue: list[tuple[int, bytes, float]] = []  # (side, packet, arrival) not placed yet
        # What the relay calls with each packet of the caller's and the agent's leg.
        self.taps = (self._tapper(CALLER), self._tapper(AGENT))
        self.paused = paused
        self.pauses = 0
        self.closed = False
        self.failed = False  # the file could not be written: nothing is stored
        self._keys = ""

    def _now(self) -> int:
        return int((self._clock() - self._start) * RATE)

    # ---- the relay's tap ----------------------------------------------------------------------

    def tap(self, side: int, packet: bytes) -> None:
        """An RTP packet received on the caller's (CALLER) or the agent's (AGENT) leg: kept with
        its arrival time, and placed with the others of its batch (`_drain`)."""
        self.taps[side](packet)

    def extra_tap(self, key: Hashable, channels: tuple[int, ...]) -> Callable[[bytes], None]:
        """The tap of a supervisor's packets, mixed into `channels` (CALLER, AGENT): one
        timeline per `key` (a supervision in one mode)."""
        side = self._extra.get(key)
        if side is None:
            side = self._extra[key] = len(self._sides)
            self._sides.append(_Side(channels))
        return self._tapper(side)

    def _tapper(self, side: int) -> Callable[[bytes], None]:
        """The relay's tap of one side: as little as can be done per packet (a call's recording
        takes a hundred a second)."""
        queue, append, clock, drain = self._queue, self._queue.append, self._clock, self._drain

        def tap(packet: bytes) -> None:
            append((side, packet, clock()))
            if len(queue) >= BATCH:
                drain()

        return tap

    def _drain(self) -> None:
        """Place the packets received since the last batch, and write what is past the jitter
        window once there is FLUSH of it."""
        queue = self._queue[:]
        self._queue.clear()
        if not queue or self.closed:
            return
        if not self.paused:  # paused: left out
            by_side: dict[int, list[tuple[bytes, float]]] = {}
            for side, packet, arrived in queue:  # the parties', then any supervisor's
                by_side.setdefault(side, []).append((packet, arrived))
            for side, items in by_side.items():
                if not self._place_batch(side, items):
                    self._place_each(side, items)
        now = int((queue[-1][2] - self._start) * RATE)
        if now - JITTER - self.written >= FLUSH:
            try:
                self._flush(now - JITTER)
            except OSError as exc:  # the disk is full or gone: the call goes on unrecorded
                logger.error("recording stopped: %s", exc)
                self.failed = True
                self.closed = True
                self.file.close()

    def _place_batch(self, side: int, items: list[tuple[bytes, float]]) -> bool:
        """Place one side's batch with one copy, without a Python step per packet, when it is
        the usual one: packets of one size, RTP version 2 with no CSRC, extension or padding, the
        side's codec and source, timestamps one after the other, each in step with its arrival
        and not too late. False (nothing placed): the batch is placed packet by packet."""
        s = self._sides[side]
        packets = [packet for packet, _ in items]
        first, k = packets[0], len(packets)
        size = len(first)
        n = size - 12
        if s.ssrc is None or n <= 0 or size % 4 or len(set(map(len, packets))) != 1:
            return False
        ts0, ssrc = _TS_SSRC(first, 4)
        pos = s.anchor_pos + ((ts0 - s.anchor_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        at = pos - self.written
        if ssrc != s.ssrc or at < 0:
            return False
        joined = b"".join(packets)
        words = memoryview(joined).cast("I")  # 32-bit words, bytes as received
        step = size // 4
        if (
            joined[0::size] != b"\x80" * k
            or joined[1::size].translate(_NO_MARKER) != bytes((s.pt,)) * k
            or words[2::step].tobytes() != first[8:12] * k
            or words[1::step].tobytes()
            != struct.pack(f"!{k}I", *[(ts0 + n * i) & 0xFFFFFFFF for i in range(k)])
        ):
            return False
        start = self._start
        strays = list(
            map(
                operator.sub,
                range(pos, pos + n * k, n),
                [int((arrived - start) * RATE) for _, arrived in items],
            )
        )
        if max(strays) > REANCHOR or min(strays) < -REANCHOR:
            return False
        codes = s.codes
        if len(codes) < at:
            codes += _FILLER[s.pt] * (at - len(codes))
        codes[at : at + n * k] = b"".join([packet[12:] for packet in packets])
        s.packets += k
        return True

    def _place_each(self, side: int, items: list[tuple[bytes, float]]) -> None:
        start, place, s, written = self._start, self._place, self._sides[side], self.written
        for packet, arrived in items:
            now = int((arrived - start) * RATE)
            # The usual packet (RTP version 2, no extension, padding or CSRC, the side's codec,
            # its source, in step with the arrivals and not too late) inline; others by _place.
            if packet[0] != 0x80 or packet[1] & 0x7F != s.pt or len(packet) <= 12:
                place(side, packet, now)
                continue
            ts, ssrc = _TS_SSRC(packet, 4)
            pos = s.anchor_pos + ((ts - s.anchor_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            at = pos - written
            if s.ssrc != ssrc or at < 0 or abs(pos - now) > REANCHOR:
                place(side, packet, now)
                continue
            s.packets += 1
            codes = s.codes
            if len(codes) < at:
                codes += _FILLER[s.pt] * (at - len(codes))
            codes[at : at + len(packet) - 12] = packet[12:]

    def _place(self, side: int, packet: bytes, now: int) -> None:
        first, pt = packet[0], packet[1] & 0x7F
        if pt != PCMU and pt != PCMA:
            return
        end = len(packet)
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10 and end >= offset + 4:  # a header extension
            offset += 4 + 4 * _SHORT(packet, offset + 2)[0]
        if first & 0x20 and end > offset:  # padding
            end -= packet[-1]
        if end <= offset:
            return
        ts, ssrc = _TS_SSRC(packet, 4)
        s = self._sides[side]
        pos = s.anchor_pos + ((ts - s.anchor_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        if s.ssrc != ssrc or abs(pos - now) > REANCHOR:
            s.ssrc, s.anchor_ts, s.anchor_pos = ssrc, ts, now
            pos = now
        s.packets += 1
        start = pos - self.written
        if start < 0:  # later than the jitter window: what is already written stays
            offset -= start
            start = 0
            if end <= offset:
                return
        if pt != s.pt:  # another codec from here on
            s.pt = pt
            s.codecs.append((max(pos, self.written, s.codecs[-1][0]), pt))
        codes = s.codes
        if len(codes) < start:
            codes += _FILLER[pt] * (start - len(codes))
        codes[start : start + end - offset] = packet[offset:end]

    def _flush(self, upto: int) -> None:
        """Append every frame before `upto` to the file (silence where a side has nothing), at
        most PIECE at a time (after a long hold, with no packet meanwhile)."""
        while self.written < upto:
            self._flush_piece(min(upto, self.written + PIECE))

    def _flush_piece(self, upto: int) -> None:
        n = upto - self.written
        frames = bytearray(4 * n)
        for side, s in enumerate(self._sides[:2]):
            codes = s.codes
            if len(codes) < n:
                codes += _FILLER[s.pt] * (n - len(codes))
            bounds = [max(0, frame - self.written) for frame, _ in s.codecs] + [n]
            for i, (_, pt) in enumerate(s.codecs):
                lo, hi = bounds[i], min(bounds[i + 1], n)
                if lo >= hi:
                    continue
                low, high = _RECORDED[pt]
                part = codes[lo:hi].translate(low), codes[lo:hi].translate(high)
                frames[4 * lo + 2 * side : 4 * hi : 4] = part[0]
                frames[4 * lo + 2 * side + 1 : 4 * hi : 4] = part[1]
            del codes[:n]
            s.codecs = [c for c in s.codecs if c[0] <= upto][-1:] + [
                c for c in s.codecs if c[0] > upto
            ]
        if len(self._sides) > 2:
            frames = self._mix_supervisors(frames, n, upto)
        self.file.write(frames)
        self.written = upto

    def _mix_supervisors(self, frames: bytearray, n: int, upto: int) -> bytearray:
        """Add each supervisor's next `n` samples to the channels it reaches (clipped)."""
        mixed: np.ndarray | None = None
        for s in self._sides[2:]:
            codes = s.codes
            if not codes:  # nothing from this one in this stretch (or ever again)
                continue
            if len(codes) < n:
                codes += _FILLER[s.pt] * (n - len(codes))
            pcm = bytearray(2 * n)
            bounds = [max(0, frame - self.written) for frame, _ in s.codecs] + [n]
            for i, (_, pt) in enumerate(s.codecs):
                lo, hi = bounds[i], min(bounds[i + 1], n)
                if lo < hi:
                    low, high = _RECORDED[pt]
                    pcm[2 * lo : 2 * hi : 2] = codes[lo:hi].translate(low)
                    pcm[2 * lo + 1 : 2 * hi : 2] = codes[lo:hi].translate(high)
            del codes[:n]
            s.codecs = [c for c in s.codecs if c[0] <= upto][-1:] + [
                c for c in s.codecs if c[0] > upto
            ]
            if mixed is None:
                mixed = np.frombuffer(frames, dtype="<i2").astype(np.int32).reshape(n, 2)
            samples = np.frombuffer(pcm, dtype="<i2")
            for channel in s.channels:
                mixed[:, channel] += samples
        if mixed is None:
            return frames
        return bytearray(np.clip(mixed, -32768, 32767).astype("<i2").tobytes())

    # ---- pause and resume ---------------------------------------------------------------------

    def pause(self) -> None:
        self._drain()  # what came before the pause is kept
        if not self.paused:
            self.paused = True
            self.pauses += 1
            # What was received up to now is kept; nothing from here on until resumed.
            logger.info("recording paused")

    def resume(self) -> None:
        self._drain()  # what came while paused is left out
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
        self._drain()
        return sum(s.packets for s in self._sides)

    def close(self) -> float:
        """Write what is left, finish the WAV header and close the file; the seconds recorded."""
        if self.closed:
            return self.written / RATE
        self._drain()
        if self.closed:  # the disk failed meanwhile
            return self.written / RATE
        self.closed = True
        try:
            held = max(len(s.codes) for s in self._sides)
            self._flush(max(self._now(), self.written + held))
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
