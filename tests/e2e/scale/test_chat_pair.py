"""Two chat replicas as real processes (the deployment's pair: one durable consumer, state shared
over NATS): a customer on one and the agent on the other talk both ways; then either replica is
killed with SIGKILL, both reconnect to the survivor, find the whole conversation and go on, and
the case records every message once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.testing.agents import AgentClient
from switchboard.testing.processes import ServiceProcess
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc

from ..conftest import Customer, Platform, http_url

TENANT = "acme"
AGENT = "ko-agent"
TIMEOUT = 15.0


class Desk:
    """The agent's /agent socket on one chat replica, recording the messages it is sent."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sio.on("message", self.messages.put_nowait, namespace="/agent")

    @classmethod
    async def open(cls, url: str, secret: str) -> Desk:
        desk = cls()
        await desk.sio.connect(
            url,
            namespaces=["/agent"],
            auth={"token": auth.mint(secret, TENANT, AGENT, ["agent"])},
            transports=["websocket"],
            wait_timeout=10,
        )
        return desk

    async def call(self, event: str, data: dict[str, Any]) -> Any:
        return await self.sio.call(event, data, namespace="/agent", timeout=TIMEOUT)

    async def say(self, contact_id: str, text: str) -> dict[str, Any]:
        reply = await self.call("message", {"contact_id": contact_id, "text": text})
        assert reply["ok"], reply
        return reply  # type: ignore[no-any-return]

    async def next_from_customer(self, text: str) -> dict[str, Any]:
        while True:
            m = await asyncio.wait_for(self.messages.get(), TIMEOUT)
            if m.get("author") == "customer" and m.get("text") == text:
                return m

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


@pytest.fixture
async def chat_pair(platform: Platform, tmp_path: Path) -> AsyncIterator[list[ServiceProcess]]:
    pair = [platform.chat_process(tmp_path / f"chat-{n}.log") for n in (1, 2)]
    try:
        for replica in pair:
            await replica.start()
        yield pair
    finally:
        for replica in pair:
            replica.stop()


async def recorded_texts(platform: Platform, contact_id: str) -> list[str]:
    token = auth.mint(platform.secret, TENANT, "inbox", ["partner"], scopes=["cases:read"])
    async with sb_grpc.channel(platform.case_target, token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
        if not listed.cases:
            return []
        case = await stub.GetCase(case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id))
    return [m.parts[0].text for c in case.contacts for m in c.messages]


@pytest.mark.parametrize("dies", ["customer's replica", "agent's replica"])
async def test_a_conversation_across_two_chat_replicas_survives_either_being_killed(
    platform: Platform, chat_pair: list[ServiceProcess], dies: str
) -> None:
    customers_replica, agents_replica = chat_pair
    ko = AgentClient(platform.router_target, platform.secret, TENANT, AGENT)
    customer = Customer()
    desks: list[Desk] = []
    try:
        await ko.sign_in({"ko": 5}, {"billing": 4}, name="김지은")
        await customer.connect(
            http_url(customers_replica),
            tenant=TENANT,
            name="김민수",
            email="minsu.kim@example.kr",
            language="ko",
            topic="billing",
        )
        said = ["청구서가 두 번 왔어요"]
        ack = await customer.say(said[-1])
        assert ack["ok"], ack
        contact_id = ack["contact_id"]
        await ko.accept(await ko.next_offer())
        await customer.wait_status("assigned")

        desk = await Desk.open(http_url(agents_replica), platform.secret)
        desks.append(desk)
        joined = await desk.call("join", {"contact_id": contact_id})
        assert joined["ok"], joined
        said.append("확인해 드리겠습니다")
        await desk.say(contact_id, said[-1])
        assert (await customer.next_from("agent"))["text"] == said[-1]
        said.append("3월분이에요")
        assert (await customer.say(said[-1]))["ok"]
        await desk.next_from_customer(said[-1])

        victim, survivor = (
            (customers_replica, agents_replica)
            if dies == "customer's replica"
            else (agents_replica, customers_replica)
        )
        victim.kill()
        url = http_url(survivor)

        # Both come back on the survivor: the customer from the last message it saw, the agent
        # with the conversation's history.
        session = await customer.resume(url)
        assert session["contact_id"] == contact_id
        # Nothing was said while it was away, and nothing it was not shown is missing. A message
        # it was shown may come again, and its own last one may come only now: the replica that
        # stored it shows it with its seq, and may be the one killed before it did (the widget
        # shows each message id once).
        resumed = {m["message_id"]: m["text"] for m in session["messages"]}
        assert set(resumed.values()) <= set(said)
        assert set(resumed.values()) | set(customer.seen.values()) == set(said)
        await desk.close()
        desk = await Desk.open(url, platform.secret)
        desks.append(desk)
        joined = await desk.call("join", {"contact_id": contact_id})
        assert joined["ok"], joined
        assert [m["text"] for m in joined["messages"]] == said

        said.append("환불 처리해 드렸습니다")
        await desk.say(contact_id, said[-1])
        assert (await customer.next_from("agent"))["text"] == said[-1]
        said.append("감사합니다")
        assert (await customer.say(said[-1]))["ok"]
        await desk.next_from_customer(said[-1])

        # The whole conversation, once each, in order: as a new page load shows it, as the
        # desk shows it, and as the case records it.
        customer.last_seq = 0
        session = await customer.resume(url)
        assert session["contact_id"] == contact_id
        history = session["messages"]
        assert [m["text"] for m in history] == said
        joined = await desk.call("join", {"contact_id": contact_id})
        assert [m["text"] for m in joined["messages"]] == said

        async def recorded() -> list[str] | None:
            texts = await recorded_texts(platform, contact_id)
            return texts if len(texts) >= len(said) else None

        assert await eventually(recorded, "the case recording every message") == said
    finally:
        for d in desks:
            await d.close()
        await customer.sio.disconnect()
        await ko.close()
