"""The recorder's timeline (two channels in step, silence where a side is quiet or paused),
G.711 decoding, the sealing of a recording, the recording policy, and the store's fetch and
retention purge on a real NATS object store."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import math
import struct
import threading
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import nats
import pytest

from switchboard.core import stores
from switchboard.core.config import ConfigError
from switchboard.core.errors import NotFound
from switchboard.testing.fakes import FakePublisher
from switchboard.v1 import contact_pb2
from switchboard.voice_gateway import config as voice_config
from switchboard.voice_gateway.media import g711
from switchboard.voice_gateway.recording import sealing
from switchboard.voice_gateway.recording.calls import CallRecordings
from switchboard.voice_gateway.recording.policy import Mode, RecordingPolicy
from switchboard.voice_gateway.recording.recorder import (
    AGENT,
    CALLER,
    RATE,
    Recorder,
    decode,
    wav_header,
)
from switchboard.voice_gateway.recording.store import RecordingStore

KEY = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tone(hz: float, n: int, start: int = 0, amplitude: int = 8000) -> bytes:
    return struct.pack(
        f"<{n}h",
        *(int(amplitude * math.sin(2 * math.pi * hz * (start + i) / RATE)) for i in range(n)),
    )


def packet(payload: bytes, ts: int, ssrc: int = 1, pt: int = 0, seq: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def channels(path: Path) -> tuple[list[int], list[int]]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, RATE)
        data = w.readframes(w.getnframes())
    samples = struct.unpack(f"<{len(data) // 2}h", data)
    return list(samples[0::2]), list(samples[1::2])


def test_g711_decoding_inverts_encoding_within_its_quantisation() -> None:
    pcm = tone(440, 160, amplitude=12000)
    for pt in (g711.PCMU, g711.PCMA):
        back = struct.unpack("<160h", decode(g711.encode(pcm, pt), pt))
        for a, b in zip(struct.unpack("<160h", pcm), back, strict=True):
            assert abs(a - b) <= max(16, abs(a) // 16)


def test_a_change_of_codec_mid_call_is_decoded_by_each_stretchs_codec(tmp_path: Path) -> None:
    """The caller switches from PCMU to PCMA (a re-INVITE) after half a second, then goes quiet:
    each stretch decodes as what it was sent in, and the quiet is exactly silent in A-law too."""
    clock = Clock()
    rec = Recorder(str(tmp_path), clock=clock)
    sent: list[int] = []
    for i in range(50):
        clock.now = 100.0 + i * 0.02
        pt = g711.PCMU if i < 25 else g711.PCMA
        pcm = tone(440, 160, 160 * i, amplitude=12000)
        rec.tap(CALLER, packet(g711.encode(pcm, pt), 160 * i, pt=pt))
        sent += struct.unpack("<160h", decode(g711.encode(pcm, pt), pt))
    clock.now = 101.5  # half a second of nothing
    rec.close()
    left, right = channels(rec.path)
    assert left[:4000] == sent[:4000]  # PCMU, exactly
    # A-law: its smallest step (+8) is recorded as 0, so silence is exactly silent.
    assert all(abs(a - b) <= 8 for a, b in zip(left[4000 : len(sent)], sent[4000:], strict=True))
    assert max(map(abs, left[4000 : len(sent)])) > 10000
    assert left[len(sent) :] and max(map(abs, left[len(sent) :])) == 0
    assert max(map(abs, right)) == 0


def test_batches_are_placed_as_packet_by_packet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of usual packets is placed at once: the file is the same as placing each packet on
    its own, through losses, reordering, timestamps wrapping, a new source, a marker bit, 30 ms
    packets, a change of codec and a side drifting from the arrival clock."""
    import itertools
    import random

    from switchboard.voice_gateway.recording import recorder as recorder_module

    rng = random.Random(19)
    stream: list[tuple[float, int, bytes]] = []
    for i in range(1500):
        at = 100.0 + i * 0.02 + rng.random() * 0.03
        if 300 <= i < 400 and i % 37 == 5:
            continue  # lost
        ssrc, ts = (1, 0xFFFFF000 + 160 * i) if i < 900 else (2, 7000 + 160 * i)
        ts += 4000 if i > 1200 else 0  # the caller's clock jumps (a transfer): re-anchored
        pcm = tone(440 + (i // 100) * 40, 160, 160 * i)
        first = packet(g711.encode(pcm, 0), ts, ssrc, seq=i)
        if i % 50 == 0:
            first = first[:1] + bytes([0x80]) + first[2:]  # marker bit
        stream.append((at, CALLER, first))
        if i % 3 == 0:
            pt = 0 if i < 1000 else 8
            pcm = tone(1000 + (i // 90) * 30, 240, 240 * (i // 3))
            stream.append((at + 0.001, AGENT, packet(g711.encode(pcm, pt), 80 * i, 9, pt)))
    for i in range(len(stream) - 1):
        if 600 <= i < 800 and i % 53 == 7:  # reordered in the network
            stream[i], stream[i + 1] = stream[i + 1], stream[i]

    def record(folder: Path) -> tuple[list[int], list[int]]:
        folder.mkdir()
        monkeypatch.setattr(recorder_module, "_PHASES", itertools.count())  # the same batches
        clock = Clock()
        rec = Recorder(str(folder), clock=clock)
        for at, side, data in stream:
            clock.now = max(clock.now, at)
            rec.tap(side, data)
        clock.now += 1.0
        rec.close()
        return channels(rec.path)

    batched = record(tmp_path / "batched")
    monkeypatch.setattr(recorder_module.Recorder, "_place_batch", lambda *_: False)
    one_by_one = record(tmp_path / "one-by-one")
    assert batched == one_by_one
    assert max(batched[0]) > 4000 and max(batched[1]) > 4000  # both sides were recorded


def test_calls_fed_in_lockstep_write_their_recordings_at_different_packets(
    tmp_path: Path,
) -> None:
    """Calls bridged together (a relay's calls whose packets arrive in the same turns of the event
    loop) do not all place and write their recordings on the same packet: that would hold every
    call's audio up behind all of them at once. Each still records the same audio."""
    clock = Clock()
    calls = 50
    recorders = [Recorder(str(tmp_path), clock=clock) for _ in range(calls)]
    caller, agent = tone(440, 160 * 500), tone(1000, 160 * 500)
    most = 0
    for i in range(500):  # ten seconds of both sides of every call, a packet of each a turn
        clock.now = 100.0 + i * 0.02
        frames = slice(320 * i, 320 * (i + 1))  # 160 samples
        packets = (
            packet(g711.encode(caller[frames], 0), 160 * i, 1),
            packet(g711.encode(agent[frames], 0), 160 * i, 2),
        )
        written = [rec.written for rec in recorders]
        for rec in recorders:
            rec.tap(CALLER, packets[0])
            rec.tap(AGENT, packets[1])
        most = max(most, sum(rec.written != w for rec, w in zip(recorders, written, strict=True)))
    assert all(rec.written >= 7 * RATE for rec in recorders)  # written as the calls went on
    assert most <= 2  # not all fifty in one turn
    clock.now += 1.0
    for rec in recorders:
        assert rec.close() == pytest.approx(10.98)
    heard = channels(recorders[0].path)
    for channel, pcm in enumerate((caller, agent)):
        sent = list(struct.unpack("<80000h", decode(g711.encode(pcm, 0), 0)))
        assert heard[channel][:80000] == sent
        assert set(heard[channel][80000:]) == {0}  # the last second: nothing came
    for rec in recorders[1:]:
        assert rec.path.read_bytes() == recorders[0].path.read_bytes()


def test_a_recording_is_written_to_its_file_by_another_thread(tmp_path: Path) -> None:
    """A write that waits on a busy disk holds up the recorders' writer thread, not the thread
    that taps the calls (the event loop relaying every call's audio)."""
    writers: set[int] = set()

    class Watched(io.BufferedWriter):
        def write(self, data: Any) -> int:
            writers.add(threading.get_ident())
            return super().write(data)

    clock = Clock()
    rec = Recorder(str(tmp_path), clock=clock)
    rec.file.close()
    rec.file = Watched(io.FileIO(rec.path, "wb"))
    rec.file.write(wav_header(0))
    writers.clear()
    pcm = tone(440, 160 * 150)
    for i in range(150):  # three seconds: written as it goes, the rest at the end
        clock.now = 100.0 + i * 0.02
        rec.tap(CALLER, packet(g711.encode(pcm[320 * i : 320 * (i + 1)], 0), 160 * i))
    clock.now += 0.02
    assert rec.close() == 3.0
    assert writers and threading.get_ident() not in writers
    heard = channels(rec.path)
    assert heard[0] == list(struct.unpack("<24000h", decode(g711.encode(pcm, 0), 0)))


def test_the_writer_thread_sleeps_while_nothing_is_handed_over() -> None:
    """The recorders' writer takes what is handed over every WAKE seconds, and with nothing
    handed over it is not woken at all (a gateway recording no call pays nothing for it)."""
    import time

    from switchboard.voice_gateway.recording import recorder as recorder_module

    wakes: list[float] = []

    class Counted(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            wakes.append(time.monotonic())
            return super().wait(timeout)

    writer = recorder_module._Writer()
    writer.WAKE = 0.001
    writer._wake = Counted()
    done = threading.Event()
    writer.put(done.set)
    assert done.wait(10)
    before = len(wakes)
    time.sleep(0.2)  # two hundred WAKEs with nothing to do
    assert len(wakes) - before <= 1
    again = threading.Event()
    writer.put(again.set, now=True)
    assert again.wait(10)


async def test_the_end_of_a_call_does_not_wait_for_its_recording_to_be_written(
    tmp_path: Path,
) -> None:
    """The call's end hands its recording's last second and header to the writer thread, and
    the recording is stored once its file is whole: the event loop never waits on a busy disk."""
    from switchboard.voice_gateway.recording import recorder as recorder_module

    stored: list[tuple[str, str, bytes, float]] = []

    class Store:  # the part of RecordingStore the calls' recordings use
        async def store(
            self, tenant: str, contact_id: str, wav: Path, seconds: float, sealed: bool = False
        ) -> None:
            data = await asyncio.to_thread(wav.read_bytes)
            stored.append((tenant, contact_id, data[:4], seconds))

    recordings = CallRecordings(RecordingPolicy(), cast(RecordingStore, Store()), str(tmp_path))
    clock = Clock()
    rec = Recorder(str(tmp_path), clock=clock)
    for i in range(50):
        clock.now = 100.0 + i * 0.02
        rec.tap(CALLER, packet(g711.encode(tone(440, 160), 0), 160 * i))
    clock.now = 101.0
    recordings.active["c1"] = rec
    disk = threading.Event()
    freed: list[bool] = []
    recorder_module._WRITER.put(lambda: freed.append(disk.wait(20)), now=True)  # a busy disk
    recordings.ended(cast(Any, SimpleNamespace(contact_id="c1", tenant="acme")))
    disk.set()  # free again: had `ended` waited for the writer, it would have timed out first
    await recordings.drain()
    assert freed == [True]
    assert stored == [("acme", "c1", b"RIFF", 1.0)]


@pytest.mark.parametrize("seconds", [0.5, 2, 5])  # one chunk, just over one, several
def test_a_recording_is_sealed_by_the_writer_thread_as_it_is_written(
    tmp_path: Path, seconds: float
) -> None:
    """With a Sealer the recorder's file holds the recording sealed, written by the writer
    thread as it goes (no plaintext on disk, nothing to seal at the call's end): it opens to
    the very bytes of the same call recorded unsealed."""
    from switchboard.core.recording_seal import Sealer

    sealers: set[int] = set()

    class Watched(Sealer):
        def write(self, data: bytes) -> None:
            sealers.add(threading.get_ident())
            super().write(data)

    def record(folder: Path, sealed: bool) -> Recorder:
        folder.mkdir()
        clock = Clock()
        seal = (lambda f: Watched(KEY, "acme", "c7", f)) if sealed else None
        rec = Recorder(str(folder), clock=clock, seal=seal)
        n = int(seconds * 50)
        caller, agent = tone(440, 160 * n), tone(1000, 160 * n)
        for i in range(n):
            clock.now = 100.0 + i * 0.02
            frames = slice(320 * i, 320 * (i + 1))
            rec.tap(CALLER, packet(g711.encode(caller[frames], 0), 160 * i, 1))
            rec.tap(AGENT, packet(g711.encode(agent[frames], 8), 160 * i, 2, 8))
        clock.now += 0.3
        rec.close()
        return rec

    plain = record(tmp_path / "plain", sealed=False).path.read_bytes()
    rec = record(tmp_path / "sealed", sealed=True)
    data = rec.path.read_bytes()
    assert data.startswith(sealing.MAGIC) and b"RIFF" not in data
    assert sealers and threading.get_ident() not in sealers
    out = io.BytesIO()
    sealing.open_sealed(KEY, "acme", "c7", io.BytesIO(data), out)
    assert out.getvalue() == plain
    assert len(plain) > 44 + 4 * RATE * seconds  # the whole call (and its last 300 ms)
    with pytest.raises(sealing.SealError):
        sealing.open_sealed(KEY, "acme", "c8", io.BytesIO(data), io.BytesIO())


def test_a_sealer_seals_as_seal_does_and_its_recordings_open_a_range_at_a_time() -> None:
    """Written a piece at a time, with its head rewritten at the end: the same layout as `seal`
    (every reader opens it, byte ranges included), whatever the pieces' sizes."""
    from switchboard.core.recording_seal import CHUNK, SealedRecording, Sealer

    body = bytes(range(256)) * (3 * CHUNK // 256) + b"tail"
    for pieces in ([44, len(body)], [CHUNK - 1, 2, CHUNK, 1, CHUNK], [7] * 40):
        for total in (CHUNK - 10, CHUNK, CHUNK + 1, 2 * CHUNK, len(body)):
            plain = b"HEAD" + body[: total - 4]
            dst = io.BytesIO()
            sealer = Sealer(KEY, "acme", "c1", dst)
            sealer.write(b"\0\0\0\0")
            pos = 4
            for size in itertools.cycle(pieces):
                if pos >= total:
                    break
                sealer.write(plain[pos : pos + size])
                pos += size
            sealer.finish(b"HEAD")
            out = io.BytesIO()
            sealing.open_sealed(KEY, "acme", "c1", io.BytesIO(dst.getvalue()), out)
            assert out.getvalue() == plain
            opened = SealedRecording(KEY, "acme", "c1", dst.getvalue())
            assert opened.read(CHUNK - 3, CHUNK + 5) == plain[CHUNK - 3 : CHUNK + 5]
            again = io.BytesIO()
            sealing.seal(KEY, "acme", "c1", io.BytesIO(plain), again)
            assert len(again.getvalue()) == len(dst.getvalue())


async def test_a_calls_recording_is_stored_as_written_without_a_sealed_copy(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end of a recorded call puts the file its recorder sealed as it went: no temporary
    file is made, and the recording fetched is the call's WAV, its size and digest named."""
    import hashlib
    import tempfile

    from switchboard.voice_gateway.recording import store as store_module

    def no_temporary_file(*_: Any, **__: Any) -> Any:
        raise AssertionError("a temporary copy of the recording")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_temporary_file)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_temporary_file)
    monkeypatch.setattr(store_module.tempfile, "TemporaryFile", no_temporary_file)
    nc = await nats.connect(nats_url)
    try:
        bus = FakePublisher()
        store = RecordingStore(stores.ObjectStores(nc.jetstream()), bus, RecordingPolicy(), KEY)
        recordings = CallRecordings(RecordingPolicy(), store, str(tmp_path))
        call = SimpleNamespace(
            contact_id="c5",
            tenant="acme",
            queue="sales",
            caller=SimpleNamespace(rtp=SimpleNamespace(tap=None)),
            agent=SimpleNamespace(rtp=SimpleNamespace(tap=None, on_dtmf=None)),
        )
        recordings.bridged(cast(Any, call))
        rec = recordings.recorder("c5")
        assert rec is not None
        pcm = tone(440, 160 * 150)
        for i in range(150):
            call.caller.rtp.tap(packet(g711.encode(pcm[320 * i : 320 * (i + 1)], 0), 160 * i))
        recordings.ended(cast(Any, call))
        await recordings.drain()
        assert not rec.path.exists()
        wav = await store.fetch("acme", "c5")
        with wave.open(io.BytesIO(wav)) as w:
            assert w.getnchannels() == 2 and w.getnframes() > 0
        sealed = await stores.ObjectStores(nc.jetstream()).get("recordings", "acme/c5.wav")
        ref = bus.events[-1].message.attachments[0]
        assert (ref.size_bytes, ref.sha256) == (len(sealed), hashlib.sha256(sealed).hexdigest())
    finally:
        await nc.close()


def test_a_long_stretch_without_packets_is_silence_in_step(tmp_path: Path) -> None:
    """Half a minute with no packet at all (a hold): silence, written in pieces, and the caller
    back in step after it."""
    clock = Clock()
    rec = Recorder(str(tmp_path), clock=clock)
    pcm = tone(440, 160, amplitude=12000)
    for i, at in enumerate([100.0, 100.02, 130.0, 130.02]):
        clock.now = at
        rec.tap(CALLER, packet(g711.encode(pcm, 0), 160 * i, ssrc=1 if at < 120 else 2))
    clock.now = 131.0
    assert rec.close() == pytest.approx(31.0, abs=0.01)
    left, _ = channels(rec.path)
    assert max(map(abs, left[:320])) > 10000
    assert max(map(abs, left[400 : 30 * RATE - 10])) == 0
    assert max(map(abs, left[30 * RATE : 30 * RATE + 320])) > 10000


def test_two_sides_are_aligned_by_time_and_a_quiet_side_is_silence(tmp_path: Path) -> None:
    clock = Clock()
    rec = Recorder(str(tmp_path), clock=clock)
    # The caller talks from the start; the agent only from 0.5 s on, with its own timestamps.
    for i in range(50):  # 1 s of 20 ms packets
        clock.now = 100.0 + i * 0.02
        rec.tap(CALLER, packet(g711.encode(tone(440, 160, i * 160), 0), 5000 + i * 160))
        if i >= 25:
            rec.tap(AGENT, packet(g711.encode(tone(1000, 160), 0), 90000 + (i - 25) * 160, 7))
    clock.now = 101.0
    seconds = rec.close()
    assert seconds == pytest.approx(1.0, abs=0.03)
    left, right = channels(rec.path)
    assert max(map(abs, left[: RATE // 2])) > 6000
    assert max(map(abs, right[: RATE // 2 - 10])) == 0  # the agent had not spoken yet
    assert max(map(abs, right[RATE // 2 + 10 : RATE - 10])) > 6000


def _level(samples: list[int], hz: float) -> float:
    """The amplitude of the `hz` component of `samples` (a DFT bin)."""
    n = len(samples)
    re_ = sum(x * math.cos(2 * math.pi * hz * i / RATE) for i, x in enumerate(samples))
    im = sum(x * math.sin(2 * math.pi * hz * i / RATE) for i, x in enumerate(samples))
    return math.hypot(re_, im) * 2 / n


def test_a_supervisor_is_mixed_into_the_channels_its_mode_reaches(tmp_path: Path) -> None:
    """A whispering supervisor (1700 Hz) in the agent's channel for the first second, then
    barging (its own timeline, anchored on arrival) in both for the next: each channel keeps its
    party and holds the supervisor only where the agent (whisper) or both (barge) heard it."""
    clock = Clock()
    rec = Recorder(str(tmp_path), clock=clock)
    whisper = rec.extra_tap("s1:whisper", (AGENT,))
    barge = rec.extra_tap("s1:barge", (CALLER, AGENT))
    assert rec.extra_tap("s1:whisper", (AGENT,)) is not None
    for i in range(100):  # 2 s of 20 ms packets
        clock.now = 100.0 + i * 0.02
        rec.tap(CALLER, packet(g711.encode(tone(440, 160, i * 160, 6000), 0), i * 160))
        rec.tap(AGENT, packet(g711.encode(tone(1000, 160, i * 160, 6000), 0), i * 160, 7))
        sup = packet(g711.encode(tone(1700, 160, i * 160, 6000), 0), 777 + i * 160, 9)
        (whisper if i < 50 else barge)(sup)
    clock.now = 102.0
    rec.close()
    left, right = channels(rec.path)
    first, second = slice(800, 7200), slice(8800, 15200)  # clear of the switch
    assert _level(left[first], 440) > 4000 and _level(right[first], 1000) > 4000
    assert _level(right[first], 1700) > 4000 and _level(left[first], 1700) < 100
    assert _level(left[second], 1700) > 4000 and _level(right[second], 1700) > 4000
    assert _level(left[second], 440) > 4000 and _level(right[second], 1000) > 4000
    assert _level(left[second], 1000) < 100 and _level(right[second], 440) < 100
    assert rec.packets == 300  # the two parties and the supervisor


def test_jitter_is_absorbed_by_timestamps_and_a_paused_stretch_is_silent(tmp_path: Path) -> None:
    clock = Clock()
    rec = Recorder(str(tmp_path), clock=clock)
    for i in range(100):  # 2 s; packets arrive up to 40 ms late, in order of timestamp
        clock.now = 100.0 + i * 0.02 + (0.04 if i % 3 == 1 else 0.0)
        rec.tap(CALLER, packet(g711.encode(tone(440, 160, i * 160), 0), i * 160))
        if i == 30:
            rec.agent_key("*")
            rec.agent_key("2")
            assert rec.paused
        if i == 70:
            rec.agent_key("*")
            rec.agent_key("1")
            assert not rec.paused
    clock.now = 102.1
    rec.close()
    left, _ = channels(rec.path)
    # Continuous where recorded: the timestamps, not the arrivals, place each packet.
    assert min(max(map(abs, left[k : k + 80])) for k in range(0, 30 * 160, 80)) > 3000
    assert max(map(abs, left[31 * 160 + 400 : 70 * 160])) == 0  # the paused stretch
    assert max(map(abs, left[72 * 160 : 99 * 160])) > 6000
    assert rec.pauses == 1


def test_an_on_demand_recording_holds_nothing_until_started(tmp_path: Path) -> None:
    clock = Clock()
    rec = Recorder(str(tmp_path), paused=True, clock=clock)
    rec.tap(CALLER, packet(g711.encode(tone(440, 160), 0), 0))
    assert rec.packets == 0
    rec.agent_key("*")
    rec.agent_key("1")
    rec.tap(CALLER, packet(g711.encode(tone(440, 160), 0), 160))
    assert rec.packets == 1
    rec.discard()
    assert not rec.path.exists()


def test_a_malformed_or_foreign_packet_is_ignored(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path), clock=Clock())
    rec.tap(CALLER, b"\x80\x00")
    rec.tap(CALLER, packet(b"\x00" * 20, 0, pt=18))  # G.729: not recorded
    rec.tap(AGENT, struct.pack("!BBHII", 0xA0, 0, 0, 0, 1) + b"\xff" * 4 + b"\x05")  # all padding
    assert rec.packets == 0
    rec.close()


def test_a_full_disk_stops_the_recording_not_the_call(tmp_path: Path) -> None:
    clock = Clock()
    rec = Recorder(str(tmp_path), clock=clock)
    rec.file.close()
    rec.file = open("/dev/full", "wb", buffering=0)
    for i in range(100):  # two seconds: past the first write
        clock.now = 100.0 + i * 0.02
        rec.tap(CALLER, packet(g711.encode(tone(440, 160), 0), i * 160))
    # The writer's failure is taken up by a later batch, or at the latest by `close`.
    with contextlib.suppress(OSError):
        rec.close()
    assert rec.failed and rec.closed
    rec.discard()
    assert not rec.path.exists()


def seal(tenant: str, contact: str, data: bytes) -> bytes:
    out = io.BytesIO()
    sealing.seal(KEY, tenant, contact, io.BytesIO(data), out)
    return out.getvalue()


def unseal(tenant: str, contact: str, sealed: bytes, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    sealing.open_sealed(key, tenant, contact, io.BytesIO(sealed), out)
    return out.getvalue()


def test_a_sealed_recording_opens_only_for_its_tenant_and_contact() -> None:
    data = bytes(range(256)) * 1000  # several chunks
    sealed = seal("demo", "c1", data)
    assert data[:1024] not in sealed
    assert unseal("demo", "c1", sealed) == data
    for tenant, contact, key in (
        ("acme", "c1", KEY),
        ("demo", "c2", KEY),
        ("demo", "c1", b"k" * 32),
    ):
        with pytest.raises(sealing.SealError):
            unseal(tenant, contact, sealed, key)


def test_a_cut_or_altered_recording_does_not_open() -> None:
    data = b"x" * (sealing.CHUNK * 2 + 10)
    sealed = seal("demo", "c1", data)
    chunk = 4 + sealing.CHUNK + 16
    header = len(sealed) - 2 * chunk - (4 + 10 + 16)
    for bad in (
        sealed[: header + chunk],  # the last chunks dropped at a chunk boundary
        sealed[:-1],
        sealed[: header + 40] + bytes([sealed[header + 40] ^ 1]) + sealed[header + 41 :],
    ):
        with pytest.raises(sealing.SealError):
            unseal("demo", "c1", bad)


def test_the_policy_by_tenant_and_queue() -> None:
    cfg = voice_config.load_text(
        "numbers: {'+1555': {tenant: demo}}\n"
        "recording:\n"
        "  demo: {mode: on, retention_days: 30, queues: {cards: on_demand, staff: off}}\n"
        "  acme: {mode: off}\n"
    )
    policy = cfg.recording
    assert policy.mode("demo", "general") is Mode.ON
    assert policy.mode("demo", "cards") is Mode.ON_DEMAND
    assert policy.mode("demo", "staff") is Mode.OFF
    assert policy.mode("acme", "general") is Mode.OFF
    assert policy.mode("other", "general") is Mode.ON  # recorded by default
    assert policy.retention_days("demo") == 30 and policy.retention_days("acme") == 90


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("recording: {demo: {mode: sometimes}}", "recording.demo.mode"),
        ("recording: {demo: {retention_days: 0}}", "recording.demo.retention_days"),
        ("recording: {demo: {keep: 3}}", "recording.demo.keep"),
        ("recording: {'Not A Tenant': {mode: on}}", "recording.Not A Tenant"),
    ],
)
def test_a_wrong_policy_names_its_field(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        voice_config.load_text(text)
    assert problem in str(caught.value)


async def test_the_store_fetches_by_tenant_and_purges_after_retention(
    nats_url: str, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_url)
    try:
        objects = stores.ObjectStores(nc.jetstream())
        policy = voice_config.load_text(
            "recording: {demo: {retention_days: 30}, acme: {retention_days: 365}}"
        ).recording
        now = [datetime.now(UTC)]
        bus = FakePublisher()
        store = RecordingStore(objects, bus, policy, KEY, clock=lambda: now[0])
        for tenant, contact in (("demo", "c1"), ("acme", "c9")):
            rec = Recorder(str(tmp_path), clock=Clock())
            rec.tap(CALLER, packet(g711.encode(tone(440, 160), 0), 0))
            await store.store(tenant, contact, rec.path, rec.close())
            assert not rec.path.exists()
        assert store.stored == 2
        added = [e for e in bus.events if e.DESCRIPTOR.name == "MessageAdded"]
        assert [e.meta.tenant for e in added] == ["demo", "acme"]
        assert added[0].message.author == contact_pb2.AUTHOR_SYSTEM
        assert added[0].message.attachments[0].object_name == "demo/c1.wav"
        with wave.open(io.BytesIO(await store.fetch("demo", "c1"))) as w:
            assert w.getnchannels() == 2
        for tenant, contact in (("demo", "c2"), ("acme", "c1"), ("demo", "c9")):
            with pytest.raises(NotFound):  # none, or another tenant's
                await store.fetch(tenant, contact)

        now[0] += timedelta(days=31)
        assert await store.purge() == 1  # demo's is past 30 days, acme's is kept a year
        with pytest.raises(NotFound):
            await store.fetch("demo", "c1")
        await store.fetch("acme", "c9")
        assert await store.purge() == 0
    finally:
        await nc.close()
