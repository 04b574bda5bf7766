"""The wallboard's live call supervision, end to end: the chat (its /agent socket, as the
wallboard uses it) lists the calls in progress from the router and the bus, and listens through
the real voice gateway's VoiceService with the supervisor's own token; the supervisor's phone
is a real baresip phone the gateway rings."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import socketio

from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.settings import ChatSettings
from switchboard.core import auth
from switchboard.v1 import events_pb2

from .conftest import SECRET, Baresip, Voice, free_port

DEMO_LINE = "+15550100"
STARTED = events_pb2.SUPERVISION_ACTION_STARTED
MODE_CHANGED = events_pb2.SUPERVISION_ACTION_MODE_CHANGED
STOPPED = events_pb2.SUPERVISION_ACTION_STOPPED
MONITOR = events_pb2.SUPERVISION_MODE_MONITOR
WHISPER = events_pb2.SUPERVISION_MODE_WHISPER
TIMEOUT = 30.0


@pytest.fixture
def gateway_config() -> dict[str, Any]:
    return {
        "realm": "switchboard",
        "phones": {
            "demo": {"a1": "pw-a1", "sup1": "pw-sup1", "lead1": "pw-lead1"},
            "acme": {"sup2": "pw-sup2"},
        },
        "numbers": {DEMO_LINE: {"tenant": "demo", "queue": "general", "language": "en"}},
    }


async def _chat(voice: Voice, endpoints: str, **extra: Any) -> ChatApp:
    settings = ChatSettings(
        NATS_URL=voice.nats_url,
        CHAT_HTTP_PORT=0,
        CHAT_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET=SECRET,
        CHAT_ROUTER_ADDR=voice.router_target,
        CHAT_CASE_ADDR="127.0.0.1:9",
        CHAT_STORE="memory",
        CHAT_VOICE_ENDPOINTS=endpoints,
        SHUTDOWN_GRACE_SECONDS=2.0,
        **extra,
    )
    app = ChatApp(settings)
    await app.start()
    return app


@pytest.fixture
async def chat(voice: Voice) -> AsyncIterator[ChatApp]:
    """The chat on the router and the gateway of `voice` (started before any call)."""
    app = await _chat(voice, f"127.0.0.1:{voice.gateway.grpc_port}")
    try:
        yield app
    finally:
        await app.stop()


Connect = Callable[..., Any]


@pytest.fixture
async def connect(chat: ChatApp) -> AsyncIterator[Connect]:
    """`connect(tenant, subject, *roles)`: a wallboard's /agent socket (a supervisor unless
    `roles` say otherwise)."""
    made: list[socketio.AsyncClient] = []

    async def make(tenant: str, subject: str, *roles: str) -> socketio.AsyncClient:
        token = auth.mint(SECRET, tenant, subject, roles or ("supervisor",))
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(
            f"http://127.0.0.1:{chat.http_port}",
            namespaces=["/agent"],
            auth={"token": token},
            transports=["websocket"],
            wait_timeout=10,
        )
        made.append(sio)
        return sio

    yield make
    for sio in made:
        if sio.connected:
            await sio.disconnect()


async def ask(sio: socketio.AsyncClient, event: str, data: Any) -> Any:
    return await sio.call(event, data, namespace="/agent", timeout=TIMEOUT)


@pytest.fixture
async def call(voice: Voice, chat: ChatApp) -> AsyncIterator[tuple[Baresip, Baresip, str]]:
    """A caller connected to agent a1 (after the chat started): (caller, agent's phone, id)."""
    yield await voice.answered_call(DEMO_LINE, 1000)


async def _live(sio: socketio.AsyncClient, contact_id: str) -> dict[str, Any]:
    """The call as the wallboard lists it, once it is listed."""
    for _ in range(100):
        ack = await ask(sio, "live_calls", {})
        assert ack["ok"], ack
        found = [c for c in ack["calls"] if c["contact_id"] == contact_id]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {contact_id} never listed: {ack}")


async def _listen(
    sio: socketio.AsyncClient, phone: Baresip, contact_id: str, mode: str
) -> dict[str, Any]:
    """Listen from the wallboard; the supervisor's phone rings and is answered."""
    asked = asyncio.ensure_future(ask(sio, "listen", {"contact_id": contact_id, "mode": mode}))
    await phone.wait_event("CALL_INCOMING", timeout=20)
    assert not asked.done()  # acked only once the phone is answered
    # The socket is not held up meanwhile: the board's other events are answered.
    listed = await ask(sio, "live_calls", {})
    assert listed["ok"] and not asked.done(), listed
    await phone.command("accept")
    ack: dict[str, Any] = await asyncio.wait_for(asked, TIMEOUT)
    return ack


async def test_a_supervisor_listens_switches_to_whisper_and_leaves(
    voice: Voice, call: tuple[Baresip, Baresip, str], connect: Connect
) -> None:
    caller, agent, contact_id = call
    board = await connect("demo", "sup1")
    listed = await _live(board, contact_id)
    assert listed["agent_id"] == "a1" and listed["started_at"] > 0

    sup = await voice.phone("sup1", tone_hz=1700, tenant="demo", password="pw-sup1")
    ack = await _listen(board, sup, contact_id, "monitor")
    assert ack["ok"] and ack["mode"] == "monitor" and ack["contact_id"] == contact_id, ack
    supervision_id = ack["supervision_id"]
    joined = await voice.events.wait("ContactSupervised", contact_id)
    assert joined[0].action == STARTED and joined[0].mode == MONITOR
    assert joined[0].supervisor_id == "sup1" and joined[0].supervision_id == supervision_id

    # Whisper without redialling: the same phone call, the gateway audits the change.
    changed = await ask(board, "listen_mode", {"supervision_id": supervision_id, "mode": "whisper"})
    assert changed == {"ok": True, "mode": "whisper"}, changed
    await voice.events.wait("ContactSupervised", contact_id, where=lambda e: e.mode == WHISPER)
    assert sup.count("CALL_INCOMING") == 1 and sup.count("CALL_CLOSED") == 0
    bad = await ask(board, "listen_mode", {"supervision_id": supervision_id, "mode": "shout"})
    assert not bad["ok"] and bad["kind"] == "InvalidArgument", bad

    left = await ask(board, "leave_call", {"supervision_id": supervision_id})
    assert left == {"ok": True}, left
    await sup.wait_event("CALL_CLOSED")
    stopped = await voice.events.wait(
        "ContactSupervised", contact_id, where=lambda e: e.action == STOPPED
    )
    assert stopped[0].supervision_id == supervision_id
    # The call goes on; the supervision is gone from this socket.
    await voice.relayed_both_ways(contact_id, 10)
    assert caller.count("CALL_CLOSED") == 0 and agent.count("CALL_CLOSED") == 0
    again = await ask(board, "leave_call", {"supervision_id": supervision_id})
    assert not again["ok"] and again["kind"] == "FailedPrecondition", again


async def test_an_agent_is_refused_and_another_tenant_finds_no_call(
    voice: Voice, call: tuple[Baresip, Baresip, str], connect: Connect
) -> None:
    _, _, contact_id = call
    agent = await connect("demo", "a1", "agent")
    for event, data in (
        ("live_calls", {}),
        ("listen", {"contact_id": contact_id, "mode": "monitor"}),
    ):
        refused = await ask(agent, event, data)
        assert not refused["ok"] and refused["kind"] == "PermissionDenied", refused

    # A supervisor of the tenant whose phone is not registered: refused by the gateway.
    lead = await connect("demo", "lead1")
    unregistered = await ask(lead, "listen", {"contact_id": contact_id, "mode": "monitor"})
    assert not unregistered["ok"] and unregistered["kind"] == "FailedPrecondition", unregistered

    other = await connect("acme", "sup2")
    phone = await voice.phone("sup2", tone_hz=1700, tenant="acme", password="pw-sup2")
    listed = await ask(other, "live_calls", {})
    assert listed == {"ok": True, "calls": []}, listed
    refused = await ask(other, "listen", {"contact_id": contact_id, "mode": "barge"})
    assert not refused["ok"] and refused["kind"] == "NotFound", refused
    assert phone.count("CALL_INCOMING") == 0
    assert not voice.events.of("ContactSupervised", contact_id)


async def test_a_wallboard_that_goes_away_hangs_up_the_supervisors_phone(
    voice: Voice, call: tuple[Baresip, Baresip, str], connect: Connect
) -> None:
    _, _, contact_id = call
    board = await connect("demo", "sup1")
    sup = await voice.phone("sup1", tone_hz=1700, tenant="demo", password="pw-sup1")
    ack = await _listen(board, sup, contact_id, "barge")
    assert ack["ok"] and ack["mode"] == "barge", ack
    await board.disconnect()
    await sup.wait_event("CALL_CLOSED")
    await voice.events.wait("ContactSupervised", contact_id, where=lambda e: e.action == STOPPED)


async def test_the_call_is_found_on_the_gateway_replica_that_holds_it(
    voice: Voice, call: tuple[Baresip, Baresip, str]
) -> None:
    """Two gateway addresses: the first gateway answers NOT_FOUND (it holds no call), the
    second has the call."""
    _, _, contact_id = call
    other = await voice.started_gateway_process("replica-b")
    try:
        endpoints = f"{other.target},127.0.0.1:{voice.gateway.grpc_port}"
        app = await _chat(voice, endpoints)
        try:
            token = auth.mint(SECRET, "demo", "sup1", ("supervisor",))
            sio = socketio.AsyncClient(reconnection=False)
            await sio.connect(
                f"http://127.0.0.1:{app.http_port}",
                namespaces=["/agent"],
                auth={"token": token},
                transports=["websocket"],
                wait_timeout=10,
            )
            try:
                sup = await voice.phone("sup1", tone_hz=1700, tenant="demo", password="pw-sup1")
                ack = await _listen(sio, sup, contact_id, "monitor")
                assert ack["ok"] and ack["mode"] == "monitor", ack
                left = await ask(sio, "leave_call", {"supervision_id": ack["supervision_id"]})
                assert left == {"ok": True}, left
                await sup.wait_event("CALL_CLOSED")
            finally:
                await sio.disconnect()
        finally:
            await app.stop()
    finally:
        other.stop()


async def test_every_chat_replica_lists_the_call(
    voice: Voice, connect: Connect, chat: ChatApp
) -> None:
    """One replica's consumer takes the call's assignment; the other lists the call too."""
    replica = await _chat(voice, f"127.0.0.1:{voice.gateway.grpc_port}")
    try:
        phone = await voice.phone("a1", tone_hz=1000, tenant="demo", password="pw-a1")
        await voice.agent("a1", {"en": 5}, tenant="demo")
        caller = await voice.caller("caller", "+821055550000")
        await caller.command("dial", voice.dial_uri(DEMO_LINE))
        await phone.wait_event("CALL_INCOMING", timeout=20)
        await phone.command("accept")
        created = await voice.events.wait("ContactCreated")
        contact_id = str(created[0].contact.contact_id)
        await voice.events.wait("ContactAssigned", contact_id, timeout=30)
        for app in (chat, replica):
            token = auth.mint(SECRET, "demo", "sup1", ("supervisor",))
            sio = socketio.AsyncClient(reconnection=False)
            await sio.connect(
                f"http://127.0.0.1:{app.http_port}",
                namespaces=["/agent"],
                auth={"token": token},
                transports=["websocket"],
                wait_timeout=10,
            )
            try:
                assert (await _live(sio, contact_id))["agent_id"] == "a1"
            finally:
                await sio.disconnect()
        # The call ends: no replica lists it any more.
        await caller.command("hangup")
        await voice.events.wait("ContactEnded", contact_id, timeout=30)
        board = await connect("demo", "sup1")
        for _ in range(100):
            listed = await ask(board, "live_calls", {})
            if not [c for c in listed["calls"] if c["contact_id"] == contact_id]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the ended call is still listed: {listed}")
    finally:
        await replica.stop()


async def test_the_gateways_are_found_by_their_service_name_past_an_unreachable_one(
    voice: Voice, call: tuple[Baresip, Baresip, str]
) -> None:
    """No gateway listed but one that is gone: the chat resolves CHAT_VOICE_SERVICE (as a
    headless Service's name resolves to every replica) and finds the call on the gateway."""
    _, _, contact_id = call
    gone = f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    app = await _chat(voice, gone, CHAT_VOICE_SERVICE=f"localhost:{voice.gateway.grpc_port}")
    try:
        token = auth.mint(SECRET, "demo", "sup1", ("supervisor",))
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(
            f"http://127.0.0.1:{app.http_port}",
            namespaces=["/agent"],
            auth={"token": token},
            transports=["websocket"],
            wait_timeout=10,
        )
        try:
            sup = await voice.phone("sup1", tone_hz=1700, tenant="demo", password="pw-sup1")
            ack = await _listen(sio, sup, contact_id, "whisper")
            assert ack["ok"] and ack["mode"] == "whisper", ack
            changed = await ask(
                sio, "listen_mode", {"supervision_id": ack["supervision_id"], "mode": "barge"}
            )
            assert changed == {"ok": True, "mode": "barge"}, changed
            left = await ask(sio, "leave_call", {"supervision_id": ack["supervision_id"]})
            assert left == {"ok": True}, left
            await sup.wait_event("CALL_CLOSED")
            # A call no reachable replica holds: one gateway could not be asked, so it may be
            # there: unavailable rather than not found.
            missing = await ask(sio, "listen", {"contact_id": "no-such-call", "mode": "monitor"})
            assert not missing["ok"] and missing["kind"] == "Unavailable", missing
        finally:
            await sio.disconnect()
    finally:
        await app.stop()
