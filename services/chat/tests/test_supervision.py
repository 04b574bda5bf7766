"""Supervisors watching live chats over real Socket.IO: read-only watching of both sides, a
private note that reaches the agent's inbox and never the customer, each act published for the
case's audit trail, and who may watch what."""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.v1 import events_pb2

TENANT = "demo"
SUPERVISED = f"contact.{TENANT}.chat.supervised"
NOTE = "고객에게 환불 규정을 먼저 안내하세요"


def record_everything(client: Any) -> list[tuple[str, Any]]:
    """Every event the server emits to `client`, whatever its name."""
    seen: list[tuple[str, Any]] = []

    async def anything(event: str, data: Any = None) -> None:
        seen.append((event, data))

    client.sio.on("*", anything, namespace=client.namespace)
    for event in client.EVENTS + client.EVENTS_EXTRA:
        client.sio.on(event, _also(client, event, seen), namespace=client.namespace)
    return seen


def _also(client: Any, event: str, seen: list[tuple[str, Any]]) -> Any:
    async def record(data: Any = None) -> None:
        seen.append((event, data))
        client.received[event].put_nowait(data)

    return record


async def published(router: Any, count: int) -> list[Any]:
    """The first `count` supervision acts on the bus, once there are that many."""

    async def enough() -> list[Any]:
        while True:
            acts = await router.read(SUPERVISED, events_pb2.ContactSupervised, count)
            if len(acts) >= count:
                return list(acts)
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(enough(), 10)


async def live_chat(connect: Any, router: Any) -> tuple[Any, Any, str]:
    """A customer chatting with agent-1, who has joined: (customer, agent, contact_id)."""
    customer, _, first = await connect.conversation()
    contact_id = first["contact_id"]
    await customer.next("message")
    await router.assigned(contact_id, "agent-1", "이수진")
    await customer.next("status", lambda s: s["state"] == "assigned")
    agent = await connect.agent("agent-1")
    assert (await agent.call("join", {"contact_id": contact_id}))["ok"]
    return customer, agent, contact_id


async def test_supervisor_watches_both_sides_and_whispers_to_the_agent_alone(
    connect: Any, router: Any
) -> None:
    customer, agent, contact_id = await live_chat(connect, router)
    customer_saw = record_everything(customer)
    agent.sio.on("supervisor_note", agent._recorder("supervisor_note"), namespace="/agent")
    supervisor = await connect.agent("sup-1", roles=("supervisor",))

    watched = await supervisor.call("supervise", {"contact_id": contact_id})

    assert watched["ok"] is True, watched
    assert (watched["customer_name"], watched["agent_id"]) == ("김민지", "agent-1")
    assert [m["author"] for m in watched["messages"]] == ["customer"]
    # Both sides, live.
    asked = await customer.call("message", {"text": "환불 되나요?"})
    seen = await supervisor.next("message", lambda m: m["message_id"] == asked["message_id"])
    assert seen["author"] == "customer"
    answered = await agent.call("message", {"contact_id": contact_id, "text": "확인하겠습니다"})
    seen = await supervisor.next("message", lambda m: m["message_id"] == answered["message_id"])
    assert (seen["author"], seen["text"]) == ("agent", "확인하겠습니다")

    for empty in ({"contact_id": contact_id}, {"contact_id": contact_id, "text": "  "}):
        assert (await supervisor.call("whisper", empty))["kind"] == "InvalidArgument"
    whispered = await supervisor.call("whisper", {"contact_id": contact_id, "text": NOTE})

    assert whispered["ok"] is True, whispered
    note = await agent.next("supervisor_note")
    assert (note["contact_id"], note["text"], note["supervisor_id"]) == (contact_id, NOTE, "sup-1")
    assert note["note_id"] == whispered["note"]["note_id"]
    # The agent's next message reaches the customer after the note: by then the note would have.
    later = await agent.call("message", {"contact_id": contact_id, "text": "잠시만요"})
    await customer.next("message", lambda m: m["message_id"] == later["message_id"])
    assert customer_saw and not [e for e in customer_saw if NOTE in repr(e[1])]
    assert "supervisor_note" not in {event for event, _ in customer_saw}

    left = await supervisor.call("unsupervise", {"contact_id": contact_id})
    assert left == {"ok": True}
    after = await customer.call("message", {"text": "감사합니다"})
    await agent.next("message", lambda m: m["message_id"] == after["message_id"])
    queued = supervisor.received["message"]
    still = [queued.get_nowait() for _ in range(queued.qsize())]
    assert after["message_id"] not in {m["message_id"] for m in still}  # no longer in the room
    refused = await supervisor.call("whisper", {"contact_id": contact_id, "text": NOTE})
    assert refused["kind"] == "FailedPrecondition"
    for odd in ([contact_id], {"id": 1}, None):
        assert (await supervisor.call("whisper", {"contact_id": odd, "text": NOTE}))["kind"] == (
            "FailedPrecondition"
        )
        assert (await supervisor.call("unsupervise", {"contact_id": odd}))["kind"] == (
            "FailedPrecondition"
        )

    acts = await published(router, 3)
    assert [(e.action, e.supervisor_id, e.agent_id, e.text) for e, _ in acts] == [
        (events_pb2.SUPERVISION_ACTION_STARTED, "sup-1", "agent-1", ""),
        (events_pb2.SUPERVISION_ACTION_NOTE, "sup-1", "agent-1", NOTE),
        (events_pb2.SUPERVISION_ACTION_STOPPED, "sup-1", "agent-1", ""),
    ]
    assert {e.contact_id for e, _ in acts} == {contact_id}


async def test_only_a_supervisor_of_the_tenant_may_watch(connect: Any, router: Any) -> None:
    customer, agent, contact_id = await live_chat(connect, router)
    colleague = await connect.agent("agent-2")
    elsewhere = await connect.agent("sup-9", roles=("supervisor",), tenant="acme")
    supervisor = await connect.agent("sup-1", roles=("supervisor",))

    by_agent = await colleague.call("supervise", {"contact_id": contact_id})
    assert by_agent["kind"] == "PermissionDenied"
    assert (await agent.call("supervise", {"contact_id": contact_id}))["kind"] == (
        "PermissionDenied"
    )
    assert (await colleague.call("live_chats", {}))["kind"] == "PermissionDenied"
    by_stranger = await elsewhere.call("supervise", {"contact_id": contact_id})
    assert by_stranger["kind"] == "NotFound"
    for who in (colleague, elsewhere, supervisor):  # nobody watching: no note
        refused = await who.call("whisper", {"contact_id": contact_id, "text": NOTE})
        assert refused["kind"] == "FailedPrecondition"
    for unknown in ("nope", "*", "c.demo.>", "", None):
        refused = await supervisor.call("supervise", {"contact_id": unknown})
        assert refused["kind"] == "NotFound", (unknown, refused)

    # Neither the refused nor the stranger joined the chat's room.
    ack = await customer.call("message", {"text": "여보세요"})
    await agent.next("message", lambda m: m["message_id"] == ack["message_id"])
    await asyncio.sleep(0)
    assert colleague.received["message"].empty() and elsewhere.received["message"].empty()

    # A chat no agent has yet cannot be watched.
    _, _, waiting = await connect.conversation(name="이서연")
    queued = await supervisor.call("supervise", {"contact_id": waiting["contact_id"]})
    assert queued["kind"] == "FailedPrecondition"

    # The refusals published nothing: the first act on the bus is the first allowed one.
    assert (await supervisor.call("supervise", {"contact_id": contact_id}))["ok"]
    [(first, _)] = await router.read(SUPERVISED, events_pb2.ContactSupervised, 1)
    assert (first.supervisor_id, first.action) == ("sup-1", events_pb2.SUPERVISION_ACTION_STARTED)


async def test_a_supervisor_who_goes_away_stops_watching(connect: Any, router: Any) -> None:
    _, _, contact_id = await live_chat(connect, router)
    lead = await connect.agent("lead-1", roles=("team_lead",))
    assert (await lead.call("supervise", {"contact_id": contact_id}))["ok"]

    await lead.close()

    acts = await published(router, 2)
    assert [(e.action, e.supervisor_id) for e, _ in acts] == [
        (events_pb2.SUPERVISION_ACTION_STARTED, "lead-1"),
        (events_pb2.SUPERVISION_ACTION_STOPPED, "lead-1"),
    ]
