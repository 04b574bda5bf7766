"""Listening to a live call from the wallboard in chromium: the real platform (case, router,
chat) with a real voice gateway and baresip phones (caller, agent, and the supervisor's own
phone, which the gateway rings). The supervisor picks a call from Live calls, answers their
phone, switches from monitor to whisper without redialling and leaves; the board still fits a
1600×1000 screen."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.js import api as js_api
from playwright.async_api import expect

from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.testing.agents import AgentClient
from switchboard.v1 import events_pb2

from ..conftest import Platform, running_platform
from ..voice.conftest import SECRET, Baresip, Recorder, Voice, start_gateway

LINE = "+15550100"
CONFIG: dict[str, Any] = {
    "realm": "switchboard",
    "phones": {"demo": {"a1": "pw-a1", "sup-1": "pw-sup-1"}},
    "numbers": {LINE: {"tenant": "demo", "queue": "general", "language": "en"}},
}


@pytest.fixture
async def voice_platform(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Platform, Voice]]:
    """The platform, its chat told the gateway's gRPC address, and the gateway on its router."""
    grpc_port = free_port(kind=socket.SOCK_STREAM)
    async with running_platform(
        nats_url,
        database_url,
        SECRET,
        chat_settings={"CHAT_VOICE_ENDPOINTS": f"127.0.0.1:{grpc_port}"},
    ) as made:
        gateway = await start_gateway(
            nats_url, made.router.port, tmp_path, CONFIG, VOICE_GRPC_PORT=grpc_port
        )
        voice = Voice(nats_url, made.router, gateway, Recorder(), tmp_path)
        try:
            yield made, voice
        finally:
            for ua in voice.phones:
                await ua.stop()
            for client in voice.agents:
                await client.close()
            await gateway.stop()


async def _connected_call(voice: Voice) -> tuple[Baresip, str]:
    """A caller talking to agent a1 on a1's phone: (agent's phone, contact id)."""
    phone = await voice.phone("a1", tone_hz=1000, tenant="demo", password="pw-a1")
    client = AgentClient(voice.router_target, SECRET, "demo", "a1")
    await client.sign_in({"en": 5})
    voice.agents.append(client)
    caller = await voice.caller("caller", "+821055550000")
    await caller.command("dial", voice.dial_uri(LINE))
    await caller.wait_event("CALL_ESTABLISHED")
    await phone.wait_event("CALL_INCOMING", timeout=20)
    await phone.command("accept")
    await phone.wait_event("CALL_ESTABLISHED", timeout=20)
    gateway = voice.gateway.gateway
    assert gateway is not None
    for _ in range(400):
        connected = [c for c, call in gateway.calls.items() if call.agent is not None]
        if connected:
            await voice.relayed_both_ways(connected[0], 10)
            return phone, connected[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the call never reached the agent")


async def test_supervisor_listens_whispers_and_leaves_from_the_wallboard(
    voice_platform: tuple[Platform, Voice], pages: Any
) -> None:
    platform, voice = voice_platform
    _, contact_id = await _connected_call(voice)
    sup = await voice.phone("sup-1", tone_hz=1700, tenant="demo", password="pw-sup-1")

    board = await pages.new(f"{platform.chat_url}/wallboard", locale="en-US")
    await board.set_viewport_size({"width": 1600, "height": 1000})
    await board.get_by_test_id("login-agent").fill("sup-1")
    await board.get_by_test_id("login-password").fill("demo-sup-1")
    await board.get_by_test_id("login-submit").click()
    await board.locator("#board select.ui-lang").select_option("en")
    row = board.locator(f'[data-testid="wb-live-call"][data-contact-id="{contact_id}"]')
    await expect(row).to_be_visible()

    # Not answered within the gateway's ring timeout: said in the board's language.
    bar = board.get_by_test_id("listen")
    await row.get_by_test_id("wb-listen").click()
    await expect(bar).to_have_attribute("data-phase", "ringing")
    await sup.wait_event("CALL_INCOMING", timeout=20)
    await expect(board.get_by_test_id("listen-state")).to_contain_text(
        "Your phone was not answered"
    )
    await pages.shot(board, "wallboard-call-unanswered")
    await board.get_by_test_id("listen-leave").click()
    await expect(bar).to_be_hidden()

    rang = len(sup.events)
    await row.get_by_test_id("wb-listen-mode").select_option("monitor")
    await row.get_by_test_id("wb-listen").click()
    await expect(bar).to_have_attribute("data-phase", "ringing")
    await expect(board.get_by_test_id("listen-state")).to_contain_text("Ringing your phone")
    await pages.shot(board, "wallboard-call-ringing")
    await sup.wait_event("CALL_INCOMING", timeout=20, after=rang)
    await sup.command("accept")
    await expect(bar).to_have_attribute("data-phase", "on")
    await expect(bar).to_have_attribute("data-mode", "monitor")
    await expect(board.get_by_test_id("listen-state")).to_contain_text("Monitoring")
    await expect(board.get_by_test_id("listen-monitor")).to_have_attribute("aria-pressed", "true")

    await board.get_by_test_id("listen-whisper").click()
    await expect(bar).to_have_attribute("data-mode", "whisper")
    await expect(board.get_by_test_id("listen-state")).to_contain_text("Whispering to")
    supervised = await platform_read(platform, 2)
    assert [e.mode for e in supervised] == [
        events_pb2.SUPERVISION_MODE_MONITOR,
        events_pb2.SUPERVISION_MODE_WHISPER,
    ]
    assert [e["type"] for e in sup.events[rang:]].count("CALL_INCOMING") == 1
    assert "CALL_CLOSED" not in [e["type"] for e in sup.events[rang:]]

    # The UI language follows the board: the state is worded in Korean too.
    await board.locator("#board select.ui-lang").select_option("ko")
    await expect(board.get_by_test_id("listen-state")).to_contain_text("귓속말")
    sizes = await board.evaluate(
        "({scroll: document.documentElement.scrollHeight, inner: window.innerHeight,"
        " scrollW: document.documentElement.scrollWidth, innerW: window.innerWidth})"
    )
    await pages.shot(board, "wallboard-call-whispering")
    assert sizes["scroll"] <= sizes["inner"], sizes
    assert sizes["scrollW"] <= sizes["innerW"], sizes

    await board.get_by_test_id("listen-leave").click()
    await sup.wait_event("CALL_CLOSED", after=rang)
    await expect(bar).to_be_hidden()
    await expect(row.get_by_test_id("wb-listen")).to_be_enabled()
    stopped = await platform_read(platform, 3)
    assert stopped[-1].action == events_pb2.SUPERVISION_ACTION_STOPPED
    assert pages.errors == []


async def platform_read(platform: Platform, count: int) -> list[Any]:
    """The ContactSupervised events of the call so far (the gateway's audit)."""
    bus = await Bus.connect(platform.nats_url, source="test")
    try:
        sub = await bus.js.pull_subscribe(
            "contact.demo.voice.supervised",
            stream="EVENTS",
            config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
        )
        msgs = await sub.fetch(count, timeout=15)
        await sub.unsubscribe()
        return [events_pb2.ContactSupervised.FromString(m.data) for m in msgs]
    finally:
        await bus.drain()
