"""Unit tests of the supervision mix (G.711 decoded, summed with clipping, encoded) and of
supervision's rules: no sockets, no baresip."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from switchboard.voice_gateway.domain import supervision
from switchboard.voice_gateway.domain.state import State
from switchboard.voice_gateway.domain.supervision import Mode
from switchboard.voice_gateway.media import g711
from switchboard.voice_gateway.media.mixer import FRAME_SAMPLES, MAX_BUFFERED, Mixer, rtp_payload
from switchboard.voice_gateway.recording.recorder import decode as recorder_decode


def packet(samples: np.ndarray, payload_type: int, header: bytes = b"") -> bytes:
    first = header or struct.pack("!BBHII", 0x80, payload_type, 1, 160, 7)
    return first + g711.encode_samples(samples, payload_type)


def tone(hz: float, amplitude: float, n: int = FRAME_SAMPLES) -> np.ndarray:
    return np.rint(amplitude * np.sin(2 * np.pi * hz * np.arange(n) / 8000)).astype(np.int32)


@pytest.mark.parametrize("payload_type", [g711.PCMU, g711.PCMA])
def test_decoding_agrees_with_the_recorder_and_round_trips(payload_type: int) -> None:
    codes = bytes(range(256))
    pcm = np.frombuffer(recorder_decode(codes, payload_type), dtype="<i2")
    assert list(g711.decode_samples(codes, payload_type)) == list(pcm)
    assert g711.encode_samples(g711.decode_samples(codes, payload_type), payload_type) == (
        g711.encode(pcm.tobytes(), payload_type)
    )


@pytest.mark.parametrize("payload_type", [g711.PCMU, g711.PCMA])
def test_the_mix_is_the_sum_of_its_sources(payload_type: int) -> None:
    mix = Mixer(payload_type)
    a, b = tone(440, 8000), tone(1700, 6000)
    mix.push("caller", packet(a, payload_type))
    mix.push("supervisor", packet(b, payload_type))
    out = g711.decode_samples(mix.next_frame(), payload_type).astype(float)
    expected = g711.decode_samples(g711.encode_samples(a, payload_type), payload_type).astype(
        float
    ) + g711.decode_samples(g711.encode_samples(b, payload_type), payload_type)
    # G.711 quantises the sum again: within a few percent of it.
    assert np.abs(out - expected).max() <= 0.04 * np.abs(expected).max()
    # Nothing more pushed: silence (the code of 0).
    assert mix.next_frame() == g711.encode_samples(np.zeros(FRAME_SAMPLES), payload_type)


def test_a_loud_sum_is_clipped_not_wrapped() -> None:
    mix = Mixer(g711.PCMU)
    loud = np.full(FRAME_SAMPLES, 30000)
    mix.push(1, packet(loud, g711.PCMU))
    mix.push(2, packet(loud, g711.PCMU))
    out = g711.decode_samples(mix.next_frame(), g711.PCMU)
    assert out.min() > 30000  # full scale positive, never wrapped round to negative


def test_a_source_running_ahead_keeps_only_the_newest_audio() -> None:
    mix = Mixer(g711.PCMU)
    for i in range(20):
        mix.push("x", packet(np.full(FRAME_SAMPLES, 100 * (i + 1)), g711.PCMU))
    frames = [g711.decode_samples(mix.next_frame(), g711.PCMU) for _ in range(8)]
    kept = MAX_BUFFERED // FRAME_SAMPLES
    levels = [int(f[0]) for f in frames]
    assert all(level > 0 for level in levels[:kept]) and levels[kept:] == [0] * (8 - kept)
    assert abs(levels[kept - 1] - 2000) < 100  # the last packet pushed is the last heard


def test_a_removed_source_is_no_longer_mixed() -> None:
    mix = Mixer(g711.PCMU)
    mix.push("supervisor", packet(tone(1700, 8000), g711.PCMU))
    mix.remove("supervisor")
    assert set(g711.decode_samples(mix.next_frame(), g711.PCMU)) == {0}


def test_rtp_payload_skips_csrcs_extension_and_padding() -> None:
    body = b"\x01\x02\x03"
    plain = struct.pack("!BBHII", 0x80, 0, 1, 2, 3) + body
    assert rtp_payload(plain) == body
    csrc = struct.pack("!BBHII", 0x81, 0, 1, 2, 3) + b"\0\0\0\x09" + body
    assert rtp_payload(csrc) == body
    ext = struct.pack("!BBHII", 0x90, 0, 1, 2, 3) + struct.pack("!HH", 0xBEDE, 1) + b"abcd" + body
    assert rtp_payload(ext) == body
    padded = struct.pack("!BBHII", 0xA0, 0, 1, 2, 3) + body + b"\0\0\x03"
    assert rtp_payload(padded) == body
    assert rtp_payload(b"short") == b""


def test_who_hears_the_supervisor_in_each_mode() -> None:
    assert not supervision.agent_hears(Mode.MONITOR) and not supervision.caller_hears(Mode.MONITOR)
    assert supervision.agent_hears(Mode.WHISPER) and not supervision.caller_hears(Mode.WHISPER)
    assert supervision.agent_hears(Mode.BARGE) and supervision.caller_hears(Mode.BARGE)
    # Supervisors on one call hear each other in every mode.
    assert all(supervision.supervisor_hears(mode) for mode in Mode)
    # A supervisor is recorded in the channels of the parties who hear it.
    assert [supervision.recorded_in(m) for m in Mode] == [(), ("agent",), ("caller", "agent")]


def test_supervisor_keys_and_supervisable_calls() -> None:
    assert [supervision.mode_for_key(k) for k in "4561#"] == [
        Mode.MONITOR,
        Mode.WHISPER,
        Mode.BARGE,
        None,
        None,
    ]
    assert [s for s in State if supervision.can_supervise(s)] == [State.CONNECTED]


def test_a_supervisor_dialling_in_is_redirected_on_its_own_transport() -> None:
    holder = supervision.SipAddress("10.0.0.8", 5060, 5061)
    assert supervision.redirect_uri("*55a1", holder, "udp") == "sip:*55a1@10.0.0.8:5060"
    tcp = supervision.redirect_uri("*55a1", holder, "tcp")
    assert tcp == "sip:*55a1@10.0.0.8:5060;transport=tcp"
    tls = supervision.redirect_uri("*55a1", holder, "tls")
    assert tls == "sip:*55a1@10.0.0.8:5061;transport=tls"
    v6 = supervision.SipAddress("fd00::8", 5060)
    assert supervision.redirect_uri("*55a1", v6, "udp") == "sip:*55a1@[fd00::8]:5060"
    # A phone on TLS is never sent to a replica without it (its call would go in the clear).
    assert supervision.redirect_uri("*55a1", v6, "tls") is None
