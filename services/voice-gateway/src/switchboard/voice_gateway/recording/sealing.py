"""Recordings at rest (switchboard.core.recording_seal: the chat's inbox opens them too)."""

from switchboard.core.recording_seal import (
    CHUNK,
    KEY_BYTES,
    MAGIC,
    RecordingKeys,
    SealError,
    open_sealed,
    seal,
    tenant_key,
)

__all__ = [
    "CHUNK",
    "KEY_BYTES",
    "MAGIC",
    "RecordingKeys",
    "SealError",
    "open_sealed",
    "seal",
    "tenant_key",
]
