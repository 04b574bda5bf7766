"""The post-call satisfaction survey: after the agent hangs up, a caller of a tenant that surveys
its callers rates the call with a key from 1 to 5, pressed on a real baresip phone (RFC 4733
telephone-events over RTP), and the rating is published as SatisfactionRated on the voice
channel."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from switchboard.v1 import contact_pb2, events_pb2
from switchboard.voice_gateway.calls import State
from switchboard.voice_gateway.domain import ivr

from .conftest import TEST_CONFIG, Voice


@pytest.fixture
def gateway_config() -> dict[str, Any]:
    config = copy.deepcopy(TEST_CONFIG)
    config["survey_tenants"] = ["demo"]
    return config


async def talk_then_agent_hangs_up(voice: Voice, number: str) -> tuple[Any, str]:
    """A Korean billing caller reaches agent-ko, they talk, the agent hangs up; returns the
    caller's phone and the contact id once the contact has ended and the survey plays."""
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    phone = await voice.phone("agent-ko")
    caller, contact_id = await voice.dial_korean_billing("caller", number)
    await phone.wait_event("CALL_INCOMING")
    await phone.command("accept")
    await phone.wait_event("CALL_ESTABLISHED")
    await voice.relayed_both_ways(contact_id, packets=5)
    await phone.command("hangup")
    ended = (await voice.events.wait("ContactEnded", contact_id))[0]
    assert ended.reason == events_pb2.END_REASON_COMPLETED and ended.agent_id == "agent-ko"
    gw = voice.gateway.gateway
    assert gw is not None
    assert gw.calls[contact_id].state is State.SURVEY
    assert caller.count("CALL_CLOSED") == 0  # the caller stays for the survey
    return caller, contact_id


async def invalid_then_the_prompt_again(voice: Voice, contact_id: str) -> None:
    """Waits until the caller has heard "invalid" and the survey prompt plays again (keys
    pressed while "invalid" plays are dropped)."""
    gw = voice.gateway.gateway
    assert gw is not None
    call = gw.calls[contact_id]
    invalid = gw.prompts.sequence(["invalid"], call.payload_type, call.language)
    survey = gw.prompts.menu(ivr.SURVEY_MENU, call.payload_type, call.language)
    heard_invalid = False
    async with asyncio.timeout(20):
        while True:
            playback = call.caller.rtp.playback if call.caller is not None else None
            if playback is not None and playback.audio == invalid:
                heard_invalid = True
            elif heard_invalid and playback is not None and playback.audio == survey:
                return
            await asyncio.sleep(0.02)


async def test_the_key_pressed_after_the_agent_hangs_up_is_the_rating(voice: Voice) -> None:
    caller, contact_id = await talk_then_agent_hangs_up(voice, "+821012345678")
    await caller.command("sndcode", "4")
    rated = (await voice.events.wait("SatisfactionRated", contact_id))[0]
    assert rated.score == 4
    assert rated.meta.channel == contact_pb2.CHANNEL_VOICE and rated.meta.tenant == "demo"
    await caller.wait_event("CALL_CLOSED")  # thanked and hung up
    assert len(voice.events.of("ContactEnded", contact_id)) == 1
    # baresip sent the key in the audio stream (RFC 4733 telephone-event), not in SIP INFO.
    log = (caller.folder / "baresip.log").read_text(errors="replace")
    assert "audio: send DTMF digit: '4'" in log


async def test_an_invalid_key_replays_the_prompt_once(voice: Voice) -> None:
    caller, contact_id = await talk_then_agent_hangs_up(voice, "+821011112222")
    await caller.command("sndcode", "9")
    await invalid_then_the_prompt_again(voice, contact_id)
    assert voice.events.of("SatisfactionRated", contact_id) == []
    await caller.command("sndcode", "2")
    rated = (await voice.events.wait("SatisfactionRated", contact_id))[0]
    assert rated.score == 2
    await caller.wait_event("CALL_CLOSED")


async def test_two_invalid_keys_give_no_rating(voice: Voice) -> None:
    caller, contact_id = await talk_then_agent_hangs_up(voice, "+821033334444")
    await caller.command("sndcode", "0")
    await invalid_then_the_prompt_again(voice, contact_id)
    await caller.command("sndcode", "#")
    await caller.wait_event("CALL_CLOSED")  # goodbye, without a rating
    assert voice.events.of("SatisfactionRated", contact_id) == []


async def test_a_caller_hanging_up_in_the_survey_gives_no_rating(voice: Voice) -> None:
    caller, contact_id = await talk_then_agent_hangs_up(voice, "+821055556666")
    await caller.command("hangup")
    gw = voice.gateway.gateway
    assert gw is not None
    for _ in range(100):
        if contact_id not in gw.calls:
            break
        await asyncio.sleep(0.05)
    assert contact_id not in gw.calls
    await asyncio.sleep(0.5)
    assert voice.events.of("SatisfactionRated", contact_id) == []
    assert voice.events.of("ContactAbandoned", contact_id) == []
    assert len(voice.events.of("ContactEnded", contact_id)) == 1
