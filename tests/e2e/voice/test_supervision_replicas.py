"""Dialling in to supervise with two gateway replicas on one nats-server: the call is held by one
(B, the gateway in the test's process), the supervisor's real baresip phone dials the other (A, a
real process). A checks the phone's digest credentials, finds B over NATS and answers
`302 Moved Temporarily` with B's SIP address; the phone follows it, B checks the credentials
again (its own challenge) and joins the phone to the call in monitor mode, as if it had been
dialled directly. A refusal is still a refusal: a wrong password is 403 and no address, an agent
on no call is 404, a phone that is no supervisor 403."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from switchboard.core.nats_auth import VOICE_GATEWAY_REPLICAS
from switchboard.testing.processes import ServiceProcess
from switchboard.voice_gateway.sip.message import NameAddr, Uri

from .conftest import Baresip, Voice, raw_phone, sip_port
from .test_supervision import (
    AGENT_HZ,
    BARGE,
    CALLER_HZ,
    MONITOR,
    STARTED,
    SUPERVISOR_HZ,
    _heard,
    call,
    gateway_config,
    hears,
    never_hears,
)

__all__ = ["call", "gateway_config"]  # the fixtures, shared with the single-gateway tests

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def replica_a(voice: Voice) -> AsyncIterator[ServiceProcess]:
    """Another replica of the gateway (the one in the test's process holds the call)."""
    assert VOICE_GATEWAY_REPLICAS > 1
    gateway = await voice.started_gateway_process("gateway-a")
    try:
        yield gateway
    finally:
        gateway.stop()


async def _dial_refused(phone: Baresip, port: int, target: str) -> str:
    mark = len(phone.events)
    await phone.command("dial", f"sip:{target}@127.0.0.1:{port}")
    closed = await phone.wait_event("CALL_CLOSED", timeout=20, after=mark)
    assert not any(e.get("type") == "CALL_ESTABLISHED" for e in phone.events[mark:])
    return str(closed.get("param", ""))


async def test_a_supervisor_dialling_a_replica_without_the_call_is_sent_to_the_one_with_it(
    voice: Voice, call: tuple[Baresip, Baresip, str], replica_a: ServiceProcess
) -> None:
    caller, agent, contact_id = call
    gw_b = voice.gateway.gateway
    assert gw_b is not None
    port_a = sip_port(replica_a)

    # At the SIP level: A challenges, then (right password) redirects to B's address.
    raw = await raw_phone("sup1", "pw-sup1", username="sup1@demo")
    try:
        challenge = await raw.send_invite(port_a, "*55a1", 1)
        assert challenge.status == 401
        auth = raw.authorization(challenge, port_a, method="INVITE", uri_user="*55a1")
        moved = await raw.send_invite(port_a, "*55a1", 2, auth)
        assert (moved.status, moved.reason) == (302, "Moved Temporarily"), moved.encode()
        target = Uri.parse(NameAddr.parse(moved.get("Contact")).uri)
        assert (target.user, target.host, target.port) == ("*55a1", "127.0.0.1", voice.sip_port)
    finally:
        assert raw.transport is not None
        raw.transport.close()
    assert not gw_b.calls[contact_id].supervisors  # a redirect joins nobody

    # A real phone follows the redirect: B challenges it again and joins it in monitor mode.
    sup = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    await sup.command("dial", f"sip:*55a1@127.0.0.1:{port_a}")
    await sup.wait_event("CALL_ESTABLISHED", timeout=20)
    joined = await voice.events.wait("ContactSupervised", contact_id)
    assert joined[0].supervisor_id == "sup1" and joined[0].action == STARTED
    assert joined[0].agent_id == "a1" and joined[0].mode == MONITOR
    assert joined[0].changed_by == "dial"
    assert [s.supervisor_id for s in gw_b.calls[contact_id].supervisors.values()] == ["sup1"]

    heard_caller, heard_agent, heard_sup = await _heard([caller, agent, sup])
    assert hears(heard_sup, CALLER_HZ) and hears(heard_sup, AGENT_HZ), heard_sup
    assert never_hears(heard_caller, SUPERVISOR_HZ) and never_hears(heard_agent, SUPERVISOR_HZ)

    # Its keys switch modes on B, where the call is.
    await sup.command("sndcode", "6")
    await voice.events.wait(
        "ContactSupervised", contact_id, where=lambda e: e.mode == BARGE and e.changed_by == "dtmf"
    )
    await sup.command("hangup")
    await sup.wait_event("CALL_CLOSED")
    assert caller.count("CALL_CLOSED") == 0 and agent.count("CALL_CLOSED") == 0


async def test_a_replica_without_the_call_still_refuses_who_may_not_supervise(
    voice: Voice, call: tuple[Baresip, Baresip, str], replica_a: ServiceProcess
) -> None:
    _caller, _agent, contact_id = call
    port_a = sip_port(replica_a)
    # A wrong password: 403, and nothing said of where the call is.
    raw = await raw_phone("sup1", "wrong", username="sup1@demo")
    try:
        challenge = await raw.send_invite(port_a, "*55a1", 1)
        assert challenge.status == 401
        auth = raw.authorization(challenge, port_a, method="INVITE", uri_user="*55a1")
        refused = await raw.send_invite(port_a, "*55a1", 2, auth)
        assert refused.status == 403 and not refused.get("Contact"), refused.encode()
    finally:
        assert raw.transport is not None
        raw.transport.close()
    # An agent's phone with its right password is no supervisor: 403.
    other_agent = await voice.phone("a2", tenant="demo", password="pw-a2")
    assert "403" in await _dial_refused(other_agent, port_a, "*55a1")
    # An agent on no call on any replica: 404; another tenant's supervisor: its tenant has no
    # such agent on a call, 404.
    sup = await voice.phone("sup1", tone_hz=SUPERVISOR_HZ, tenant="demo", password="pw-sup1")
    assert "404" in await _dial_refused(sup, port_a, "*55nobody")
    acme = await voice.phone("sup2", tone_hz=SUPERVISOR_HZ, tenant="acme", password="pw-sup2")
    assert "404" in await _dial_refused(acme, port_a, "*55a1")
    assert not voice.events.of("ContactSupervised", contact_id)
    gw_b = voice.gateway.gateway
    assert gw_b is not None and not gw_b.calls[contact_id].supervisors
