"""The two-channel recorder of a bridged call: left the caller, right the agent.

The relay hands it every audio packet either leg receives (`tap`). Each packet's G.711 payload
is placed on its side's timeline by its RTP timestamp, anchored to its arrival time when a side
starts, changes source (SSRC) or drifts away from the arrival clock (a hold, a transfer to
another agent): so both channels stay in step, and a side that sends nothing, or any time the
recording is paused, is silence. Samples older than the jitter window are decoded to 16-bit PCM
(one table lookup per channel, a batch at a time), interleaved and appended to a WAV file as they
come, never held for the whole call. The file is written by a thread of its own (`_Writer`), so a
busy disk never holds up the event loop that relays every call's audio.

A packet costs the tap's queueing on its side; a side's usual batch (two seconds of packets of one
size and source, timestamps one after another) is copied into its side's buffer in one go, and
decoding is left to the flush, where one lookup covers a hundred packets (the relay's CPU per
recorded call stays within 1.5 times an unrecorded call's: bench/voice.py). Each recorder's first
batch is cut short by a different number of packets, so that calls bridged together, whose
packets arrive in the same turns of the event loop, place and write their seconds in different
turns rather than all in one.

A supervisor who speaks to a party (whisper: the agent; barge: both) is recorded too: its
packets get a timeline of their own (`extra_tap`), mixed at the flush into the channels its mode
reaches (summed with clipping). A recording without supervisors never pays for it."""

from __future__ import annotations

import collections
import itertools
import logging
import operator
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

logger = logging.getLogger(__name__)

RATE = 8000
CALLER, AGENT = 0, 1
JITTER = RATE // 5  # 200 ms: packets later than this behind the newest are too late
FLUSH = RATE // 2  # written once this much is past the jitter window: at each batch
PIECE = 10 * RATE  # the most decoded at once
BATCH = 100  # packets of a side placed together: two seconds of it
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
# The same as 16-bit samples, for numpy to decode a channel of a stretch in one lookup.
_SAMPLES = {
    pt: np.frombuffer(bytes(b for code in zip(low, high, strict=True) for b in code), "<i2")
    for pt, (low, high) in _RECORDED.items()
}
# Each recorder's first batch is cut short by a different number of packets (a stride through
# BATCH coprime with it): calls that start together, as a burst of calls bridged at once or a
# relay's calls fed in lockstep do, then place and write their seconds at different packets
# instead of all in the same turn of the event loop (which would hold up every call's audio).
_PHASES = itertools.count()
_PHASE_STRIDE = 31


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


class _Writer:
    """The thread that writes every recording of the process to its file, in the order handed
    over: a write that waits on a busy disk holds up that thread, never the event loop and the
    calls' audio relayed by it. It takes what was handed over every WAKE seconds (waking the
    thread for each call's second would cost more than the write), or at once when asked to
    (a recording being closed); with nothing handed over it sleeps until something is (a
    process recording few calls, or none, is not woken ten times a second for nothing)."""

    WAKE = 0.1

    def __init__(self) -> None:
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._wake = threading.Event()
        self._work = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, job: Callable[[], None], now: bool = False) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="recording-writer", daemon=True
                    )
                    self._thread.start()
        self._jobs.append(job)
        if now:
            self._wake.set()
        self._work.set()

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            self._work.wait()  # something was handed over
            self._wake.wait(self.WAKE)  # and what comes with it
            self._wake.clear()
            self._work.clear()  # (before the jobs are taken: one handed over now is seen)
            while jobs:
                jobs.popleft()()


_WRITER = _Writer()


class Sealing(Protocol):
    """What seals a recording as it is written (switchboard.core.recording_seal.Sealer)."""

    def write(self, data: bytes) -> None: ...

    def finish(self, head: bytes = b"") -> None: ...


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
    """One call's recording, written to a temporary WAV file (by the process's writer thread)
    until `close`. With `seal` (a Sealer of the file, switchboard.core.recording_seal) the file
    holds the recording sealed, by the writer thread as it writes: what is stored at the call's
    end, with no plaintext on disk and nothing left to seal."""

    def __init__(
        self,
        folder: str | None = None,
        paused: bool = False,
        clock: Callable[[], float] = time.monotonic,
        seal: Callable[[BinaryIO], Sealing] | None = None,
    ) -> None:
        self._clock = clock
        self._start = clock()
        fd, name = tempfile.mkstemp(prefix="recording-", suffix=".wav", dir=folder)
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.sealed = seal is not None
        self._sealer = seal(self.file) if seal is not None else None
        self.written = 0  # frames in the file
        self._sides = [_Side(), _Side()]  # the caller's and the agent's, then supervisors'
        self._extra: dict[Hashable, int] = {}  # a supervisor's key -> its side
        # Each side's packets not placed yet and their arrival times (those of the caller's and
        # the agent's, then supervisors'); placed when a side has `_batch[0]` of them.
        self._queued: list[tuple[list[bytes], list[float]]] = [([], []), ([], [])]
        self._batch = [1 + (next(_PHASES) * _PHASE_STRIDE) % BATCH]
        # What the relay calls with each packet of the caller's and the agent's leg.
        self.taps = (self._tapper(CALLER), self._tapper(AGENT))
        self.paused = paused
        self.pauses = 0
        self.closed = False
        self.failed = False  # the file could not be written: nothing is stored
        self._error: OSError | None = None  # the writer's, taken up on the next batch
        self._keys = ""
        if self._sealer is None:
            self.file.write(wav_header(0))
        else:  # sealed by the writer thread, as everything after it
            _WRITER.put(lambda: self._write(wav_header(0)))

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
            self._queued.append(([], []))
        return self._tapper(side)

    def _tapper(self, side: int) -> Callable[[bytes], None]:
        """The relay's tap of one side: as little as can be done per packet (a call's recording
        takes a hundred a second)."""
        packets, arrivals = self._queued[side]
        append, arrived, clock, drain, batch = (
            packets.append,
            arrivals.append,
            self._clock,
            self._drain,
            self._batch,
        )

        def tap(packet: bytes) -> None:
            append(packet)
            arrived(clock())
            if len(packets) >= batch[0]:
                drain()

        return tap

    def _drain(self) -> None:
        """Place the packets received since the last batch, and write what is past the jitter
        window once there is FLUSH of it."""
        self._batch[0] = BATCH
        last = -1.0
        for side, (packets, arrivals) in enumerate(self._queued):
            if not packets:
                continue
            batch, times = packets[:], arrivals[:]
            packets.clear()
            arrivals.clear()
            last = max(last, times[-1])
            if self.closed or self.paused:  # paused: left out
                continue
            if not self._place_batch(side, batch, times):
                self._place_each(side, batch, times)
        if self._error is not None and not self.closed:  # the disk is full or gone
            logger.error("recording stopped: %s", self._error)
            self.failed = True
            self.closed = True
            _WRITER.put(self.file.close)  # the call goes on unrecorded
        if last < 0 or self.closed:
            return
        now = int((last - self._start) * RATE)
        if now - JITTER - self.written >= FLUSH:
            self._flush(now - JITTER)

    def _place_batch(self, side: int, packets: list[bytes], arrivals: list[float]) -> bool:
        """Place one side's batch with one copy, without a Python step per packet, when it is
        the usual one: packets of one size, RTP version 2 with no CSRC, extension or padding, the
        side's codec and source, timestamps one after the other, each in step with its arrival
        and not too late. False (nothing placed): the batch is placed packet by packet."""
        s = self._sides[side]
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
                [int((arrived - start) * RATE) for arrived in arrivals],
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

    def _place_each(self, side: int, packets: list[bytes], arrivals: list[float]) -> None:
        start, place, s, written = self._start, self._place, self._sides[side], self.written
        for packet, arrived in zip(packets, arrivals, strict=True):
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
        stereo = np.empty((n, 2), "<i2")
        for side, s in enumerate(self._sides[:2]):
            codes = s.codes
            if len(codes) < n:
                codes += _FILLER[s.pt] * (n - len(codes))
            bounds = [max(0, frame - self.written) for frame, _ in s.codecs] + [n]
            for i, (_, pt) in enumerate(s.codecs):
                lo, hi = bounds[i], min(bounds[i + 1], n)
                if lo < hi:  # (the view of `codes` is gone before `codes` is cut below)
                    stereo[lo:hi, side] = _SAMPLES[pt][np.frombuffer(codes, np.uint8, hi - lo, lo)]
            del codes[:n]
            s.codecs = [c for c in s.codecs if c[0] <= upto][-1:] + [
                c for c in s.codecs if c[0] > upto
            ]
        frames = stereo.tobytes()
        if len(self._sides) > 2:
            frames = self._mix_supervisors(bytearray(frames), n, upto)
        _WRITER.put(lambda: self._write(frames))
        self.written = upto

    def _write(self, frames: bytes) -> None:
        """(In the writer thread.)"""
        if self._error is None:
            try:
                (self._sealer or self.file).write(frames)
            except OSError as exc:
                self._error = exc

    def _finish(self, frames: int, done: Future[float]) -> None:
        """(In the writer thread.) The header for `frames` written and the file closed."""
        try:
            if self._error is None and self._sealer is not None:
                self._sealer.finish(wav_header(frames))
            elif self._error is None:
                self.file.seek(0)
                self.file.write(wav_header(frames))
        except OSError as exc:
            self._error = exc
        finally:
            try:
                self.file.close()
            except OSError as exc:
                self._error = self._error or exc
            if self._error is not None:
                done.set_exception(self._error)
            else:
                done.set_result(frames / RATE)

    def _mix_supervisors(self, frames: bytearray, n: int, upto: int) -> bytes:
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
            return bytes(frames)
        return np.clip(mixed, -32768, 32767).astype("<i2").tobytes()

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
        """Write what is left, finish the WAV header and close the file; the seconds recorded
        (OSError: the file could not be written). Waits for the writer: see `finish`."""
        try:
            return self.finish().result()
        except OSError:
            self.failed = True
            raise

    def finish(self) -> Future[float]:
        """Hand what is left to the writer, which finishes the WAV header and closes the file:
        the seconds recorded once the file is whole (an OSError: it could not be written)."""
        done: Future[float] = Future()
        if self.closed:
            done.set_result(self.written / RATE)
            return done
        self._drain()
        if self.closed:  # the disk failed meanwhile
            done.set_result(self.written / RATE)
            return done
        self.closed = True
        try:
            held = max(len(s.codes) for s in self._sides)
            self._flush(max(self._now(), self.written + held))
        finally:
            _WRITER.put(lambda: self._finish(self.written, done), now=True)
        return done

    def discard(self) -> None:
        if not self.closed:
            self.closed = True
            _WRITER.put(self.file.close)
        self.path.unlink(missing_ok=True)
