"""Announcements and music on hold: WAV files (8 kHz, 16-bit, mono) from the prompts folder,
pre-encoded once per codec. Missing prompts are generated as short tone patterns, so the
gateway runs with no recordings; an operator replaces them with real recordings of the same
name."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

from switchboard.voice_gateway.media.g711 import PCMA, PCMU, encode

RATE = 8000

# name -> list of (frequency Hz or (f1, f2), duration s); 0 Hz is silence.
Tone = tuple[float | tuple[float, float], float]
# DTMF pairs: digits of the position and wait announcements are played as their DTMF tones.
_DTMF = {
    "1": (697, 1209),
    "2": (697, 1336),
    "3": (697, 1477),
    "4": (770, 1209),
    "5": (770, 1336),
    "6": (770, 1477),
    "7": (852, 1209),
    "8": (852, 1336),
    "9": (852, 1477),
    "0": (941, 1336),
}
GENERATED: dict[str, list[Tone]] = {
    "welcome": [(523.0, 0.15), (659.0, 0.15), (784.0, 0.3), (0, 0.2)],
    "language-menu": [(440.0, 0.2), (0, 0.1), (550.0, 0.2), (0, 0.1), (660.0, 0.2), (0, 0.3)],
    "topic-menu": [(660.0, 0.2), (0, 0.1), (550.0, 0.2), (0, 0.1), (440.0, 0.2), (0, 0.3)],
    "please-hold": [(784.0, 0.2), (0, 0.1), (659.0, 0.3), (0, 0.3)],
    "position": [(880.0, 0.1), (0, 0.05), (880.0, 0.1), (0, 0.2)],
    "wait-minutes": [(990.0, 0.1), (0, 0.05), (990.0, 0.1), (0, 0.2)],
    "callback-offer": [(1200.0, 0.15), (0, 0.1), (1200.0, 0.15), (0, 0.3)],
    "callback-confirmed": [(1200.0, 0.4), (0, 0.2)],
    "connecting": [(700.0, 0.2), (0, 0.1)],
    "goodbye": [(600.0, 0.3), (400.0, 0.3), (0, 0.2)],
    "invalid": [(300.0, 0.4), (0, 0.2)],
    # After the agent hangs up: "please rate us from 1 to 5", then thanks.
    "survey": [(523.0, 0.2), (0, 0.1), (587.0, 0.2), (0, 0.1), (659.0, 0.2), (0, 0.3)],
    "survey-thanks": [(784.0, 0.2), (988.0, 0.3), (0, 0.2)],
    # A slow arpeggio that loops: the music on hold.
    "music-on-hold": [
        (262.0, 0.4),
        (330.0, 0.4),
        (392.0, 0.4),
        (523.0, 0.4),
        (392.0, 0.4),
        (330.0, 0.4),
        (0, 0.2),
    ],
}
for _digit, _pair in _DTMF.items():
    GENERATED[f"digit-{_digit}"] = [(_pair, 0.15), (0, 0.1)]


def synthesise(tones: list[Tone]) -> bytes:
    out = bytearray()
    for freq, seconds in tones:
        n = int(RATE * seconds)
        freqs = freq if isinstance(freq, tuple) else (freq,)
        ramp = max(1, int(RATE * 0.01))
        for i in range(n):
            if not freqs[0]:
                value = 0.0
            else:
                value = sum(math.sin(2 * math.pi * f * i / RATE) for f in freqs) / len(freqs)
            env = min(1.0, i / ramp, (n - i) / ramp)
            out += struct.pack("<h", int(value * env * 8000))
    return bytes(out)


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)


def read_wav(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, RATE):
            raise ValueError(
                f"{path}: prompts must be 8 kHz 16-bit mono WAV, not {w.getframerate()} Hz "
                f"{8 * w.getsampwidth()}-bit {w.getnchannels()}-channel"
            )
        return w.readframes(w.getnframes())


class Prompts:
    """Prompt name -> G.711 audio per payload type."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._audio: dict[tuple[str, int], bytes] = {}

    def load(self, extra: tuple[str, ...] = ()) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        names = set(GENERATED) | set(extra) | {p.stem for p in self.folder.glob("*.wav")}
        for name in sorted(names):
            path = self.folder / f"{name}.wav"
            if not path.exists():
                if name not in GENERATED:
                    raise ValueError(f"prompt {name!r}: no {path} and no generated default")
                write_wav(path, synthesise(GENERATED[name]))
            pcm = read_wav(path)
            for pt in (PCMU, PCMA):
                self._audio[(name, pt)] = encode(pcm, pt)

    def get(self, name: str, payload_type: int) -> bytes:
        return self._audio[(name, payload_type)]

    def sequence(self, names: list[str], payload_type: int) -> bytes:
        return b"".join(self.get(n, payload_type) for n in names)
