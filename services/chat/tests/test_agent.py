"""The /agent namespace over real Socket.IO: tokens, join, replies reaching the customer."""

from __future__ import annotations

from typing import Any

from switchboard.v1 import contact_pb2, events_pb2

TENANT = "demo"


async def test_assigned_agent_joins_sees_history_and_replies(connect: Any, router: Any) -> None:
    customer, _, first = await connect.conversation()
    contact_id = first["contact_id"]
    await customer.next("message")  # the first message, delivered through the bus
    await router.assigned(contact_id, "agent-1", "이수진")
    await customer.next("status", lambda s: s["state"] == "assigned")
    agent = await connect.agent("agent-1")

    joined = await agent.call("join", {"contact_id": contact_id})

    assert joined["ok"] is True
    assert joined["contact_id"] == contact_id
    assert joined["customer_name"] == "김민지"
    assert joined["language"] == "ko"
    assert [(m["message_id"], m["author"], m["text"]) for m in joined["messages"]] == [
        (f"{contact_id}:initial", "customer", "요금이 두 번 청구되었어요")
    ]

    reply = await agent.call("message", {"contact_id": contact_id, "text": "확인해 드리겠습니다."})

    assert reply["ok"] is True and reply["message_id"]
    seen = await customer.next("message", lambda m: m["message_id"] == reply["message_id"])
    assert seen["author"] == "agent"
    assert seen["agent_name"] == "이수진"
    assert seen["text"] == "확인해 드리겠습니다."
    assert seen["contact_id"] == contact_id
    # The agent's inbox gets the conversation too, including its own reply.
    await agent.next("message", lambda m: m["message_id"] == reply["message_id"])
    [(event, _)] = await router.read(
        f"contact.{TENANT}.chat.message_added", events_pb2.MessageAdded, 1
    )
    assert event.message.author == contact_pb2.AUTHOR_AGENT
    assert event.message.agent_id == "agent-1"

    # And the customer's next message reaches the agent.
    ack = await customer.call("message", {"text": "감사합니다"})
    got = await agent.next("message", lambda m: m["message_id"] == ack["message_id"])
    assert got["author"] == "customer" and got["text"] == "감사합니다"


async def test_join_waits_for_an_assignment_not_yet_consumed(connect: Any, router: Any) -> None:
    _, _, first = await connect.conversation()
    agent = await connect.agent("agent-1")
    # The agent accepted over gRPC; the ContactAssigned is published right after the join.
    await router.assigned(first["contact_id"], "agent-1")

    joined = await agent.call("join", {"contact_id": first["contact_id"]})

    assert joined["ok"] is True


async def test_agent_cannot_join_or_write_to_a_contact_not_assigned_to_them(
    connect: Any, router: Any
) -> None:
    _, _, first = await connect.conversation()
    contact_id = first["contact_id"]
    await router.assigned(contact_id, "agent-1")
    other = await connect.agent("agent-2")
    refusal = f"contact {contact_id} is not assigned to you"

    assert await other.call("join", {"contact_id": contact_id}) == {
        "ok": False,
        "error": refusal,
        "kind": "PermissionDenied",
    }
    assert await other.call("message", {"contact_id": contact_id, "text": "hi"}) == {
        "ok": False,
        "error": refusal,
        "kind": "PermissionDenied",
    }
    # Same agent id in another tenant: still not theirs.
    stranger = await connect.agent("agent-1", tenant="other")
    assert (await stranger.call("join", {"contact_id": contact_id}))["ok"] is False
    unknown = await other.call("join", {"contact_id": "no-such-contact"})
    assert unknown == {
        "ok": False,
        "error": "contact no-such-contact is not assigned to you",
        "kind": "PermissionDenied",
    }


async def test_agent_bad_events_get_error_acks(connect: Any, router: Any) -> None:
    _, _, first = await connect.conversation()
    await router.assigned(first["contact_id"], "agent-1")
    agent = await connect.agent("agent-1")
    assert (await agent.call("join", {"contact_id": first["contact_id"]}))["ok"]

    assert "contact_id" in (await agent.call("join", {}))["error"]
    assert "contact_id" in (await agent.call("join", "x"))["error"]
    assert "contact_id" in (await agent.call("message", {"text": "hi"}))["error"]
    no_text = await agent.call("message", {"contact_id": first["contact_id"]})
    assert no_text["ok"] is False and "text" in no_text["error"]
    big = await agent.call("message", {"contact_id": first["contact_id"], "text": "x" * 4001})
    assert big == {
        "ok": False,
        "error": "message too large: 4001 bytes, limit 4000",
        "kind": "MessageTooLarge",
    }
    assert (await agent.next("error"))["code"] == "message_too_large"


async def test_agent_connect_is_refused_with_the_reason(connect: Any) -> None:
    forged = connect.token("agent-1", secret="not-the-secret")
    assert await connect.refused("/agent", {"token": forged}) == "token signature does not match"
    assert (await connect.refused("/agent", {"token": "garbage"})).startswith("malformed token")
    assert (await connect.refused("/agent", {})).startswith("token")
    assert (await connect.refused("/agent", None)).startswith("token")
    partner = connect.token("partner-1", roles=("partner",))
    assert "team_lead or supervisor role" in await connect.refused("/agent", {"token": partner})
    # Tokens live at most SWITCHBOARD_TOKEN_MAX_LIFETIME_SECONDS (30 days unless set).
    forever = connect.token("agent-1", ttl_seconds=None)
    assert "never expires" in await connect.refused("/agent", {"token": forever})


async def test_supervisor_token_connects(connect: Any) -> None:
    supervisor = await connect.agent("sup-1", roles=("supervisor",))
    assert supervisor.sio.connected
