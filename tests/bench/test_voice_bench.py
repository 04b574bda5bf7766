"""The voice bench's own measures: the RFC 3550 jitter estimate, lateness, and the ramp."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.voice import Jitter, Ramp, _ramp_steps, _Sender


def _packet(ts: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, 1, ts, 1) + bytes(160)


def test_jitter_follows_rfc3550_by_hand() -> None:
    # Frames 20 ms apart (160 timestamp units); the third arrives 5 ms late.
    # Transits (8 kHz units): 0, 0, 40, 0. D: 0, 40, 40.
    # J: 0 -> 0 + (40 - 0)/16 = 2.5 -> 2.5 + (40 - 2.5)/16 = 4.84375
    jitter = Jitter()
    for arrival, ts in ((0.0, 0), (0.020, 160), (0.045, 320), (0.060, 480)):
        jitter.update(arrival, ts)
    assert jitter.jitter == pytest.approx(4.84375)
    assert jitter.ms == pytest.approx(4.84375 / 8)


def test_steady_stream_has_no_jitter() -> None:
    jitter = Jitter()
    for i in range(50):
        jitter.update(3.0 + i * 0.02, i * 160)
    assert jitter.jitter == pytest.approx(0.0, abs=1e-6)


def test_a_packet_more_than_20_ms_behind_its_tick_is_late() -> None:
    now = [0.0]
    sender = _Sender()
    sender.clock = lambda: now[0]
    sender.first_due = 100.0  # timestamp 160 is due at 100.0, 480 at 100.04
    now[0] = 100.055  # 15 ms behind
    sender.datagram_received(_packet(480), ("127.0.0.1", 1))
    now[0] = 100.085  # 25 ms behind the tick of 640 (100.06)
    sender.datagram_received(_packet(640), ("127.0.0.1", 1))
    assert (sender.received, sender.late) == (2, 1)
    sender.reset()
    assert (sender.received, sender.late, sender.jitter.jitter) == (0, 0, 0.0)


def _search(limit: int, start: int = 25, cap: int = 1600, bisect: int = 4) -> Ramp:
    ramp = Ramp(start, cap, _ramp_steps(start, cap, bisect))
    while (n := ramp.next()) is not None:
        ramp.record(n, n <= limit)
    return ramp


@pytest.mark.parametrize("limit", [30, 137, 300, 599, 1000])
def test_ramp_finds_the_limit_within_its_steps(limit: int) -> None:
    ramp = _search(limit)
    assert ramp.best <= limit < ramp.failing
    assert ramp.failing - ramp.best <= max(1, int(ramp.best * 0.1)) or len(ramp.tried) == 11
    assert len({n for n, _ in ramp.tried}) == len(ramp.tried) <= 11


def test_ramp_stops_at_its_cap_and_when_everything_fails() -> None:
    assert (_search(10_000).best, _search(10_000).failing) == (1600, 0)
    nothing = _search(0)
    assert (nothing.best, nothing.failing) == (0, 1)


def test_ramp_stops_past_its_budget() -> None:
    ramp = Ramp(25, 1600, 11, budget_s=30)
    assert ramp.next(0.0) == 25
    ramp.record(25, True)
    assert ramp.next(29.0) == 50
    ramp.record(50, True)
    assert ramp.next(31.0) is None
