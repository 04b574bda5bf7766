"""Calls with real baresip user agents as the callers and as the agents' phones, through the
gateway, with the router in-process on real NATS and gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any as Voice

from switchboard.v1 import contact_pb2, events_pb2, router_pb2
from switchboard.voice_gateway.calls import State

HOTLINE = "+8215880001"


async def dial_korean_billing(voice: Voice, name: str, number: str) -> tuple[object, str]:
    """A caller dials the hotline, presses 1 (한국어) and 1 (billing); returns the contact id."""
    return await voice.dial_korean_billing(name, number)  # type: ignore[no-any-return]


async def answer_next(phone: object, after: int = 0) -> None:
    await phone.wait_event("CALL_INCOMING", after=after)  # type: ignore[attr-defined]
    await phone.command("accept")  # type: ignore[attr-defined]
    await phone.wait_event("CALL_ESTABLISHED", after=after)  # type: ignore[attr-defined]


async def relayed_both_ways(voice: Voice, contact_id: str, packets: int = 25) -> tuple[int, int]:
    return await voice.relayed_both_ways(contact_id, packets)  # type: ignore[no-any-return]


async def test_korean_caller_reaches_korean_agent_with_audio_both_ways(voice: Voice) -> None:
    await voice.agent("agent-en", {"en": 5}, {"billing": 5})
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    phone_en = await voice.phone("agent-en", tone_hz=660)
    phone_ko = await voice.phone("agent-ko")
    caller, contact_id = await dial_korean_billing(voice, "caller", "+821012345678")

    created = voice.events.of("ContactCreated", contact_id)[0].contact
    assert created.channel == contact_pb2.CHANNEL_VOICE
    assert created.language == "ko" and list(created.skills) == ["billing"]
    assert created.queue == "general" and created.identities[0].value == "+821012345678"
    await answer_next(phone_ko)
    await voice.events.wait("ContactAssigned", contact_id)
    up, down = await relayed_both_ways(voice, contact_id)
    assert up >= 25 and down >= 25
    assert phone_en.count("CALL_INCOMING") == 0
    assert voice.events.of("ContactAssigned", contact_id)[0].agent_id == "agent-ko"

    await caller.command("hangup")
    ended = (await voice.events.wait("ContactEnded", contact_id))[0]
    assert ended.agent_id == "agent-ko"
    assert ended.reason == events_pb2.END_REASON_CUSTOMER_LEFT
    assert ended.talk.ToNanoseconds() > 0
    await phone_ko.wait_event("CALL_CLOSED")


async def test_an_a_law_caller_is_answered_and_bridged_in_a_law(voice: Voice) -> None:
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    phone_ko = await voice.phone("agent-ko")
    caller, contact_id = await voice.dial_korean_billing("caller", "+821099998888", "pcma")
    gw = voice.gateway.gateway
    assert gw is not None
    call = gw.calls[contact_id]
    assert call.payload_type == 8  # PCMA: the only codec the caller offered
    await answer_next(phone_ko)
    await voice.events.wait("ContactAssigned", contact_id)
    up, down = await relayed_both_ways(voice, contact_id)
    assert up >= 25 and down >= 25
    # The agent's leg was offered the caller's codec, so the relay never transcodes.
    assert call.caller.rtp.payload_type == 8
    assert "Set audio encoder: PCMA" in phone_ko.log()
    await caller.command("hangup")
    await voice.events.wait("ContactEnded", contact_id)


async def test_caller_hanging_up_in_queue_is_abandoned(voice: Voice) -> None:
    caller, contact_id = await dial_korean_billing(voice, "caller", "+821012345678")
    await voice.events.wait("ContactQueued", contact_id)
    await caller.command("hangup")
    abandoned = (await voice.events.wait("ContactAbandoned", contact_id))[0]
    assert abandoned.queue == "general"
    assert abandoned.waited.ToNanoseconds() > 0
    assert not voice.events.of("ContactEnded", contact_id)
    gw = voice.gateway.gateway
    assert gw is not None
    for _ in range(100):  # the gateway forgets the call once the event is published
        if contact_id not in gw.calls:
            break
        await asyncio.sleep(0.02)
    assert contact_id not in gw.calls


async def test_unanswered_phone_goes_to_the_next_agent_and_caller_stays(voice: Voice) -> None:
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    await voice.agent("agent-ko2", {"ko": 5}, {"billing": 3})
    phones = {
        "agent-ko": await voice.phone("agent-ko"),
        "agent-ko2": await voice.phone("agent-ko2"),
    }
    caller, contact_id = await dial_korean_billing(voice, "caller", "+821012345678")
    first = (await voice.events.wait("ContactOffered", contact_id))[0]
    silent = phones[first.agent_id]
    await silent.wait_event("CALL_INCOMING")  # it rings, nobody answers
    second = (await voice.events.wait("ContactOffered", contact_id, count=2, timeout=30))[1]
    assert second.agent_id != first.agent_id
    await answer_next(phones[second.agent_id])
    assigned = (await voice.events.wait("ContactAssigned", contact_id))[0]
    assert assigned.agent_id == second.agent_id
    await silent.wait_event("CALL_CLOSED")  # the gateway cancelled the unanswered ring
    await relayed_both_ways(voice, contact_id, packets=10)
    assert caller.count("CALL_CLOSED") == 0  # never dropped
    assert not voice.events.of("ContactAbandoned", contact_id)


async def test_an_agent_who_goes_on_a_break_while_the_phone_rings_stops_ringing(
    voice: Voice,
) -> None:
    """The agent takes a break (at its desk, or a supervisor puts it on one) while its phone
    rings for a caller: the router withdraws the offer, the gateway stops the phone ringing at
    once rather than at the ring timeout (15 s), and the next agent's phone rings for the caller,
    who stays on the line."""
    ko = await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    phone_ko = await voice.phone("agent-ko")
    phone_ko2 = await voice.phone("agent-ko2")
    caller, contact_id = await dial_korean_billing(voice, "caller", "+821012345678")
    await phone_ko.wait_event("CALL_INCOMING")
    await voice.agent("agent-ko2", {"ko": 5}, {"billing": 3})  # free once agent-ko's offer goes
    await ko.stub.SetPresence(
        router_pb2.SetPresenceRequest(
            agent_id="agent-ko", presence=router_pb2.PRESENCE_BREAK, reason="training"
        )
    )
    withdrawn = (await voice.events.wait("ContactOfferWithdrawn", contact_id))[0]
    assert (withdrawn.agent_id, withdrawn.reason, withdrawn.requeued) == (
        "agent-ko",
        "agent went break",
        True,
    )
    await phone_ko.wait_event("CALL_CLOSED", timeout=5)  # cancelled, not rung out
    await answer_next(phone_ko2)
    assigned = (await voice.events.wait("ContactAssigned", contact_id))[0]
    assert assigned.agent_id == "agent-ko2"
    await relayed_both_ways(voice, contact_id, packets=10)
    assert caller.count("CALL_CLOSED") == 0
    # The gateway took the next offer: it did not decline it as "call busy".
    assert [w.agent_id for w in voice.events.of("ContactOfferWithdrawn", contact_id)] == [
        "agent-ko"
    ]


async def test_callback_keeps_its_place_in_the_queue(voice: Voice) -> None:
    first, first_id = await dial_korean_billing(voice, "first", "+821011110000")
    await voice.events.wait("ContactQueued", first_id)
    _second, second_id = await dial_korean_billing(voice, "second", "+821022220000")
    await voice.events.wait("ContactQueued", second_id)
    # The first caller asks to be called back and hangs up: their place is kept.
    gw = voice.gateway.gateway
    assert gw is not None
    gw.config = dataclasses.replace(gw.config, trunk=f"127.0.0.1:{first.sip_port}")
    await first.command("sndcode", "*")
    await first.wait_event("CALL_CLOSED")
    callback = await voice.events.wait(
        "ContactCreated", first_id, where=lambda e: e.contact.callback
    )
    assert callback[0].contact.identities[0].value == "+821011110000"
    assert not voice.events.of("ContactAbandoned", first_id)
    assert gw.calls[first_id].state is State.CALLBACK

    phone = await voice.phone("agent-ko")
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    offered = (await voice.events.wait("ContactOffered"))[0]
    assert offered.contact_id == first_id  # ahead of the caller who stayed on the line
    mark = len(first.events)
    await answer_next(phone)
    # Its turn came: the gateway calls the customer back through the trunk.
    await first.wait_event("CALL_INCOMING", after=mark)
    await first.command("accept")
    await first.wait_event("CALL_ESTABLISHED", after=mark)
    await voice.events.wait("ContactAssigned", first_id)
    await relayed_both_ways(voice, first_id, packets=10)
    assert gw.calls[second_id].state is State.QUEUED


async def test_hold_and_resume_are_timed(voice: Voice) -> None:
    agent = await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    phone = await voice.phone("agent-ko")
    caller, contact_id = await dial_korean_billing(voice, "caller", "+821012345678")
    await answer_next(phone)
    await relayed_both_ways(voice, contact_id, packets=5)
    await phone.command("hold")
    held = (await voice.events.wait("ContactHeld", contact_id))[0]
    assert held.held and held.agent_id == "agent-ko"
    gw = voice.gateway.gateway
    assert gw is not None
    call = gw.calls[contact_id]
    assert call.caller is not None and call.caller.rtp.playback is not None  # music on hold
    relayed = call.caller.rtp.relayed
    await asyncio.sleep(0.5)
    assert call.caller.rtp.relayed == relayed  # the agent does not hear the caller on hold
    await phone.command("resume")
    await voice.events.wait("ContactHeld", contact_id, where=lambda e: not e.held)
    await relayed_both_ways(voice, contact_id, packets=relayed + 5)
    await phone.command("hangup")
    ended = (await voice.events.wait("ContactEnded", contact_id))[0]
    assert ended.reason == events_pb2.END_REASON_COMPLETED
    hold, talk = ended.hold.ToNanoseconds(), ended.talk.ToNanoseconds()
    assert 0 < hold < talk
    await caller.wait_event("CALL_CLOSED")
    del agent
