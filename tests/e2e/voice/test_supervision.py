"""Call supervision with three real baresip phones (caller, agent, supervisor), each sending its
own tone: what each phone heard (baresip writes it to a WAV file as it plays) is checked for the
others' tones. Monitor: the supervisor hears both parties, neither hears the supervisor;
whisper: only the agent hears the supervisor; barge: both do; the mode changes by RPC and by
the supervisor's keys without redialling; another tenant's supervisor is refused."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import events_pb2, voice_pb2, voice_pb2_grpc

from .conftest import SECRET, Baresip, Voice, raw_phone

DEMO_LINE = "+15550100"
CALLER_HZ = 440  # the caller's phone (Voice.caller)
AGENT_HZ = 1000
SUPERVISOR_HZ = 1700
SECOND_HZ = 2500  # a second supervisor on the same call (clear of the others' mixing products)
LOUD = 500.0  # baresip's ausine is far louder; silence and leakage far below
FRAME = 800  # 100 ms at 8 kHz
MONITOR = events_pb2.SUPERVISION_MODE_MONITOR
WHISPER = events_pb2.SUPERVISION_MODE_WHISPER
BARGE = events_pb2.SUPERVISION_MODE_BARGE
STARTED = events_pb2.SUPERVISION_ACTION_STARTED
STOPPED = events_pb2.SUPERVISION_ACTION_STOPPED


@pytest.fixture
def gateway_config() -> dict[str, Any]:
    return {
        "realm": "switchboard",
        "phones": {
            "demo": {"a1": "pw-a1", "a2": "pw-a2", "sup1": "pw-sup1", "sup3": "pw-sup3"},
            "acme": {"sup2": "pw-sup2"},
        },
        "supervision": {
            "extension": "*55",
            "supervisors": {"demo": ["sup1", "sup3"], "acme": ["sup2"]},
        },
        "numbers": {DEMO_LINE: {"tenant": "demo", "queue": "general", "language": "en"}},
    }


Stubs = Callable[..., voice_pb2_grpc.VoiceServiceStub]


@pytest.fixture
async def stubs(voice: Voice) -> AsyncIterator[Stubs]:
    """`stubs(tenant, subject, *roles)`: a VoiceService client with a token of its own (a
    supervisor unless `roles` say otherwise)."""
    channels: list[grpc.aio.Channel] = []

    def make(tenant: str, subject: str, *roles: str) -> voice_pb2_grpc.VoiceServiceStub:
        token = auth.mint(SECRET, tenant, subject, roles or ("supervisor",))
        chan = sb_grpc.channel(f"127.0.0.1:{voice.gateway.grpc_port}", token, default_timeout=30)
        channels.append(chan)
        return voice_pb2_grpc.VoiceServiceStub(chan)

    yield make
    for chan in channels:
        await chan.close()


@pytest.fixture
async def call(voice: Voice) -> AsyncIterator[tuple[Baresip, Baresip, str]]:
    """A caller connected to agent a1: (caller's phone, agent's phone, contact id). Every
    phone writes what it hears (baresip's sndfile module: *-dec.wav in its folder)."""
    voice.baresip_extra = ["module sndfile.so", "snd_path {folder}"]
    yield await voice.answered_call(DEMO_LINE, AGENT_HZ)


async def _supervise(
    voice: Voice, stub: voice_pb2_grpc.VoiceServiceStub, phone: Baresip, contact_id: str, mode: int
) -> str:
    """Ask for supervision; the supervisor's phone rings and is answered."""
    asked = asyncio.ensure_future(
        stub.Supervise(voice_pb2.SuperviseRequest(contact_id=contact_id, mode=mode))  # type: ignore[arg-type]
    )
    await phone.wait_event("CALL_INCOMING", timeout=20)
    await phone.command("accept")
    resp = await asyncio.wait_for(asked, 30)
    assert resp.mode == mode
    return str(resp.supervision_id)


def _wav(phone: Baresip) -> Path | None:
    """The WAV file of what the phone decoded from the gateway (its one call)."""
    found = sorted(phone.folder.glob("*-dec.wav"))
    return found[0] if found else None


def _format(path: Path) -> tuple[int, int, int]:
    """(channels, rate, where the samples start) of a WAV file being written."""
    head = path.read_bytes()[:1024]
    fmt = head.index(b"fmt ") + 8
    channels, rate = struct.unpack_from("<HI", head, fmt + 2)
    return channels, rate, head.index(b"data") + 8


def _mark(phone: Baresip) -> int:
    path = _wav(phone)
    return path.stat().st_size if path is not None else 0


def _level(samples: np.ndarray, hz: int, rate: int) -> float:
    """The amplitude of the `hz` component of `samples` (a DFT bin)."""
    t = np.arange(len(samples)) / rate
    return float(abs(np.dot(samples, np.exp(-2j * np.pi * hz * t))) * 2 / len(samples))


async def _heard(phones: list[Baresip], seconds: float = 1.5) -> list[dict[int, list[float]]]:
    """What each phone hears from now on for `seconds` (after the audio in flight settles):
    for each phone, each tone's level in every 100 ms of it."""
    await asyncio.sleep(0.6)  # jitter buffers and the mix's buffer drain what came before
    for _ in range(200):
        if all(_wav(p) is not None and _mark(p) > 1024 for p in phones):
            break
        await asyncio.sleep(0.05)
    marks = [_mark(p) for p in phones]
    files = [_wav(p) for p in phones]
    assert all(f is not None for f in files), "a phone wrote nothing of what it heard"
    formats = [_format(f) for f in files if f is not None]
    need = [int(seconds * rate) * 2 * channels for channels, rate, _ in formats]
    grown: list[int] = []
    for _ in range(400):
        grown = [_mark(p) - m for p, m in zip(phones, marks, strict=True)]
        if all(g >= n for g, n in zip(grown, need, strict=True)):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the phones stopped hearing anything: {grown} of {need}")
    out = []
    for path, mark, (channels, rate, start), size in zip(files, marks, formats, need, strict=True):
        assert path is not None
        with path.open("rb") as f:
            f.seek(mark - (mark - start) % (2 * channels))
            data = f.read(size)
        samples = np.frombuffer(data, dtype="<i2").astype(float)[::channels]
        frame = rate // 10
        frames = [samples[i : i + frame] for i in range(0, len(samples) - frame + 1, frame)]
        tones = (CALLER_HZ, AGENT_HZ, SUPERVISOR_HZ, SECOND_HZ)
        out.append({hz: [_level(s, hz, rate) for s in frames] for hz in tones})
    return out


def hears(levels: dict[int, list[float]], hz: int) -> bool:
    """The tone is there nearly all along (on a loaded machine a packet may come too late for
    its place in a mix: a short gap)."""
    frames = levels[hz]
    return sum(level > LOUD for level in frames) >= 0.8 * len(frames)


def never_hears(levels: dict[int, list[float]], hz: int) -> bool:
    return max(levels[hz]) < LOUD / 10


async def test_monitor_the_supervisor_hears_both_and_is_heard_by_neither(
    voice: Voice, call: tuple[Baresip, Baresip, str], stubs: Stubs
) -> None:
    caller, agent, contact_id = call
    sup = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    stub = stubs("demo", "sup1")
    supervision_id = await _supervise(voice, stub, sup, contact_id, MONITOR)

    heard_caller, heard_agent, heard_sup = await _heard([caller, agent, sup])
    assert hears(heard_sup, CALLER_HZ) and hears(heard_sup, AGENT_HZ), heard_sup
    assert hears(heard_caller, AGENT_HZ) and never_hears(heard_caller, SUPERVISOR_HZ), heard_caller
    assert hears(heard_agent, CALLER_HZ) and never_hears(heard_agent, SUPERVISOR_HZ), heard_agent

    joined = await voice.events.wait("ContactSupervised", contact_id)
    assert joined[0].supervisor_id == "sup1" and joined[0].action == STARTED
    assert joined[0].agent_id == "a1" and joined[0].mode == MONITOR
    assert joined[0].supervision_id == supervision_id

    # The supervisor leaves by RPC: its phone is hung up, the call goes on.
    await stub.EndSupervision(voice_pb2.EndSupervisionRequest(supervision_id=supervision_id))
    await sup.wait_event("CALL_CLOSED")
    left = await voice.events.wait("ContactSupervised", contact_id, count=2)
    assert left[1].action == STOPPED
    await voice.relayed_both_ways(contact_id, 10)
    assert caller.count("CALL_CLOSED") == 0 and agent.count("CALL_CLOSED") == 0


async def test_whisper_only_the_agent_hears_the_supervisor(
    voice: Voice, call: tuple[Baresip, Baresip, str], stubs: Stubs
) -> None:
    caller, agent, contact_id = call
    sup = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    await _supervise(voice, stubs("demo", "sup1"), sup, contact_id, WHISPER)

    heard_caller, heard_agent, heard_sup = await _heard([caller, agent, sup])
    assert hears(heard_sup, CALLER_HZ) and hears(heard_sup, AGENT_HZ), heard_sup
    assert hears(heard_agent, CALLER_HZ) and hears(heard_agent, SUPERVISOR_HZ), heard_agent
    assert hears(heard_caller, AGENT_HZ) and never_hears(heard_caller, SUPERVISOR_HZ), heard_caller

    # The call ends: the supervisor's phone is hung up with it.
    await caller.command("hangup")
    await voice.events.wait("ContactEnded", contact_id)
    await sup.wait_event("CALL_CLOSED")


async def test_barge_both_parties_hear_the_supervisor(
    voice: Voice, call: tuple[Baresip, Baresip, str], stubs: Stubs
) -> None:
    caller, agent, contact_id = call
    sup = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    await _supervise(voice, stubs("demo", "sup1"), sup, contact_id, BARGE)

    heard_caller, heard_agent, heard_sup = await _heard([caller, agent, sup])
    assert hears(heard_sup, CALLER_HZ) and hears(heard_sup, AGENT_HZ), heard_sup
    assert hears(heard_agent, CALLER_HZ) and hears(heard_agent, SUPERVISOR_HZ), heard_agent
    assert hears(heard_caller, AGENT_HZ) and hears(heard_caller, SUPERVISOR_HZ), heard_caller

    # The supervisor hangs up: both legs go back to the plain relay and hear no supervisor.
    await sup.command("hangup")
    await voice.events.wait("ContactSupervised", contact_id, where=lambda e: e.action == STOPPED)
    gw_call = voice.gateway.gateway.calls[contact_id]  # type: ignore[union-attr]
    assert gw_call.caller is not None and gw_call.agent is not None
    assert gw_call.caller.rtp.mixer is None and gw_call.agent.rtp.mixer is None
    assert not gw_call.supervisors
    heard_caller, heard_agent = await _heard([caller, agent])
    assert hears(heard_caller, AGENT_HZ) and never_hears(heard_caller, SUPERVISOR_HZ)
    assert hears(heard_agent, CALLER_HZ) and never_hears(heard_agent, SUPERVISOR_HZ)


async def test_the_mode_changes_by_rpc_and_by_keys_without_redialling(
    voice: Voice, call: tuple[Baresip, Baresip, str], stubs: Stubs
) -> None:
    caller, agent, contact_id = call
    sup = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    stub = stubs("demo", "sup1")
    supervision_id = await _supervise(voice, stub, sup, contact_id, MONITOR)
    heard_caller, heard_agent, _ = await _heard([caller, agent, sup], 1.0)
    assert never_hears(heard_caller, SUPERVISOR_HZ) and never_hears(heard_agent, SUPERVISOR_HZ)

    changed = await stub.SetSupervisionMode(
        voice_pb2.SetSupervisionModeRequest(supervision_id=supervision_id, mode=WHISPER)
    )
    assert changed.mode == WHISPER
    heard_caller, heard_agent, _ = await _heard([caller, agent, sup], 1.0)
    assert hears(heard_agent, SUPERVISOR_HZ), heard_agent
    assert never_hears(heard_caller, SUPERVISOR_HZ), heard_caller

    await sup.command("sndcode", "6")  # barge, from the supervisor's keypad
    await voice.events.wait(
        "ContactSupervised", contact_id, where=lambda e: e.mode == BARGE and e.changed_by == "dtmf"
    )
    heard_caller, heard_agent, _ = await _heard([caller, agent, sup], 1.0)
    assert hears(heard_agent, SUPERVISOR_HZ) and hears(heard_caller, SUPERVISOR_HZ)

    await sup.command("sndcode", "4")  # back to listening only
    await voice.events.wait(
        "ContactSupervised",
        contact_id,
        where=lambda e: e.mode == MONITOR and e.changed_by == "dtmf",
    )
    heard_caller, heard_agent, heard_sup = await _heard([caller, agent, sup], 1.0)
    assert never_hears(heard_caller, SUPERVISOR_HZ) and never_hears(heard_agent, SUPERVISOR_HZ)
    assert hears(heard_sup, CALLER_HZ) and hears(heard_sup, AGENT_HZ)
    # One call to the supervisor's phone all along.
    assert sup.count("CALL_INCOMING") == 1 and sup.count("CALL_CLOSED") == 0
    modes = [e.mode for e in voice.events.of("ContactSupervised", contact_id)]
    assert modes == [MONITOR, WHISPER, BARGE, MONITOR]


async def test_a_supervisor_of_another_tenant_or_an_agent_is_refused(
    voice: Voice, call: tuple[Baresip, Baresip, str], stubs: Stubs
) -> None:
    _caller, _agent, contact_id = call
    other = await voice.phone("sup2", tone_hz=SUPERVISOR_HZ, tenant="acme", password="pw-sup2")
    request = voice_pb2.SuperviseRequest(contact_id=contact_id, mode=MONITOR)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs("acme", "sup2").Supervise(request)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs("demo", "a1", "agent").Supervise(request)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert other.count("CALL_INCOMING") == 0
    assert not voice.events.of("ContactSupervised", contact_id)


async def test_two_supervisors_hear_each_other_and_the_parties_hear_only_whom_their_mode_lets(
    voice: Voice, call: tuple[Baresip, Baresip, str], stubs: Stubs
) -> None:
    """Four phones: sup1 monitors, sup3 barges, then whispers, then leaves. The supervisors
    always hear each other (and both parties); the caller hears only a barging supervisor, the
    agent a whispering or barging one."""
    caller, agent, contact_id = call
    sup1 = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    sup3 = await voice.phone("sup3", tone_hz=SECOND_HZ, tenant="demo", password="pw-sup3")
    await _supervise(voice, stubs("demo", "sup1"), sup1, contact_id, MONITOR)
    stub3 = stubs("demo", "sup3")
    second = await _supervise(voice, stub3, sup3, contact_id, BARGE)

    heard_caller, heard_agent, heard_1, heard_3 = await _heard([caller, agent, sup1, sup3])
    assert hears(heard_1, CALLER_HZ) and hears(heard_1, AGENT_HZ), heard_1
    assert hears(heard_1, SECOND_HZ), heard_1  # the monitoring one hears the barging one
    assert hears(heard_3, CALLER_HZ) and hears(heard_3, AGENT_HZ), heard_3
    assert hears(heard_3, SUPERVISOR_HZ), heard_3  # ... and the barging one the monitoring one
    assert hears(heard_caller, AGENT_HZ) and hears(heard_caller, SECOND_HZ), heard_caller
    assert never_hears(heard_caller, SUPERVISOR_HZ), heard_caller
    assert hears(heard_agent, CALLER_HZ) and hears(heard_agent, SECOND_HZ), heard_agent
    assert never_hears(heard_agent, SUPERVISOR_HZ), heard_agent

    await stub3.SetSupervisionMode(
        voice_pb2.SetSupervisionModeRequest(supervision_id=second, mode=WHISPER)
    )
    heard_caller, heard_agent, heard_1, heard_3 = await _heard([caller, agent, sup1, sup3])
    assert hears(heard_1, SECOND_HZ) and hears(heard_3, SUPERVISOR_HZ), (heard_1, heard_3)
    assert hears(heard_agent, SECOND_HZ) and never_hears(heard_agent, SUPERVISOR_HZ), heard_agent
    assert never_hears(heard_caller, SECOND_HZ), heard_caller
    assert never_hears(heard_caller, SUPERVISOR_HZ), heard_caller

    # The second supervisor hangs up: the first hears the two parties and nobody else.
    await sup3.command("hangup")
    await voice.events.wait(
        "ContactSupervised",
        contact_id,
        where=lambda e: e.supervisor_id == "sup3" and e.action == STOPPED,
    )
    heard_caller, heard_agent, heard_1 = await _heard([caller, agent, sup1])
    assert hears(heard_1, CALLER_HZ) and hears(heard_1, AGENT_HZ), heard_1
    assert never_hears(heard_1, SECOND_HZ), heard_1
    assert never_hears(heard_agent, SECOND_HZ) and never_hears(heard_caller, SECOND_HZ)


async def test_a_supervisor_dials_the_supervision_extension_and_switches_modes_by_keys(
    voice: Voice, call: tuple[Baresip, Baresip, str]
) -> None:
    """sup1 dials *55a1 from its own registered phone: the gateway challenges the INVITE
    (digest, the phone's REGISTER credentials), answers and joins it to a1's call in monitor;
    then its keys switch modes as on a supervision the gateway rang; each act is audited."""
    caller, agent, contact_id = call
    sup = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    await sup.command("dial", f"sip:*55a1@127.0.0.1:{voice.sip_port}")
    await sup.wait_event("CALL_ESTABLISHED", timeout=20)
    joined = await voice.events.wait("ContactSupervised", contact_id)
    assert joined[0].supervisor_id == "sup1" and joined[0].action == STARTED
    assert joined[0].agent_id == "a1" and joined[0].mode == MONITOR
    assert joined[0].changed_by == "dial"

    heard_caller, heard_agent, heard_sup = await _heard([caller, agent, sup])
    assert hears(heard_sup, CALLER_HZ) and hears(heard_sup, AGENT_HZ), heard_sup
    assert never_hears(heard_caller, SUPERVISOR_HZ) and never_hears(heard_agent, SUPERVISOR_HZ)

    await sup.command("sndcode", "6")  # barge
    await voice.events.wait(
        "ContactSupervised", contact_id, where=lambda e: e.mode == BARGE and e.changed_by == "dtmf"
    )
    heard_caller, heard_agent, _ = await _heard([caller, agent, sup], 1.0)
    assert hears(heard_agent, SUPERVISOR_HZ) and hears(heard_caller, SUPERVISOR_HZ)

    await sup.command("hangup")
    left = await voice.events.wait(
        "ContactSupervised", contact_id, where=lambda e: e.action == STOPPED
    )
    assert left[0].supervision_id == joined[0].supervision_id
    gw_call = voice.gateway.gateway.calls[contact_id]  # type: ignore[union-attr]
    assert not gw_call.supervisors
    assert caller.count("CALL_CLOSED") == 0 and agent.count("CALL_CLOSED") == 0


async def _dial_refused(voice: Voice, phone: Baresip, target: str) -> str:
    """Dial `target` from `phone`: the call is refused; the reason baresip reports."""
    await phone.command("dial", f"sip:{target}@127.0.0.1:{voice.sip_port}")
    closed = await phone.wait_event("CALL_CLOSED", timeout=20)
    assert phone.count("CALL_ESTABLISHED") == 0
    return str(closed.get("param", ""))


async def test_the_supervision_extension_refuses_who_may_not_supervise(
    voice: Voice, call: tuple[Baresip, Baresip, str]
) -> None:
    _caller, _agent, contact_id = call
    # An agent's phone (registered, right password) is no supervisor: 403.
    other_agent = await voice.phone("a2", tenant="demo", password="pw-a2")
    assert "403" in await _dial_refused(voice, other_agent, "*55a1")
    # A supervisor of another tenant: that tenant has no such agent on a call, 404.
    acme = await voice.phone("sup2", tone_hz=SUPERVISOR_HZ, tenant="acme", password="pw-sup2")
    assert "404" in await _dial_refused(voice, acme, "*55a1")
    # A supervisor dialling an agent who is on no call: 404.
    sup = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    assert "404" in await _dial_refused(voice, sup, "*55nobody")
    assert not voice.events.of("ContactSupervised", contact_id)
    gw = voice.gateway.gateway
    assert gw is not None and not gw.calls[contact_id].supervisors


async def test_the_supervision_extension_needs_the_phones_digest_credentials(
    voice: Voice, call: tuple[Baresip, Baresip, str]
) -> None:
    """An INVITE to the extension without credentials is challenged (401); with a wrong
    password it is refused (403): a supervisor's user name alone joins nobody."""
    _caller, _agent, contact_id = call
    phone = await raw_phone("sup1", "wrong", username="sup1@demo")
    try:
        port = voice.sip_port
        challenge = await phone.send_invite(port, "*55a1", 1)
        assert challenge.status == 401 and "Digest" in challenge.get("WWW-Authenticate")
        refused = await phone.send_invite(
            port,
            "*55a1",
            2,
            phone.authorization(challenge, port, method="INVITE", uri_user="*55a1"),
        )
        assert refused.status == 403
    finally:
        assert phone.transport is not None
        phone.transport.close()
    assert not voice.events.of("ContactSupervised", contact_id)
