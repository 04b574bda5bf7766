"""Call recording with real baresip phones: the caller's phone sends one tone and the agent's
another; the stored recording (sealed in the object store, fetched back by its tenant) holds the
caller's tone on the left channel only and the agent's on the right only; the agent's *2 and *1
leave a silent gap; another tenant cannot fetch it; a tenant whose recording is off gets none."""

from __future__ import annotations

import asyncio
import io
import wave
from typing import Any

import numpy as np
import pytest

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.errors import NotFound
from switchboard.v1 import events_pb2, voice_pb2, voice_pb2_grpc
from switchboard.voice_gateway.recording import store as recording_store

from .conftest import SECRET, Baresip, Voice

DEMO_LINE = "+15550100"
ACME_LINE = "+15550200"
CALLER_HZ = 440  # the caller's phone (Voice.caller)
AGENT_HZ = 1000
SUPERVISOR_HZ = 1700
FRAME = 800  # 100 ms at 8 kHz


@pytest.fixture
def gateway_config() -> dict[str, Any]:
    return {
        "realm": "switchboard",
        "phones": {
            "demo": {"a1": "pw-demo-a1", "sup1": "pw-sup1"},
            "acme": {"a1": "pw-acme-a1"},
        },
        "numbers": {
            DEMO_LINE: {"tenant": "demo", "queue": "general", "language": "en"},
            ACME_LINE: {"tenant": "acme", "queue": "general", "language": "en"},
        },
        "recording": {"demo": {"mode": "on", "retention_days": 30}, "acme": {"mode": "off"}},
    }


async def _connected(voice: Voice, phone: Baresip, number: str, line: str, tenant: str) -> str:
    await voice.agent("a1", {"en": 5}, tenant=tenant)
    caller = await voice.caller(f"caller-{tenant}", number)
    await caller.command("dial", voice.dial_uri(line))
    await caller.wait_event("CALL_ESTABLISHED")
    created = await voice.events.wait(
        "ContactCreated", where=lambda e: e.contact.identities[0].value == number
    )
    contact_id = str(created[0].contact.contact_id)
    await phone.wait_event("CALL_INCOMING", timeout=20)
    await phone.command("accept")
    await voice.events.wait("ContactAssigned", contact_id, timeout=30)
    return contact_id


async def _talk(voice: Voice, contact_id: str, packets: int) -> None:
    """Wait until `packets` more RTP packets crossed the bridge each way (20 ms each)."""
    call = voice.gateway.gateway.calls[contact_id]  # type: ignore[union-attr]
    assert call.caller is not None and call.agent is not None
    up, down = call.caller.rtp.relayed, call.agent.rtp.relayed
    await voice.relayed_both_ways(contact_id, packets=min(up, down) + packets)


def _level(samples: np.ndarray, hz: int) -> float:
    """The amplitude of the `hz` component of `samples` (Goertzel, as a DFT bin)."""
    n = len(samples)
    t = np.arange(n) / 8000
    return float(abs(np.dot(samples, np.exp(-2j * np.pi * hz * t))) * 2 / n)


def _channels(wav: bytes) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(float)
    return frames[0::2], frames[1::2]


def _frames(channel: np.ndarray) -> list[np.ndarray]:
    return [channel[i : i + FRAME] for i in range(0, len(channel) - FRAME + 1, FRAME)]


async def test_both_parties_recorded_on_their_own_channel_with_a_paused_gap(voice: Voice) -> None:
    phone = await voice.phone("a1", tone_hz=AGENT_HZ, tenant="demo", password="pw-demo-a1")
    contact_id = await _connected(voice, phone, "+821033330000", DEMO_LINE, "demo")
    recordings = voice.gateway.gateway.recordings  # type: ignore[union-attr]
    assert recordings is not None
    recorder = recordings.recorder(contact_id)
    assert recorder is not None and not recorder.paused
    await _talk(voice, contact_id, 75)

    await phone.command("sndcode", "*")  # the caller is about to read out a card number
    await phone.command("sndcode", "2")
    for _ in range(200):
        if recorder.paused:
            break
        await asyncio.sleep(0.02)
    assert recorder.paused
    await _talk(voice, contact_id, 75)  # 1.5 s of both talking, not recorded
    await phone.command("sndcode", "*")
    await phone.command("sndcode", "1")
    for _ in range(200):
        if not recorder.paused:
            break
        await asyncio.sleep(0.02)
    assert not recorder.paused and recorder.pauses == 1
    await _talk(voice, contact_id, 75)

    caller = next(p for p in voice.phones if p.folder.name == "caller-demo")
    await caller.command("hangup")
    await voice.events.wait("ContactEnded", contact_id)
    stored = await voice.events.wait(
        "MessageAdded", where=lambda e: e.message.contact_id == contact_id, timeout=30
    )
    ref = stored[0].message.attachments[0]
    assert (ref.bucket, ref.object_name) == ("recordings", f"demo/{contact_id}.wav")
    assert ref.content_type == "audio/wav"

    store = voice.gateway.recordings
    assert store is not None
    # At rest the object is sealed: no WAV header, no audio in the clear.
    sealed = await store.objects.get(ref.bucket, ref.object_name)
    assert b"RIFF" not in sealed[:64] and b"WAVE" not in sealed

    left, right = _channels(await store.fetch("demo", contact_id))
    heard = [
        (_level(lf, CALLER_HZ), _level(lf, AGENT_HZ), _level(rf, CALLER_HZ), _level(rf, AGENT_HZ))
        for lf, rf in zip(_frames(left), _frames(right), strict=True)
    ]
    loud = 500.0  # baresip's ausine is far louder; silence and leakage far below
    talking = [lc > loud and ra > loud for lc, _la, _rc, ra in heard]
    both = [i for i, t in enumerate(talking) if t]
    # Frames inside a stretch of talk (not at an edge, where a cut tone spreads over the
    # spectrum): each party's tone is on its own channel only.
    inside = [i for i in both[1:-1] if talking[i - 1] and talking[i + 1]]
    assert len(inside) >= 20, heard
    for i in inside:
        lc, la, rc, ra = heard[i]
        assert la < lc / 20 and rc < ra / 20, (i, heard)
    # The pause: a run of at least a second of silence on both channels between the two talks.
    silent = [
        max(abs(lf).max(), abs(rf).max()) < 50
        for lf, rf in zip(_frames(left), _frames(right), strict=True)
    ]
    first, last = both[0], both[-1]
    run = best = 0
    for quiet in silent[first:last]:
        run = run + 1 if quiet else 0
        best = max(best, run)
    assert best >= 10, silent
    assert any(not s for s in silent[first : first + 5]) and any(
        not s for s in silent[last - 5 : last + 1]
    )

    # Another tenant cannot fetch it, by its own name or by this one's.
    with pytest.raises(NotFound):
        await store.fetch("acme", contact_id)
    other = recording_store.RecordingStore(store.objects, store.bus, store.policy, store.master_key)
    await store.objects.put("recordings", f"acme/{contact_id}.wav", sealed)  # a copied object
    with pytest.raises(NotFound):
        await other.fetch("acme", contact_id)


async def test_a_tenant_with_recording_off_gets_no_recording(voice: Voice) -> None:
    phone = await voice.phone("a1", tone_hz=AGENT_HZ, tenant="acme", password="pw-acme-a1")
    contact_id = await _connected(voice, phone, "+821044440000", ACME_LINE, "acme")
    recordings = voice.gateway.gateway.recordings  # type: ignore[union-attr]
    assert recordings is not None
    await _talk(voice, contact_id, 25)
    assert contact_id in recordings.active and recordings.recorder(contact_id) is None
    call = voice.gateway.gateway.calls[contact_id]  # type: ignore[union-attr]
    assert call.caller is not None and call.caller.rtp.tap is None
    caller = next(p for p in voice.phones if p.folder.name == "caller-acme")
    await caller.command("hangup")
    await voice.events.wait("ContactEnded", contact_id)
    store = voice.gateway.recordings
    assert store is not None
    await recordings.drain()
    assert store.stored == 0
    with pytest.raises(NotFound):
        await store.fetch("acme", contact_id)
    assert not voice.events.of("MessageAdded")


async def test_a_whispering_then_barging_supervisor_is_recorded_where_the_parties_heard_it(
    voice: Voice,
) -> None:
    """A supervisor (1700 Hz) whispers, then barges, then hangs up: its voice is in the agent's
    channel while whispering and in both while barging (never in the caller's alone)."""
    phone = await voice.phone("a1", tone_hz=AGENT_HZ, tenant="demo", password="pw-demo-a1")
    contact_id = await _connected(voice, phone, "+821033330001", DEMO_LINE, "demo")
    sup = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    token = auth.mint(SECRET, "demo", "sup1", ("supervisor",))
    chan = sb_grpc.channel(f"127.0.0.1:{voice.gateway.grpc_port}", token, default_timeout=30)
    try:
        stub = voice_pb2_grpc.VoiceServiceStub(chan)
        asked = asyncio.ensure_future(
            stub.Supervise(
                voice_pb2.SuperviseRequest(
                    contact_id=contact_id, mode=events_pb2.SUPERVISION_MODE_WHISPER
                )
            )
        )
        await sup.wait_event("CALL_INCOMING", timeout=20)
        await sup.command("accept")
        supervision_id = (await asyncio.wait_for(asked, 30)).supervision_id
        await _talk(voice, contact_id, 75)
        await stub.SetSupervisionMode(
            voice_pb2.SetSupervisionModeRequest(
                supervision_id=supervision_id, mode=events_pb2.SUPERVISION_MODE_BARGE
            )
        )
        await _talk(voice, contact_id, 75)
    finally:
        await chan.close()
    await sup.command("hangup")
    await voice.events.wait(
        "ContactSupervised",
        contact_id,
        where=lambda e: e.action == events_pb2.SUPERVISION_ACTION_STOPPED,
    )
    await _talk(voice, contact_id, 25)
    caller = next(p for p in voice.phones if p.folder.name == "caller-demo")
    await caller.command("hangup")
    await voice.events.wait("ContactEnded", contact_id)
    await voice.events.wait(
        "MessageAdded", where=lambda e: e.message.contact_id == contact_id, timeout=30
    )
    store = voice.gateway.recordings
    assert store is not None
    left, right = _channels(await store.fetch("demo", contact_id))
    loud = 500.0
    in_left = [_level(f, SUPERVISOR_HZ) > loud for f in _frames(left)]
    in_right = [_level(f, SUPERVISOR_HZ) > loud for f in _frames(right)]
    # Whispering: a second or more in the agent's channel only, before any in the caller's.
    first_left = in_left.index(True)
    assert sum(in_right[:first_left]) >= 10, (in_left, in_right)
    # Barging: in both (a 100 ms frame at a switch may hold a little of either side).
    both = [i for i, (a, b) in enumerate(zip(in_left, in_right, strict=True)) if a and b]
    assert len(both) >= 10, (in_left, in_right)
    assert sum(a and not b for a, b in zip(in_left, in_right, strict=True)) <= 2
    # The parties stay on their own channels throughout.
    assert max(_level(f, CALLER_HZ) for f in _frames(right)) < loud
    assert max(_level(f, AGENT_HZ) for f in _frames(left)) < loud
