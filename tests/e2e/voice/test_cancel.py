"""CANCEL races (RFC 3261 section 9.2) from a raw UDP socket: a CANCEL of a pending INVITE gets
200 and the INVITE 487 (whose ACK the transaction absorbs); a CANCEL that crosses the 200 is
harmless and the call goes on."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from switchboard.voice_gateway.sip.message import SipMessage, parse_datagram

from .conftest import UdpEndpoint

SDP = (
    "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


class RawUa(UdpEndpoint):
    """A bare UDP SIP endpoint: every message it receives lands in `inbox`."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
        super().__init__()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait(parse_datagram(data))

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))

    async def expect(self, cseq_method: str, status: int, timeout: float = 5.0) -> SipMessage:
        """The next response for `cseq_method` with `status` (others for it are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if msg.cseq[1] == cseq_method and msg.status == status:
                    return msg


async def raw_ua() -> RawUa:
    _, ua = await asyncio.get_running_loop().create_datagram_endpoint(
        RawUa, local_addr=("127.0.0.1", 0)
    )
    return ua


def message(
    ua: RawUa,
    port: int,
    method: str,
    number: str,
    call_id: str,
    branch: str,
    cseq: str = "",
    to_tag: str = "",
    body: str = "",
) -> bytes:
    to = f"<sip:{number}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:{number}@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch={branch};rport",
        "Max-Forwards: 70",
        "From: <sip:+821099990000@127.0.0.1>;tag=caller",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq or '1 ' + method}",
        f"Contact: <sip:+821099990000@127.0.0.1:{ua.port}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def to_tag(resp: SipMessage) -> str:
    return resp.get("To").split(";tag=", 1)[1].split(";")[0]


async def test_cancel_of_a_pending_invite_gets_200_and_487_and_the_ack_is_absorbed(
    voice: Any,
) -> None:
    gw = voice.gateway.gateway
    port = voice.sip_port
    # Hold the answer back (as a slow media allocation would) so the INVITE is still pending.
    gate = asyncio.Event()
    opened = gw.media.open

    async def slow_open() -> Any:
        await gate.wait()
        return await opened()

    gw.media.open = slow_open
    acks_to_calls: list[SipMessage] = []
    gw.sip.on_ack = lambda msg, peer: acks_to_calls.append(msg)
    ua = await raw_ua()
    call_id, branch = uuid.uuid4().hex, "z9hG4bK" + uuid.uuid4().hex[:12]
    number = "+8215880001"
    ua.send(message(ua, port, "INVITE", number, call_id, branch, body=SDP), port)
    await ua.expect("INVITE", 100)
    assert call_id in gw.by_dialog

    cancel = message(ua, port, "CANCEL", number, call_id, branch)
    ua.send(cancel, port)
    ok = await ua.expect("CANCEL", 200)
    terminated = await ua.expect("INVITE", 487)
    assert terminated.reason == "Request Terminated"
    assert ok.top_via.branch == terminated.top_via.branch == branch
    tag = to_tag(terminated)
    # Until the ACK comes, the 487 is retransmitted (Timer G); a retransmitted CANCEL is
    # answered again by its own transaction.
    again = await ua.expect("INVITE", 487)
    assert to_tag(again) == tag
    ua.send(cancel, port)
    await ua.expect("CANCEL", 200)

    ua.send(message(ua, port, "ACK", number, call_id, branch, "1 ACK", tag), port)
    invite_tx = next(
        tx
        for tx in gw.sip.server.values()
        if tx.request.method == "INVITE" and tx.request.call_id == call_id
    )
    for _ in range(100):
        if invite_tx.acked:
            break
        await asyncio.sleep(0.02)
    # Timer G (retransmission) and Timer H (no ACK) are gone; only Timer I (forget) is left.
    assert invite_tx.acked
    assert [t._callback.__name__ for t in invite_tx.timers] == ["forget"]
    assert acks_to_calls == []  # absorbed by the transaction, never seen by the call layer
    for _ in range(100):
        if call_id not in gw.by_dialog:
            break
        await asyncio.sleep(0.02)
    assert call_id not in gw.by_dialog and gw.live_calls() == 0
    gate.set()  # the held-back answer must not revive the cancelled call
    await asyncio.sleep(0.2)
    while not ua.inbox.empty():
        late = ua.inbox.get_nowait()
        assert late.status != 200 or late.cseq[1] != "INVITE", "a cancelled INVITE was answered"
    assert gw.live_calls() == 0
    assert not voice.events.of("ContactCreated")
    # The gateway still serves.
    options = message(ua, port, "OPTIONS", number, uuid.uuid4().hex, "z9hG4bKopt1")
    ua.send(options, port)
    await ua.expect("OPTIONS", 200)


async def test_cancel_after_the_answer_is_harmless_and_the_call_goes_on(voice: Any) -> None:
    gw = voice.gateway.gateway
    port = voice.sip_port
    ua = await raw_ua()
    number = "+15550100"  # no menus: after the welcome the caller is queued
    call_id, branch = uuid.uuid4().hex, "z9hG4bK" + uuid.uuid4().hex[:12]
    ua.send(message(ua, port, "INVITE", number, call_id, branch, body=SDP), port)
    answered = await ua.expect("INVITE", 200)
    tag = to_tag(answered)
    ua.send(message(ua, port, "ACK", number, call_id, "z9hG4bKack1", "1 ACK", tag), port)
    # The CANCEL crosses the 200: it may only get 200 (transaction found, already final) or
    # 481, and it must not end the call.
    ua.send(message(ua, port, "CANCEL", number, call_id, branch), port)
    async with asyncio.timeout(5):
        while True:
            resp = await ua.inbox.get()
            if resp.cseq[1] == "CANCEL":
                break
    assert resp.status in (200, 481), resp.status
    created = await voice.events.wait("ContactCreated")
    contact_id = created[0].contact.contact_id
    call = gw.calls[contact_id]
    assert call.caller is not None and call.caller.dialog.call_id == call_id
    assert call.state.value in ("queued", "ringing")
    # A CANCEL for no transaction at all gets 481.
    stray = message(ua, port, "CANCEL", number, uuid.uuid4().hex, "z9hG4bKstray")
    ua.send(stray, port)
    assert (await ua.expect("CANCEL", 481)).reason == "Call/Transaction Does Not Exist"
    # The caller hangs up normally: BYE gets 200 and the call is counted as abandoned.
    bye = message(ua, port, "BYE", number, call_id, "z9hG4bKbye1", "2 BYE", tag)
    ua.send(bye, port)
    await ua.expect("BYE", 200)
    await voice.events.wait("ContactAbandoned", contact_id)
