"""Blind transfer by REFER from the agent's baresip phone (its `transfer` command): the router
moves the contact to the other queue, the agent's leg ends, the caller stays on the line and
reaches the next agent; a refused transfer leaves the call with the agent."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from switchboard.voice_gateway.calls import State
from switchboard.voice_gateway.sip.dialog import Dialog
from switchboard.voice_gateway.sip.message import SipMessage, parse_datagram

Voice = Any


async def connected_korean_call(voice: Voice) -> tuple[Any, Any, str]:
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    phone = await voice.phone("agent-ko")
    caller, contact_id = await voice.dial_korean_billing("caller", "+821012345678")
    await phone.wait_event("CALL_INCOMING")
    await phone.command("accept")
    await voice.events.wait("ContactAssigned", contact_id)
    await voice.relayed_both_ways(contact_id, packets=5)
    return caller, phone, contact_id


async def test_refer_to_a_transfer_code_moves_the_caller_to_the_queue(voice: Voice) -> None:
    caller, phone, contact_id = await connected_korean_call(voice)
    gw = voice.gateway.gateway
    # The agent's phone transfers to the configured code 9 (the "english" queue).
    mark = len(phone.events)
    await phone.command("transfer", f"sip:9@127.0.0.1:{voice.sip_port}")
    moved = (await voice.events.wait("ContactTransferred", contact_id))[0]
    assert moved.to_queue == "english" and moved.from_agent_id == "agent-ko"
    await phone.wait_event("CALL_CLOSED", after=mark)  # the agent's leg ends
    call = gw.calls[contact_id]
    assert call.state in (State.QUEUED, State.RINGING) and call.queue == "english"
    assert call.agent is None or call.agent_id != "agent-ko"
    assert call.caller is not None and call.caller.rtp.playback is not None  # music on hold
    assert caller.count("CALL_CLOSED") == 0  # the caller was never dropped

    # The next agent takes it from the english queue and the caller talks to them.
    phone2 = await voice.phone("agent-ko2")
    await voice.agent("agent-ko2", {"ko": 5, "en": 5}, {"billing": 3})
    offered = await voice.events.wait(
        "ContactOffered", contact_id, where=lambda e: e.agent_id == "agent-ko2", timeout=30
    )
    assert offered
    await phone2.wait_event("CALL_INCOMING")
    await phone2.command("accept")
    assigned = await voice.events.wait(
        "ContactAssigned", contact_id, where=lambda e: e.agent_id == "agent-ko2"
    )
    assert assigned
    await voice.relayed_both_ways(contact_id, packets=5)
    assert gw.calls[contact_id].state is State.CONNECTED
    assert caller.count("CALL_CLOSED") == 0


def refer_in(dialog: Dialog, gw_port: int, port: int, target: str, cseq: int) -> bytes:
    """A REFER inside `dialog` as its remote party would send it (tags and Call-ID swapped)."""
    lines = [
        f"REFER sip:gateway@127.0.0.1:{gw_port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
        "Max-Forwards: 70",
        f"From: <{dialog.remote_uri}>;tag={dialog.remote_tag}",
        f"To: <{dialog.local_uri}>;tag={dialog.local_tag}",
        f"Call-ID: {dialog.call_id}",
        f"CSeq: {cseq} REFER",
        f"Contact: <sip:raw@127.0.0.1:{port}>",
        f"Refer-To: <sip:{target}@127.0.0.1:{gw_port}>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def send_refer(voice: Voice, dialog: Dialog, target: str, cseq: int) -> SipMessage:
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[SipMessage] = asyncio.Queue()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.put_nowait(parse_datagram(data))

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        transport.sendto(
            refer_in(dialog, voice.sip_port, port, target, cseq), ("127.0.0.1", voice.sip_port)
        )
        return await asyncio.wait_for(got.get(), 5)
    finally:
        transport.close()


async def test_raw_refer_refused_then_accepted_within_the_agent_dialog(voice: Voice) -> None:
    caller, phone, contact_id = await connected_korean_call(voice)
    gw = voice.gateway.gateway
    call = gw.calls[contact_id]
    agent_dialog, caller_dialog = call.agent.dialog, call.caller.dialog
    # Only the agent may transfer: a REFER on the caller's leg is refused.
    resp = await send_refer(voice, caller_dialog, "english", 50)
    assert resp.status == 403
    # An unknown queue: 202 (the REFER is valid), the router refuses, the NOTIFY carries the
    # failure and the caller stays bridged with the agent.
    resp = await send_refer(voice, agent_dialog, "nowhere", 100)
    assert resp.status == 202
    for _ in range(100):
        if call.state is State.CONNECTED and call.caller.rtp.bridge is not None:
            break
        await asyncio.sleep(0.02)
    before = call.caller.rtp.relayed
    await voice.relayed_both_ways(contact_id, packets=before + 25)
    assert call.state is State.CONNECTED and call.agent_id == "agent-ko" and call.transfers == 0
    assert not voice.events.of("ContactTransferred", contact_id)
    assert phone.count("CALL_CLOSED") == 0 and caller.count("CALL_CLOSED") == 0
    # A queue by name: the router moves the contact, the agent's phone gets a BYE.
    resp = await send_refer(voice, agent_dialog, "complaints", 101)
    assert resp.status == 202
    moved = (await voice.events.wait("ContactTransferred", contact_id))[0]
    assert moved.to_queue == "complaints" and moved.from_agent_id == "agent-ko"
    await phone.wait_event("CALL_CLOSED")
    assert call.queue == "complaints" and call.transfers == 1 and call.agent is None
    assert caller.count("CALL_CLOSED") == 0
    # The call goes on: the caller waits in the new queue, nothing has ended...
    assert not voice.events.of("ContactEnded", contact_id)
    # ...and can still choose a callback there.
    await caller.command("sndcode", "*")
    callback = await voice.events.wait(
        "ContactCreated", contact_id, where=lambda e: e.contact.callback
    )
    assert callback[0].contact.queue == "complaints"
    await caller.wait_event("CALL_CLOSED")
    assert call.state is State.CALLBACK


async def test_caller_hanging_up_during_a_transfer_releases_the_agent_phone(
    voice: Voice,
) -> None:
    caller, phone, contact_id = await connected_korean_call(voice)
    gw = voice.gateway.gateway
    call = gw.calls[contact_id]
    # Hold the router's answer to TransferContact back until the caller has hung up.
    gate = asyncio.Event()
    transfer = gw.router.transfer

    async def slow_transfer(*args: Any) -> bool:
        await gate.wait()
        return await transfer(*args)  # type: ignore[no-any-return]

    gw.router.transfer = slow_transfer
    resp = await send_refer(voice, call.agent.dialog, "complaints", 100)
    assert resp.status == 202
    await caller.command("hangup")
    await caller.wait_event("CALL_CLOSED")
    await phone.wait_event("CALL_CLOSED")  # the gateway hung up the agent's phone too
    for _ in range(100):
        if contact_id not in gw.calls:
            break
        await asyncio.sleep(0.02)
    assert contact_id not in gw.calls and call.agent is None
    gate.set()
    await asyncio.sleep(0.1)
    # The gateway keeps serving: a new caller is answered and queued.
    _second, second_id = await voice.dial_korean_billing("second", "+821022220000")
    assert gw.calls[second_id].state in (State.QUEUED, State.RINGING)
