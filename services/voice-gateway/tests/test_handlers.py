"""The call handlers with small fakes of the router and the bus (no sockets are opened): offers
the agent's leg declines without ringing, and a caller leaving the queue."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from switchboard.testing.fakes import FakePublisher
from switchboard.v1 import events_pb2
from switchboard.voice_gateway.calls import Call, Leg, State
from switchboard.voice_gateway.config import NumberPlan, VoiceConfig
from switchboard.voice_gateway.handlers.agent_leg import AgentLeg
from switchboard.voice_gateway.handlers.call_flow import CallFlow
from switchboard.voice_gateway.handlers.gateway import Gateway
from switchboard.voice_gateway.media.prompts import Prompts
from switchboard.voice_gateway.media.rtp import MediaEngine
from switchboard.voice_gateway.notifier import VoiceNotifier
from switchboard.voice_gateway.sip.registrar import Registrar
from switchboard.voice_gateway.sip.transactions import TransactionLayer

PLAN = NumberPlan(number="+8215880001", tenant="demo", queue="general", language="en")


class FakeRouter:
    def __init__(self) -> None:
        self.declined: list[tuple[str, str, str, str]] = []

    async def decline(self, tenant: str, agent_id: str, offer_id: str, reason: str) -> None:
        self.declined.append((tenant, agent_id, offer_id, reason))


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Gateway, CallFlow, AgentLeg, FakeRouter, FakePublisher]:
    router, bus = FakeRouter(), FakePublisher()
    config = VoiceConfig(
        realm="switchboard", phones={("demo", "agent-ko"): "pw"}, numbers={PLAN.number: PLAN}
    )
    gw = Gateway(
        config,
        TransactionLayer("127.0.0.1", "127.0.0.1"),
        MediaEngine("127.0.0.1"),
        Prompts(tmp_path),
        VoiceNotifier(bus),
        router,  # type: ignore[arg-type]
        Registrar(config.realm, config.phones),
        max_calls=10,
        retry_after=30,
        ring_timeout=3.0,
        position_poll=1.0,
    )
    flow = CallFlow(gw)
    return gw, flow, AgentLeg(gw, flow), router, bus


def a_call(gw: Gateway, state: State, contact_id: str = "c1") -> Call:
    call = Call(contact_id, PLAN, "+821012345678", PLAN.number, None, 0, state, queue="general")
    gw.calls[contact_id] = call
    return call


def offer(contact_id: str = "c1", offer_id: str = "o1") -> events_pb2.ContactOffered:
    return events_pb2.ContactOffered(contact_id=contact_id, agent_id="agent-ko", offer_id=offer_id)


async def test_an_offer_for_a_connected_call_is_declined_once(parts: Any) -> None:
    gw, _, leg, router, _ = parts
    a_call(gw, State.CONNECTED)
    await leg.on_offered(offer())
    await leg.on_offered(offer())  # redelivered
    await leg.on_offered(offer("another-replicas-call"))
    assert router.declined == [("demo", "agent-ko", "o1", "call busy")]


async def test_an_offer_to_an_agent_without_a_phone_is_declined_and_the_call_waits(
    parts: Any,
) -> None:
    gw, _, leg, router, _ = parts
    call = a_call(gw, State.QUEUED)
    await leg.on_offered(offer())
    assert call.ring_task is not None
    await call.ring_task
    assert router.declined == [("demo", "agent-ko", "o1", "phone not registered")]
    assert call.state is State.QUEUED and call.agent is None


async def test_a_caller_leaving_the_queue_is_abandoned_and_forgotten(parts: Any) -> None:
    gw, flow, _, _, bus = parts
    call = a_call(gw, State.QUEUED)
    call.queued_at = 1.0
    await flow.caller_gone(call, "caller hung up", bye=False)
    assert call.state is State.ENDED and "c1" not in gw.calls
    [event] = bus.events
    assert isinstance(event, events_pb2.ContactAbandoned)
    assert event.contact_id == "c1" and event.queue == "general"
    await flow.caller_gone(call, "caller hung up", bye=False)  # already ended: nothing more
    assert len(bus.events) == 1


async def test_a_callback_does_not_count_against_the_call_limit(parts: Any) -> None:
    gw, *_ = parts
    a_call(gw, State.QUEUED, "c1")
    a_call(gw, State.CALLBACK, "c2")
    a_call(gw, State.IVR, "c3")
    assert gw.live_calls() == 2


async def test_an_offer_withdrawn_before_it_arrives_never_rings(parts: Any) -> None:
    """The withdrawal handled first (the offer's ContactOffered redelivered after it): the
    phone does not ring and nothing is declined; the call stays queued for the next offer."""
    gw, _, leg, router, _ = parts
    call = a_call(gw, State.QUEUED)
    await leg.on_withdrawn(
        events_pb2.ContactOfferWithdrawn(contact_id="c1", offer_id="o1", reason="accept timeout")
    )
    await leg.on_offered(offer())
    assert call.ring_task is None and call.withdrawals == {}
    assert router.declined == [] and call.state is State.QUEUED
    # The next offer rings (here: declined, the agent has no phone registered).
    await leg.on_offered(offer(offer_id="o2"))
    assert call.ring_task is not None
    await call.ring_task
    assert router.declined == [("demo", "agent-ko", "o2", "phone not registered")]


class FakePrompts:
    def sequence(self, names: list[str], payload_type: int, language: str = "en") -> bytes:
        return b"\xff" * 160 * len(names)


class FakeRtp:
    """A leg's media as `Gateway.play` uses it: a prompt's future, cancelled when stopped."""

    def __init__(self) -> None:
        self.playing: asyncio.Future[None] | None = None

    def play(self, audio: bytes, loop: bool = False) -> asyncio.Future[None]:
        self.stop_playing()
        self.playing = asyncio.get_running_loop().create_future()
        return self.playing

    def stop_playing(self) -> None:
        if self.playing is not None and not self.playing.done():
            self.playing.cancel()

    def close(self) -> None:
        self.stop_playing()


def a_call_hearing_prompts(gw: Gateway) -> tuple[Call, FakeRtp, list[str]]:
    gw.prompts = FakePrompts()  # type: ignore[assignment]
    call = a_call(gw, State.IVR)
    rtp = FakeRtp()
    call.caller = Leg(SimpleNamespace(call_id="caller-dialog"), rtp)  # type: ignore[arg-type]
    return call, rtp, []


async def test_a_prompt_stopped_or_replaced_ends_and_the_call_flow_goes_on(parts: Any) -> None:
    gw = parts[0]
    call, rtp, steps = a_call_hearing_prompts(gw)

    async def flow() -> None:
        await gw.play(call, ["welcome"])
        steps.append("menu")

    task = call.spawn(flow())
    await asyncio.sleep(0)
    rtp.stop_playing()  # a key pressed over the prompt, or another prompt replacing it
    await task
    assert steps == ["menu"]


async def test_a_call_task_cancelled_during_a_prompt_stops_there(parts: Any) -> None:
    gw = parts[0]
    call, _, steps = a_call_hearing_prompts(gw)

    async def flow() -> None:
        await gw.play(call, ["welcome"])
        steps.append("menu")  # a caller who hung up must not hear the menu, nor be queued

    task = call.spawn(flow())
    await asyncio.sleep(0)
    call.cancel_tasks()  # what the caller hanging up, or the gateway stopping, does
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == []


async def test_a_callback_chosen_is_kept_when_the_gateway_stops_during_its_confirmation(
    parts: Any,
) -> None:
    gw, flow, _, _, bus = parts
    call, _, _ = a_call_hearing_prompts(gw)
    call.state = State.QUEUED
    task = call.spawn(flow._choose_callback(call))
    await asyncio.sleep(0)  # "you will be called back; goodbye" is playing
    call.cancel_tasks()  # the gateway stops: it hangs up on the caller and cancels the call
    with pytest.raises(asyncio.CancelledError):
        await task
    [event] = bus.events
    assert isinstance(event, events_pb2.ContactCreated)
    assert event.contact.contact_id == "c1" and event.contact.callback
    assert call.caller is None
