"""OPTIONS keepalives to registered phones: a phone that stops answering is unregistered after
two missed pings, so the router's offer rings an agent whose phone is alive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import raw_phone

PING_SECONDS = 0.7


@pytest.fixture
def gateway_settings() -> dict[str, Any]:
    return {"VOICE_OPTIONS_PING_SECONDS": PING_SECONDS}


async def test_a_phone_that_stops_answering_is_unregistered_and_offers_go_elsewhere(
    voice: Any,
) -> None:
    gw = voice.gateway.gateway
    dead = await raw_phone("agent-ko", "pw-ko")
    await dead.register(voice.sip_port)
    binding = gw.registrar.lookup("demo", "agent-ko")
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
    assert gw.registrar.lookup("demo", "agent-ko") is binding and binding.missed_pings == 0

    # It goes silent: after two unanswered pings in a row it is unregistered.
    dead.answering = False
    answered = len(dead.options())
    for _ in range(300):
        if gw.registrar.lookup("demo", "agent-ko") is None:
            break
        await asyncio.sleep(0.05)
    assert gw.registrar.lookup("demo", "agent-ko") is None
    assert len(dead.options()) - answered >= 2 and binding.missed_pings == 2
    # baresip kept answering and is still registered.
    alive_binding = gw.registrar.lookup("demo", "agent-ko2")
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
