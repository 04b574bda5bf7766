"""Spoken prompts on real calls: a caller on a raw SIP/RTP socket records what the gateway sends
it, decodes the G.711 and finds speech (broadband energy that comes and goes between words, not
a tone) where the Korean menu plays, and the queue position spoken as words."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchboard.voice_gateway.media import catalogue
from switchboard.voice_gateway.media.g711 import PCMA, PCMU, encode
from switchboard.voice_gateway.media.prompts import synthesise
from switchboard.voice_gateway.media.speech import SPEED

from .conftest import TEST_CONFIG, UdpEndpoint
from .test_cancel import RawUa, message, raw_ua, to_tag

KOREAN = "+8215880009"
QUEUE_LINE = "+8215880010"

FRAME = 160  # 20 ms at 8 kHz


@pytest.fixture
def gateway_config() -> dict[str, Any]:
    numbers = dict(TEST_CONFIG["numbers"])
    numbers[KOREAN] = {
        "tenant": "demo",
        "queue": "general",
        "language": "ko",
        "topic_menu": {"prompt": "topic-menu", "options": {"1": "billing", "2": "technical"}},
        "menu_timeout": "20s",
    }
    # No menus: the caller is queued after the welcome and hears the announcement soon.
    numbers[QUEUE_LINE] = {
        "tenant": "demo",
        "queue": "general",
        "language": "ko",
        "announce_every": "60s",
    }
    return {**TEST_CONFIG, "numbers": numbers}


class RtpSink(UdpEndpoint):
    """The caller's RTP socket: every packet's payload type and payload, in arrival order."""

    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []
        self.arrived = asyncio.Event()
        super().__init__()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        cc = data[0] & 0x0F
        self.packets.append((data[1] & 0x7F, data[12 + 4 * cc :]))
        self.arrived.set()

    def audio(self, payload_type: int) -> bytes:
        return b"".join(p for pt, p in self.packets if pt == payload_type)

    async def wait_bytes(self, payload_type: int, n: int, timeout: float = 30.0) -> bytes:
        async with asyncio.timeout(timeout):
            while len(self.audio(payload_type)) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.audio(payload_type)


@dataclass
class RawCaller:
    ua: RawUa
    rtp: RtpSink
    number: str
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tag: str = ""

    async def dial(self, port: int, payload_type: int = PCMU) -> None:
        sdp = (
            "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.rtp.port} RTP/AVP {payload_type} 101\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
        )
        branch = "z9hG4bK" + uuid.uuid4().hex[:12]
        self.ua.send(
            message(self.ua, port, "INVITE", self.number, self.call_id, branch, body=sdp), port
        )
        self.tag = to_tag(await self.ua.expect("INVITE", 200))
        ack = message(
            self.ua, port, "ACK", self.number, self.call_id, "z9hG4bKack1", "1 ACK", self.tag
        )
        self.ua.send(ack, port)

    async def hang_up(self, port: int) -> None:
        bye = message(
            self.ua, port, "BYE", self.number, self.call_id, "z9hG4bKbye1", "2 BYE", self.tag
        )
        self.ua.send(bye, port)
        await self.ua.expect("BYE", 200)


async def raw_caller(number: str) -> RawCaller:
    _, rtp = await asyncio.get_running_loop().create_datagram_endpoint(
        RtpSink, local_addr=("127.0.0.1", 0)
    )
    return RawCaller(await raw_ua(), rtp, number)


# ---- decoding and measuring audio ------------------------------------------------------------


def decode(g711: bytes, payload_type: int) -> np.ndarray:
    """G.711 (ITU-T G.711 decoding, written out here apart from the gateway's encoder)."""
    b = np.frombuffer(g711, dtype=np.uint8).astype(np.int32)
    if payload_type == PCMU:
        u = ~b & 0xFF
        exp, mant = (u >> 4) & 7, u & 0x0F
        mag = (((mant << 3) + 0x84) << exp) - 0x84
        return np.where(u & 0x80, -mag, mag).astype(np.float64)
    a = b ^ 0x55
    exp, mant = (a >> 4) & 7, a & 0x0F
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.float64)


def envelope(x: np.ndarray, frame: int) -> np.ndarray:
    n = len(x) // frame
    return np.asarray((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1))


BANDS = [(300, 600), (600, 1000), (1000, 1500), (1500, 2100), (2100, 2800), (2800, 3400)]


@dataclass
class Measure:
    voiced: float  # share of 20 ms frames with speech energy
    pauses: int  # quiet gaps (>= 40 ms) between voiced stretches
    bands: int  # of the six 300-3400 Hz bands, those with at least 1 % of the energy
    flatness: float  # median spectral flatness of voiced frames in 300-3400 Hz (tone ~ 0)


def measure(x: np.ndarray) -> Measure:
    energy = envelope(x, FRAME)
    loud = np.sort(energy)[int(len(energy) * 0.8) :].mean()
    voiced = energy > 0.02 * loud
    pauses, run, seen_voice = 0, 0, False
    for e in energy / loud:
        if e < 0.03:  # quiet between words
            run += 1
            continue
        if e > 0.1:
            if seen_voice and run >= 2:
                pauses += 1
            seen_voice = True
        run = 0
    freqs = np.fft.rfftfreq(256, 1 / 8000)
    in_band = (freqs >= 300) & (freqs <= 3400)
    window = np.hanning(FRAME)
    total = np.zeros(len(freqs))
    flatness = []
    for i in np.flatnonzero(voiced):
        power = np.abs(np.fft.rfft(x[i * FRAME : (i + 1) * FRAME] * window, 256)) ** 2 + 1e-9
        total += power
        p = power[in_band]
        flatness.append(np.exp(np.log(p).mean()) / p.mean())
    share = [total[(freqs >= lo) & (freqs < hi)].sum() / total[in_band].sum() for lo, hi in BANDS]
    return Measure(
        voiced=float(voiced.mean()),
        pauses=pauses,
        bands=sum(1 for s in share if s >= 0.01),
        flatness=float(np.median(flatness)) if flatness else 0.0,
    )


def speech_like(m: Measure) -> bool:
    return m.voiced > 0.3 and m.pauses >= 2 and m.bands >= 4 and m.flatness > 0.002


def espeak_envelope(voice: str, text: str, tmp: Path) -> np.ndarray:
    """The 20 ms energy envelope of espeak-ng reading `text` (its own 22 050 Hz output)."""
    out = tmp / "reference.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(SPEED), "-w", str(out), "--", text], check=True
    )
    with wave.open(str(out), "rb") as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    return envelope(x, rate // 50)


def from_first_sound(env: np.ndarray) -> np.ndarray:
    start = int(np.argmax(env > 0.02 * env.max()))
    return env[start:]


def test_the_measure_tells_a_tone_from_speech() -> None:
    """The old beeps and DTMF digits, through G.711 as a caller would hear them, fail the speech
    test (so passing it means something)."""
    pcm = synthesise(
        [((697.0, 1209.0), 0.15), (0, 0.1)] * 4
        + [(440.0, 0.2), (0, 0.1), (550.0, 0.2), (0, 0.1), (660.0, 0.2), (0, 0.3)]
    )
    for payload_type in (PCMU, PCMA):
        tones = decode(encode(pcm, payload_type), payload_type)
        m = measure(tones)
        assert m.pauses >= 2  # the gaps are there; the spectrum gives a tone away
        assert not speech_like(m), m


# ---- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("payload_type", [PCMU, PCMA])
async def test_the_korean_menu_is_speech_where_it_plays(
    voice: Any, tmp_path: Path, payload_type: int
) -> None:
    gw = voice.gateway.gateway
    prompts = voice.gateway.prompts
    plan = gw.config.plan_for(KOREAN)
    welcome = len(prompts.get("welcome", payload_type, "ko"))
    menu = len(prompts.menu(plan.topic_menu, payload_type, "ko"))
    caller = await raw_caller(KOREAN)
    await caller.dial(voice.sip_port, payload_type)
    # The welcome (padded to whole 20 ms frames), then the menu.
    menu_at = -(-welcome // FRAME) * FRAME
    heard = await caller.rtp.wait_bytes(payload_type, menu_at + menu)
    await caller.hang_up(voice.sip_port)

    pcm = decode(heard, payload_type)
    spoken = pcm[menu_at : menu_at + menu]
    m = measure(spoken)
    assert speech_like(m), m
    # The welcome before it is speech too, and quieter frames separate the two.
    assert speech_like(measure(pcm[:welcome])), measure(pcm[:welcome])

    # Energy in the right places: the menu's loudness over time follows espeak-ng reading the
    # Korean menu text by itself.
    reference = from_first_sound(
        espeak_envelope("ko", catalogue.text("ko", "topic-menu") or "", tmp_path)
    )
    got = from_first_sound(envelope(spoken, FRAME))
    n = min(len(reference), len(got))
    assert n > 50, (len(reference), len(got))  # more than a second of speech
    r = np.corrcoef(np.log10(reference[:n] + 1), np.log10(got[:n] + 1))[0, 1]
    assert r > 0.8, r


async def test_the_third_caller_hears_number_three_spoken(voice: Any) -> None:
    prompts = voice.gateway.prompts
    callers = []
    for _ in range(3):
        caller = await raw_caller(QUEUE_LINE)
        await caller.dial(voice.sip_port)
        callers.append(caller)
        await voice.events.wait("ContactQueued", count=len(callers))
    third = callers[2]

    def fragments(n: int) -> bytes:
        return prompts.sequence(["position", f"n{n}", "position-end"], PCMU, "ko")

    expected = fragments(3)
    async with asyncio.timeout(30):
        while expected not in third.rtp.audio(PCMU):
            third.rtp.arrived.clear()
            await third.rtp.arrived.wait()
    heard = third.rtp.audio(PCMU)
    start = heard.index(expected)
    # "고객님의 대기 순서는 / 삼 / 번입니다": as long as the three synthesised fragments, and
    # the words, not digit tones, for three.
    durations = [len(prompts.pcm(n, "ko")) / 2 / 8000 for n in ("position", "n3", "position-end")]
    assert len(expected) / 8000 == pytest.approx(sum(durations))
    assert 1.0 < sum(durations) < 8.0, durations
    segment = decode(heard[start : start + len(expected)], PCMU)
    m = measure(segment)
    assert m.voiced > 0.3 and m.bands >= 4 and m.flatness > 0.002, m
    # Before the position comes "please hold" (after the music on hold), and nobody else's
    # position is announced to this caller.
    please_hold = prompts.get("please-hold", PCMU, "ko")
    assert heard[start - len(please_hold) : start] == please_hold
    for other in (1, 2, 4, 30):
        assert fragments(other) not in heard
    for caller in callers:
        await caller.hang_up(voice.sip_port)
