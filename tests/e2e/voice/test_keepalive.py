"""OPTIONS keepalives to registered phones: a phone that stops answering is unregistered after
two missed pings, so the router's offer rings an agent whose phone is alive."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from typing import Any

import pytest

from switchboard.voice_gateway.sip.message import SipMessage, parse_datagram

PING_SECONDS = 0.7


@pytest.fixture
def gateway_settings() -> dict[str, Any]:
    return {"VOICE_OPTIONS_PING_SECONDS": PING_SECONDS}


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class RawPhone(asyncio.DatagramProtocol):
    """An agent's phone on a bare UDP socket: REGISTERs with digest, answers OPTIONS while
    `answering`, and records every request the gateway sends it."""

    def __init__(self, agent_id: str, password: str) -> None:
        self.agent_id = agent_id
        self.password = password
        self.answering = True
        self.requests: list[SipMessage] = []
        self.responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.pinged = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_datagram(data)
        if not msg.is_request:
            self.responses.put_nowait(msg)
            return
        self.requests.append(msg)
        if msg.method == "OPTIONS":
            self.pinged.set()
        if self.answering and self.transport is not None:
            self.transport.sendto(msg.response(200, "OK", "phone").encode(), addr)

    def options(self) -> list[SipMessage]:
        # Distinct transactions (UDP retransmissions share a branch).
        seen: dict[str, SipMessage] = {}
        for m in self.requests:
            if m.method == "OPTIONS":
                seen.setdefault(m.top_via.branch, m)
        return list(seen.values())

    def _register(self, gw_port: int, cseq: int, auth: str = "") -> bytes:
        uri = f"sip:127.0.0.1:{gw_port}"
        lines = [
            f"REGISTER {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.agent_id}@127.0.0.1>;tag=reg",
            f"To: <sip:{self.agent_id}@127.0.0.1>",
            "Call-ID: reg-" + self.agent_id,
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{self.agent_id}@127.0.0.1:{self.port}>",
            "Expires: 600",
        ]
        if auth:
            lines.append(auth)
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    async def register(self, gw_port: int) -> None:
        assert self.transport is not None
        addr = ("127.0.0.1", gw_port)
        self.transport.sendto(self._register(gw_port, 1), addr)
        challenge = await asyncio.wait_for(self.responses.get(), 5)
        assert challenge.status == 401
        params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge.get("WWW-Authenticate")))
        realm, nonce, uri = params["realm"], params["nonce"], f"sip:127.0.0.1:{gw_port}"
        ha1 = md5(f"{self.agent_id}:{realm}:{self.password}")
        ha2 = md5(f"REGISTER:{uri}")
        response = md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}")
        auth = (
            f'Authorization: Digest username="{self.agent_id}", realm="{realm}", '
            f'nonce="{nonce}", uri="{uri}", response="{response}", algorithm=MD5, '
            'qop=auth, nc=00000001, cnonce="c0ffee"'
        )
        self.transport.sendto(self._register(gw_port, 2, auth), addr)
        ok = await asyncio.wait_for(self.responses.get(), 5)
        assert ok.status == 200, ok.status


async def test_a_phone_that_stops_answering_is_unregistered_and_offers_go_elsewhere(
    voice: Any,
) -> None:
    gw = voice.gateway.gateway
    _, dead = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: RawPhone("agent-ko", "pw-ko"), local_addr=("127.0.0.1", 0)
    )
    await dead.register(voice.sip_port)
    binding = gw.registrar.lookup("agent-ko")
    assert binding is not None and binding.contact.endswith(f":{dead.port}")
    alive = await voice.phone("agent-ko2")  # baresip answers OPTIONS itself

    # While it answers, the phone is pinged and stays registered.
    await asyncio.wait_for(dead.pinged.wait(), PING_SECONDS * 10)
    ping = dead.options()[0]
    assert ping.uri == binding.contact and ping.cseq == (1, "OPTIONS")
    for _ in range(100):
        if len(dead.options()) >= 2:
            break
        await asyncio.sleep(0.05)
    assert gw.registrar.lookup("agent-ko") is binding and binding.missed_pings == 0

    # It goes silent: after two unanswered pings in a row it is unregistered.
    dead.answering = False
    answered = len(dead.options())
    for _ in range(300):
        if gw.registrar.lookup("agent-ko") is None:
            break
        await asyncio.sleep(0.05)
    assert gw.registrar.lookup("agent-ko") is None
    assert len(dead.options()) - answered >= 2 and binding.missed_pings == 2
    # baresip kept answering and is still registered.
    alive_binding = gw.registrar.lookup("agent-ko2")
    assert alive_binding is not None and alive_binding.missed_pings == 0

    # Both agents are signed in; the call reaches the agent whose phone is alive, and the
    # dead phone is never rung.
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 5})
    await voice.agent("agent-ko2", {"ko": 5}, {"billing": 3})
    caller, contact_id = await voice.dial_korean_billing("caller", "+821012345678")
    await alive.wait_event("CALL_INCOMING")
    await alive.command("accept")
    assigned = (await voice.events.wait("ContactAssigned", contact_id, timeout=30))[0]
    assert assigned.agent_id == "agent-ko2"
    await voice.relayed_both_ways(contact_id, packets=5)
    assert not [m for m in dead.requests if m.method == "INVITE"]
    assert caller.count("CALL_CLOSED") == 0
