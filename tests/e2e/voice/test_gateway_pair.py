"""Two voice gateways, as real processes, behind Debian's Kamailio with the dispatcher module (the
deployment's pair behind its edge proxy): new calls are spread round-robin over both; once one is
killed with SIGKILL, every new call is answered by the survivor, whether the dispatcher's OPTIONS
probes have marked the dead one down already or the call itself times out on it and fails over."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchboard.testing.processes import ServiceProcess
from switchboard.testing.waiting import until

from .conftest import HOTLINE, KAMAILIO, Baresip, Kamailio, Voice, sip_port

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def gateways(voice: Voice) -> AsyncIterator[list[ServiceProcess]]:
    pair: list[ServiceProcess] = []
    try:
        for n in ("a", "b"):
            pair.append(await voice.started_gateway_process(f"gateway-{n}"))
        yield pair
    finally:
        for gateway in pair:
            gateway.stop()


@contextlib.asynccontextmanager
async def edge_proxy(
    folder: Path, gateways: list[ServiceProcess], ping_interval: int
) -> AsyncIterator[Kamailio]:
    if not shutil.which(KAMAILIO):
        pytest.fail("Kamailio is not installed: run `make system-deps` (kamailio)")
    proxy = await Kamailio(folder, [sip_port(g) for g in gateways], ping_interval).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
async def probing(tmp_path: Path, gateways: list[ServiceProcess]) -> AsyncIterator[Kamailio]:
    """The edge proxy probing the gateways every second."""
    async with edge_proxy(tmp_path / "kamailio", gateways, ping_interval=1) as proxy:
        yield proxy


@pytest.fixture
async def not_probing(tmp_path: Path, gateways: list[ServiceProcess]) -> AsyncIterator[Kamailio]:
    """The edge proxy probing so rarely that only a call's own failure can reveal a dead gateway."""
    async with edge_proxy(tmp_path / "kamailio", gateways, ping_interval=3600) as proxy:
        yield proxy


async def call(caller: Baresip, proxy: Kamailio) -> str:
    """One call through the proxy, answered and hung up; the SIP address of the gateway that
    answered it (from the proxy's log of the 200 it relayed)."""
    mark = len(caller.events)
    await caller.command("dial", f"sip:{HOTLINE}@127.0.0.1:{proxy.port}")
    established = await caller.wait_event("CALL_ESTABLISHED", after=mark)
    call_id = established.get("id", "")
    assert call_id, established
    await caller.command("hangup")
    await caller.wait_event("CALL_CLOSED", after=mark)
    answered = proxy.lines(f"answered INVITE {call_id} by ")
    assert answered, f"the proxy relayed no 200 for {call_id!r}:\n{proxy.log()[-3000:]}"
    found = re.search(r"by (sip:\S+)", answered[0])
    assert found
    return found.group(1)


def uri(gateway: ServiceProcess) -> str:
    return f"sip:127.0.0.1:{sip_port(gateway)}"


async def spread(caller: Baresip, proxy: Kamailio, gateways: list[ServiceProcess]) -> None:
    answered_by = [await call(caller, proxy) for _ in range(4)]
    assert sorted(answered_by) == sorted([uri(g) for g in gateways] * 2), answered_by


async def test_calls_spread_over_both_gateways_and_go_to_the_survivor_once_probing_finds_one_dead(
    voice: Voice, gateways: list[ServiceProcess], probing: Kamailio
) -> None:
    caller = await voice.caller("carrier", "+821055550000")
    await spread(caller, probing, gateways)

    dead, survivor = gateways
    dead.kill()
    # The dispatcher's OPTIONS probe misses the dead gateway and takes it out of the list.
    await until(
        lambda: probing.lines(f"gateway down: {uri(dead)}"), "a probe marking the gateway down"
    )
    answered_by = [await call(caller, probing) for _ in range(4)]
    assert answered_by == [uri(survivor)] * 4
    assert probing.lines("failover") == []  # none of them was even tried on the dead one
    assert probing.lines(f"gateway down: {uri(survivor)}") == []


async def test_a_call_sent_to_a_gateway_that_died_unnoticed_fails_over_to_the_survivor(
    voice: Voice, gateways: list[ServiceProcess], not_probing: Kamailio
) -> None:
    caller = await voice.caller("carrier", "+821055550000")
    await spread(caller, not_probing, gateways)

    dead, survivor = gateways
    dead.kill()
    # Round-robin sends one of the next two calls to the dead gateway: it never answers, and the
    # proxy moves the call on to the survivor (and marks the dead one down for the calls after).
    answered_by = [await call(caller, not_probing) for _ in range(3)]
    assert answered_by == [uri(survivor)] * 3
    failed = not_probing.lines(f"gateway {uri(dead)} failed INVITE")
    moved = not_probing.lines(f"to {uri(survivor)}")
    assert len(failed) == 1, not_probing.log()[-3000:]
    assert failed[0].endswith(" with 408"), failed  # timed out (fr_timer): no answer at all
    assert any("failover INVITE" in line for line in moved)


async def test_an_agent_registered_with_both_gateways_takes_the_calls_either_answers(
    voice: Voice, gateways: list[ServiceProcess], probing: Kamailio
) -> None:
    """The way docs/voice.md says to run agents' phones with several gateways: registered with
    each. Two calls, one answered by each gateway, both reach the agent and are assigned."""
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    phone = await voice.phone("agent-ko", gateways=[sip_port(g) for g in gateways])
    answered_by = []
    for number in ("+821055550001", "+821055550002"):
        caller = await voice.caller(f"carrier-{number[-1]}", number)
        mark = len(caller.events)
        await caller.command("dial", f"sip:{HOTLINE}@127.0.0.1:{probing.port}")
        established = await caller.wait_event("CALL_ESTABLISHED", after=mark)
        call_id = established["id"]
        await caller.command("sndcode", "1")  # 한국어
        await caller.command("sndcode", "1")  # billing
        created = await voice.events.wait(
            "ContactCreated", where=lambda e, n=number: e.contact.identities[0].value == n
        )
        contact_id = created[0].contact.contact_id
        ringing = len(phone.events)
        await phone.wait_event("CALL_INCOMING", after=ringing)
        await phone.command("accept")
        assigned = await voice.events.wait("ContactAssigned", contact_id)
        assert assigned[0].agent_id == "agent-ko"
        await caller.command("hangup")
        await voice.events.wait("ContactEnded", contact_id)
        await phone.wait_event("CALL_CLOSED", after=ringing)
        [line] = probing.lines(f"answered INVITE {call_id} by ")
        answered_by.append(line.rsplit(" ", 1)[-1])
    assert sorted(answered_by) == sorted(uri(g) for g in gateways)


async def test_a_call_refused_with_503_by_a_full_gateway_fails_over_to_the_other(
    voice: Voice, tmp_path: Path
) -> None:
    gateways: list[ServiceProcess] = []
    try:
        full = await voice.started_gateway_process("gateway-full", VOICE_MAX_CALLS="1")
        gateways.append(full)
        spare = await voice.started_gateway_process("gateway-spare")
        gateways.append(spare)
        async with edge_proxy(tmp_path / "kamailio", [full, spare], 3600) as proxy:
            await _a_full_gateway_refuses_and_the_call_fails_over(voice, proxy, full, spare)
    finally:
        for gateway in gateways:
            gateway.stop()


async def _a_full_gateway_refuses_and_the_call_fails_over(
    voice: Voice, proxy: Kamailio, full: ServiceProcess, spare: ServiceProcess
) -> None:
    # A call held on the full gateway takes its one place.
    holder = await voice.caller("holder", "+821055550009")
    for _ in range(2):
        mark = len(holder.events)
        await holder.command("dial", f"sip:{HOTLINE}@127.0.0.1:{proxy.port}")
        established = await holder.wait_event("CALL_ESTABLISHED", after=mark)
        if proxy.lines(f"answered INVITE {established['id']} by {uri(full)}"):
            break
        await holder.command("hangup")
        await holder.wait_event("CALL_CLOSED", after=mark)
    else:
        raise AssertionError(f"no call reached {uri(full)}:\n{proxy.log()[-3000:]}")

    # The next calls: the one the dispatcher sends to the full gateway is refused there with
    # 503 and answered by the other.
    caller = await voice.caller("carrier", "+821055550000")
    answered_by = [await call(caller, proxy) for _ in range(2)]
    assert answered_by == [uri(spare)] * 2
    [refused] = proxy.lines(f"gateway {uri(full)} failed INVITE")
    assert refused.endswith(" with 503"), refused
    assert len([line for line in proxy.lines("failover INVITE") if uri(spare) in line]) == 1
