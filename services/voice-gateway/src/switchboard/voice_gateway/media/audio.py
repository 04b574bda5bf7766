"""Audio for the telephone: any 16-bit PCM WAV read as 8 kHz mono (a polyphase windowed-sinc
resampler whose low-pass keeps the 300-3400 Hz telephone band and removes what would alias),
silence trimmed from a fragment's ends, and the WAV written back."""

from __future__ import annotations

import array
import math
import uuid
import wave
from functools import cache
from pathlib import Path

import numpy as np

RATE = 8000
HALF_TAPS = 16  # 32 taps per output sample


class AudioError(ValueError):
    pass


CHUNK = 8000  # output samples resampled at a time (bounds the memory a long file takes)


@cache
def _phases(up: int, down: int) -> np.ndarray:
    """The filter for each of the `up` positions an output sample can fall between two input
    samples: a Hann-windowed sinc with its cut-off at 0.45 of the lower rate, DC gain 1."""
    fc = 0.45 * min(up, down) / down  # cycles per input sample
    j = np.arange(-HALF_TAPS + 1, HALF_TAPS + 1)
    x = j[None, :] - (np.arange(up) / up)[:, None]
    taps = 2 * fc * np.sinc(2 * fc * x) * 0.5 * (1 + np.cos(np.pi * x / HALF_TAPS))
    return np.asarray(taps / taps.sum(axis=1, keepdims=True))


def resample(samples: array.array[int], src: int, dst: int = RATE) -> array.array[int]:
    """16-bit samples at `src` Hz as samples at `dst` Hz."""
    if src == dst:
        return array.array("h", samples)
    g = math.gcd(src, dst)
    up, down = dst // g, src // g
    phases = _phases(up, down)
    pad = np.zeros(HALF_TAPS)
    padded = np.concatenate([pad, np.frombuffer(samples, dtype=np.int16), pad])
    offsets = np.arange(1, 2 * HALF_TAPS + 1)
    out = array.array("h")
    total = len(samples) * up // down
    for first in range(0, total, CHUNK):
        pos = np.arange(first, min(total, first + CHUNK)) * down
        base, phase = np.divmod(pos, up)
        values = (padded[base[:, None] + offsets[None, :]] * phases[phase]).sum(axis=1)
        out.extend(np.clip(np.rint(values), -32768, 32767).astype(np.int16).tolist())
    return out


def read_wav(path: Path) -> bytes:
    """A 16-bit PCM WAV file (any rate, mono or stereo) as 8 kHz mono 16-bit PCM."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"{path}: not a PCM WAV file ({exc})") from None
    if width != 2:
        raise AudioError(f"{path}: prompts must be 16-bit PCM WAV, not {8 * width}-bit")
    samples = array.array("h")
    samples.frombytes(frames[: len(frames) // 2 * 2])
    if channels > 1:  # mix down
        frames_ = np.frombuffer(samples, dtype=np.int16)
        frames_ = frames_[: len(frames_) // channels * channels].reshape(-1, channels)
        samples = array.array("h", frames_.mean(axis=1).astype(np.int16).tobytes())
    return resample(samples, rate).tobytes()


def write_wav(path: Path, pcm: bytes, rate: int = RATE) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # writers may race
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    tmp.replace(path)  # readers never see half a file


def trim(pcm: bytes, threshold: int = 300, keep: float = 0.04) -> bytes:
    """`pcm` without the silence at its ends, beyond `keep` seconds."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if not len(loud):
        return pcm
    pad = int(RATE * keep)
    return samples[max(0, loud[0] - pad) : loud[-1] + pad + 1].tobytes()


def silence(seconds: float) -> bytes:
    return bytes(2 * int(RATE * seconds))
