"""A conference mix for one leg: the audio of several sources (the other party relayed, a
supervisor) decoded from G.711, summed with clipping and encoded again, one 20 ms frame per tick
of the media clock. Each source has its own short buffer, so one that stalls is silence in the
mix and one that runs ahead never grows the delay beyond a few frames."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from switchboard.voice_gateway.media import g711

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
MAX_BUFFERED = 6 * FRAME_SAMPLES  # beyond 120 ms behind, the oldest audio is dropped


def rtp_payload(packet: bytes) -> bytes:
    """The payload of an RTP packet: after the CSRC list and any header extension, without
    padding."""
    if len(packet) < 12:
        return b""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10 and len(packet) >= offset + 4:  # header extension
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    end = len(packet)
    if packet[0] & 0x20 and end > offset:  # padding: its length is the last byte
        end -= packet[-1]
    return packet[offset:end] if end > offset else b""


class Mixer:
    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self._buffers: dict[Hashable, np.ndarray] = {}

    def push(self, source: Hashable, packet: bytes) -> None:
        """Add an RTP packet's audio (G.711 in the mix's payload type) from `source`."""
        samples = g711.decode_samples(rtp_payload(packet), self.payload_type)
        buffered = self._buffers.get(source)
        joined = samples if buffered is None else np.concatenate([buffered, samples])
        self._buffers[source] = joined[-MAX_BUFFERED:]

    def remove(self, source: Hashable) -> None:
        self._buffers.pop(source, None)

    def next_frame(self) -> bytes:
        """The next 20 ms of the mix, encoded (silence when no source has audio)."""
        total = np.zeros(FRAME_SAMPLES, dtype=np.int32)
        for source, buffered in list(self._buffers.items()):
            take = buffered[:FRAME_SAMPLES]
            total[: len(take)] += take
            self._buffers[source] = buffered[FRAME_SAMPLES:]
        return g711.encode_samples(total, self.payload_type)
