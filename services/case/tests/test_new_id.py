"""The case store's ids are random UUIDs (version 4) as 32 hex digits, exactly as
`uuid.uuid4().hex` writes them."""

from __future__ import annotations

import os
import random
import uuid

import pytest

from switchboard.case.adapters import orm


def test_an_id_is_uuid4_hex_of_the_random_bytes_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    pick = random.Random(11)
    draws = [bytes([b] * 16) for b in (0x00, 0xFF, 0x5A, 0xA5)]
    draws += [pick.randbytes(16) for _ in range(500)]
    for raw in draws:
        monkeypatch.setattr(os, "urandom", lambda n, raw=raw: raw[:n])
        assert orm.new_id() == uuid.UUID(bytes=raw, version=4).hex


def test_ids_are_version_4_and_differ() -> None:
    ids = {orm.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for i in ids:
        parsed = uuid.UUID(hex=i)
        assert (len(i), parsed.version, parsed.variant) == (32, 4, uuid.RFC_4122)
