"""G.711 µ-law and A-law encoding (ITU-T G.711), through tables built once per process."""

from __future__ import annotations

from functools import cache

import numpy as np

PCMU, PCMA = 0, 8


def _ulaw(sample: int) -> int:
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _alaw(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    if sample < 0:
        sample = -sample - 1
    sample = min(sample, 32767) >> 3  # 13-bit magnitude
    if sample < 32:
        value = sample >> 1
    else:
        exponent = sample.bit_length() - 5
        value = (exponent << 4) | ((sample >> exponent) & 0x0F)
    return (value | sign) ^ 0x55


@cache
def _table(payload_type: int) -> np.ndarray:
    fn = _ulaw if payload_type == PCMU else _alaw
    return np.frombuffer(bytes(fn(s) for s in range(-32768, 32768)), dtype=np.uint8)


def encode(pcm16: bytes, payload_type: int) -> bytes:
    """Encode signed 16-bit little-endian mono PCM as PCMU (0) or PCMA (8)."""
    samples = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.int32)
    return bytes(_table(payload_type)[samples + 32768].tobytes())


def _ulaw_sample(code: int) -> int:
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def _alaw_sample(code: int) -> int:
    code ^= 0x55
    exponent = (code & 0x70) >> 4
    magnitude = (code & 0x0F) << 4
    magnitude = (magnitude + 0x108) << (exponent - 1) if exponent else magnitude + 8
    return magnitude if code & 0x80 else -magnitude


@cache
def _decode_table(payload_type: int) -> np.ndarray:
    fn = _ulaw_sample if payload_type == PCMU else _alaw_sample
    return np.array([fn(c) for c in range(256)], dtype=np.int16)


def decode_samples(payload: bytes, payload_type: int) -> np.ndarray:
    """PCMU (0) or PCMA (8) as signed 16-bit linear samples."""
    return _decode_table(payload_type)[np.frombuffer(payload, dtype=np.uint8)]


def encode_samples(samples: np.ndarray, payload_type: int) -> bytes:
    """Linear samples (any integer type, clipped to 16 bits) as PCMU (0) or PCMA (8)."""
    clipped = np.clip(samples, -32768, 32767).astype(np.int32)
    return bytes(_table(payload_type)[clipped + 32768].tobytes())
