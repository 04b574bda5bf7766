"""RTP (RFC 3550) for the gateway's call legs: announcements and music on hold played from
pre-encoded G.711, DTMF received as RFC 4733 telephone-events, a relay that bridges two
legs (the B2BUA's media path), and legs that send a mix (call supervision). One 20 ms clock
drives every playing or mixing leg of the process."""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.core import tasks
from switchboard.voice_gateway.media.mixer import Mixer

logger = logging.getLogger(__name__)

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz G.711
DTMF_EVENTS = "0123456789*#ABCD"
MAX_DATAGRAM = 2048  # larger than any RTP packet a G.711 leg carries (MTU-sized at most)


@dataclass
class Playback:
    """A prompt being played: pre-encoded G.711 frames."""

    audio: bytes
    loop: bool = False
    offset: int = 0
    done: asyncio.Future[None] | None = None

    def next_frame(self) -> bytes | None:
        if self.offset >= len(self.audio):
            if not self.loop or not self.audio:
                return None
            self.offset = 0
        frame = self.audio[self.offset : self.offset + FRAME_BYTES]
        self.offset += FRAME_BYTES
        if len(frame) < FRAME_BYTES:
            frame += bytes([frame[-1] if frame else 0xFF]) * (FRAME_BYTES - len(frame))
        return frame


class RtpSession(asyncio.DatagramProtocol):
    """One call leg's RTP socket."""

    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.remote: tuple[str, int] | None = None
        self.latched = False
        self.payload_type = 0
        self.telephone_event: int | None = 101
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.playback: Playback | None = None
        self.bridge: RtpSession | None = None  # relay received audio to this leg
        self.on_dtmf: Callable[[str], None] | None = None
        self.tap: Callable[[bytes], None] | None = None  # the call's recorder, while bridged
        # While set, audio relayed to this leg goes into the mix this leg sends on each tick.
        self.mixer: Mixer | None = None
        # Called with every audio packet this leg receives (supervisors listening in).
        self.listeners: list[Callable[[bytes], None]] = []
        self._last_event_ts: int | None = None
        self.received = 0
        self.sent = 0
        self.relayed = 0  # packets received here and sent on through the bridge

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def set_remote(self, host: str, port: int) -> None:
        if not self.latched:
            self.remote = (host, port) if port else None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        self.received += 1
        if not self.latched:  # symmetric RTP: answer where the media really comes from
            self.remote, self.latched = addr, True
        pt = data[1] & 0x7F
        if pt == self.telephone_event:
            self._telephone_event(data)
            return
        bridge = self.bridge
        if bridge is not None and self._relay(bridge, data) and self.tap is not None:
            self.tap(data)  # after relaying: recording never delays the audio
        for listener in self.listeners:
            listener(data)

    def _relay(self, bridge: RtpSession, data: bytes) -> bool:
        if bridge.mixer is not None:
            bridge.mixer.push(self, data)
            self.relayed += 1
        elif bridge.remote is not None and bridge.transport is not None:
            if bridge.transport.is_closing():
                return False
            bridge.transport.sendto(data, bridge.remote)
            bridge.sent += 1
            self.relayed += 1
        return True

    def _telephone_event(self, data: bytes) -> None:
        cc = data[0] & 0x0F
        offset = 12 + 4 * cc
        if len(data) < offset + 4:
            return
        timestamp = struct.unpack_from("!I", data, 4)[0]
        event = data[offset]
        # One event spans several packets with the same timestamp: report it once.
        if timestamp == self._last_event_ts or event >= len(DTMF_EVENTS):
            return
        self._last_event_ts = timestamp
        if self.on_dtmf is not None:
            self.on_dtmf(DTMF_EVENTS[event])

    def play(self, audio: bytes, loop: bool = False) -> asyncio.Future[None]:
        """Play `audio` (G.711 in this leg's payload type); the future resolves when it ends."""
        self.stop_playing()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.playback = Playback(audio, loop, 0, done)
        self.engine.playing.add(self)
        return done

    def stop_playing(self) -> None:
        pb, self.playback = self.playback, None
        if self.mixer is None:
            self.engine.playing.discard(self)
        if pb is not None and pb.done is not None and not pb.done.done():
            pb.done.cancel()

    def set_mixer(self, mixer: Mixer | None) -> None:
        """Send `mixer`'s audio from the next tick on (a prompt being played goes first);
        None: back to relaying what the bridged leg receives as it comes."""
        self.mixer = mixer
        if mixer is not None:
            self.engine.playing.add(self)
        elif self.playback is None:
            self.engine.playing.discard(self)

    def send_frame(self) -> bool:
        pb = self.playback
        frame = None
        if pb is not None:
            frame = pb.next_frame()
            if frame is None:
                self.playback = None
                if pb.done is not None and not pb.done.done():
                    pb.done.set_result(None)
        if frame is None and self.mixer is not None:
            frame = self.mixer.next_frame()
        if frame is None:
            return False
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + FRAME_BYTES) & 0xFFFFFFFF
        if self.remote is not None and self.transport is not None:
            header = struct.pack(
                "!BBHII", 0x80, self.payload_type, self.seq, self.timestamp, self.ssrc
            )
            self.transport.sendto(header + frame, self.remote)
            self.sent += 1
        return True

    def close(self) -> None:
        self.stop_playing()
        self.bridge = None
        self.tap = None
        self.mixer = None
        self.listeners = []
        self.engine.playing.discard(self)
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()


class MediaEngine:
    """Allocates RTP legs and paces every playing leg from one 20 ms clock."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.playing: set[RtpSession] = set()
        self._task: asyncio.Task[None] | None = None
        self.late_ticks = 0

    async def open(self) -> RtpSession:
        loop = asyncio.get_running_loop()
        _, session = await loop.create_datagram_endpoint(
            lambda: RtpSession(self), local_addr=(self.host, 0)
        )
        session.port = session.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        # asyncio reads each datagram into a fresh 256 KiB buffer (its max_size) and shrinks it:
        # at thousands of packets a second that churns the allocator (mmap and munmap once the
        # heap is fragmented). RTP here is at most a few hundred bytes.
        if hasattr(session.transport, "max_size"):
            session.transport.max_size = MAX_DATAGRAM  # type: ignore[union-attr]
        return session

    def start(self) -> None:
        self._task = asyncio.create_task(self._clock())

    async def stop(self) -> None:
        await tasks.cancel_and_wait(self._task)

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_MS / 1000
        due = loop.time()
        while True:
            due += period
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -5 * period:
                # Fell far behind (an overloaded process): skip ahead rather than burst.
                self.late_ticks += 1
                due = loop.time()
            for session in list(self.playing):
                if not session.send_frame():
                    self.playing.discard(session)
