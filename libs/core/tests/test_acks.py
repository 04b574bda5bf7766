"""Every JetStream ack reaches its caller: an error reply fails the future with the typed error
(nats-py's own publish_async loses it and the future never resolves), and an ack that never
comes fails the future at its deadline."""

from __future__ import annotations

import asyncio
import os
import signal

import nats.js.errors
import pytest
from nats.js import api

from switchboard.core.acks import AckPublisher, AckUnknown
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.signals import freeze


async def test_an_error_reply_fails_the_future(bus: Bus) -> None:
    await bus.js.add_stream(api.StreamConfig(name="ACKS", subjects=["acks.>"]))
    acks = AckPublisher(bus.nc, timeout=5)
    first = await acks.publish("acks.x", b"1", {"Nats-Expected-Last-Sequence": "0"})
    assert (await first).seq == 1
    stale = await acks.publish("acks.x", b"2", {"Nats-Expected-Last-Sequence": "0"})
    with pytest.raises(nats.js.errors.APIError) as err:
        await asyncio.wait_for(stale, 5)  # would hang with JetStreamContext.publish_async
    assert err.value.err_code == 10071  # wrong last sequence
    assert acks.pending == 0


async def test_an_ack_that_never_comes_fails_at_its_deadline(nats_server: NatsServer) -> None:
    bus = await Bus.connect(nats_server.url, source="acks-test")
    await bus.js.add_stream(api.StreamConfig(name="ACKS", subjects=["acks.>"]))
    acks = AckPublisher(bus.nc, timeout=0.5)
    assert nats_server.proc is not None
    freeze(nats_server.proc.pid)  # the server takes the bytes and never answers
    try:
        future = await acks.publish("acks.x", b"1")
        with pytest.raises(AckUnknown, match="outcome unknown"):
            await asyncio.wait_for(future, 5)
    finally:
        os.kill(nats_server.proc.pid, signal.SIGCONT)
        await bus.drain()


async def test_publish_async_of_the_bus_has_a_deadline(bus: Bus) -> None:
    """No stream listens on the subject: the ack is refused at once, never awaited forever."""
    await bus.js.add_stream(api.StreamConfig(name="ACKS", subjects=["acks.>"]))
    future = await bus.acks.publish("nothing.listens.here", b"1", timeout=1)
    with pytest.raises((nats.js.errors.NoStreamResponseError, AckUnknown)):
        await asyncio.wait_for(future, 5)


async def test_publish_all_returns_every_ack_in_order(bus: Bus) -> None:
    await bus.js.add_stream(api.StreamConfig(name="ACKS", subjects=["acks.>"]))
    acks = AckPublisher(bus.nc, timeout=5)
    messages = [(f"acks.{i}", str(i).encode(), {"Nats-Msg-Id": f"m{i}"}) for i in range(50)]
    stored = await acks.publish_all(messages)
    assert [a.seq for a in stored] == list(range(1, 51))
    assert all(a.stream == "ACKS" and not a.duplicate for a in stored)
    again = await acks.publish_all(messages[:2])
    assert [(a.seq, a.duplicate) for a in again] == [(1, True), (2, True)]
    assert acks.pending == 0


async def test_publish_all_fails_with_the_first_error(bus: Bus) -> None:
    await bus.js.add_stream(api.StreamConfig(name="ACKS", subjects=["acks.>"]))
    acks = AckPublisher(bus.nc, timeout=5)
    messages = [("acks.x", b"1", None), ("acks.y", b"2", {"Nats-Expected-Last-Sequence": "0"})]
    with pytest.raises(nats.js.errors.APIError) as err:
        await asyncio.wait_for(acks.publish_all(messages), 5)
    assert err.value.err_code == 10071  # wrong last sequence
    assert acks.pending == 0


async def test_publish_all_fails_at_its_deadline(nats_server: NatsServer) -> None:
    bus = await Bus.connect(nats_server.url, source="acks-test")
    await bus.js.add_stream(api.StreamConfig(name="ACKS", subjects=["acks.>"]))
    acks = AckPublisher(bus.nc, timeout=0.5)
    assert nats_server.proc is not None
    freeze(nats_server.proc.pid)
    try:
        with pytest.raises(AckUnknown, match=r"acks\.x.*outcome unknown"):
            await asyncio.wait_for(acks.publish_all([("acks.x", b"1", None)] * 3), 5)
        assert acks.pending == 0
    finally:
        os.kill(nats_server.proc.pid, signal.SIGCONT)
        await bus.drain()


async def test_send_all_returns_at_once_one_future_for_every_ack(bus: Bus) -> None:
    """The messages are sent without waiting; one future stands for all their acks (in order),
    or for the first error."""
    await bus.js.add_stream(api.StreamConfig(name="ACKS", subjects=["acks.>"]))
    acks = AckPublisher(bus.nc, timeout=5)
    future = await acks.send_all([(f"acks.{i}", str(i).encode(), None) for i in range(20)])
    assert acks.pending == 20
    stored = await asyncio.wait_for(future, 5)
    assert [a.seq for a in stored] == list(range(1, 21))
    assert acks.pending == 0
    stale = await acks.send_all(
        [("acks.x", b"1", None), ("acks.y", b"2", {"Nats-Expected-Last-Sequence": "0"})]
    )
    with pytest.raises(nats.js.errors.APIError) as err:
        await asyncio.wait_for(stale, 5)
    assert err.value.err_code == 10071  # wrong last sequence
    await asyncio.sleep(0.2)  # the first message's ack, which nobody waits for any more
    assert acks.pending == 0
    assert (await acks.send_all([])).result() == []
