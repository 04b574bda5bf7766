"""A carrier's call through a real edge proxy: Debian's Kamailio, record-routing, in front of the
gateway. The gateway keeps the proxy in the dialog's route set, so in-dialog requests travel
through it in both directions: the caller's ACK on the way in, the gateway's BYE on the way out."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from switchboard.v1 import events_pb2

from .conftest import KAMAILIO, Kamailio

HOTLINE = "+8215880001"  # the test number plan's Korean hotline


@pytest.fixture
async def kamailio(voice: Any, tmp_path: Path) -> Any:
    if not shutil.which(KAMAILIO):
        pytest.fail("Kamailio is not installed: run `make system-deps` (kamailio)")
    proxy = await Kamailio(tmp_path / "kamailio", [voice.sip_port]).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_a_call_through_a_record_routing_edge_proxy(voice: Any, kamailio: Kamailio) -> None:
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    phone = await voice.phone("agent-ko")
    caller = await voice.caller("carrier", "+821055550000")
    await caller.command("dial", f"sip:{HOTLINE}@127.0.0.1:{kamailio.port}")
    await caller.wait_event("CALL_ESTABLISHED")
    await caller.command("sndcode", "1")  # 한국어
    await caller.command("sndcode", "1")  # billing
    created = await voice.events.wait(
        "ContactCreated", where=lambda e: e.contact.identities[0].value == "+821055550000"
    )
    contact_id = created[0].contact.contact_id
    assert created[0].contact.language == "ko"

    gw = voice.gateway.gateway
    leg = gw.calls[contact_id].caller
    # The proxy is in the caller leg's route set, and in-dialog requests go to it.
    assert (
        len(leg.dialog.route_set) == 1 and f"127.0.0.1:{kamailio.port}" in leg.dialog.route_set[0]
    )
    assert leg.dialog.peer.addr[1] == kamailio.port
    assert "relayed in-dialog ACK" in kamailio.log()  # the caller's ACK came via the proxy

    phone_mark = len(phone.events)
    await phone.wait_event("CALL_INCOMING", after=phone_mark)
    await phone.command("accept")
    await voice.events.wait("ContactAssigned", contact_id)
    up, down = await voice.relayed_both_ways(contact_id)
    assert up >= 25 and down >= 25

    # The agent hangs up: the gateway's BYE reaches the caller through the proxy.
    await phone.command("hangup")
    await caller.wait_event("CALL_CLOSED")
    ended = (await voice.events.wait("ContactEnded", contact_id))[0]
    assert ended.reason == events_pb2.END_REASON_COMPLETED
    assert f"relayed in-dialog BYE from 127.0.0.1:{voice.sip_port}" in kamailio.log()
