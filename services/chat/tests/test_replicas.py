"""Two chat replicas on one NATS: sockets on either see the same conversation, and a replica
restart loses nothing."""

from __future__ import annotations

from typing import Any

TENANT = "demo"


async def test_an_agent_on_one_replica_and_a_customer_on_another_talk(
    replicas: Any, router: Any
) -> None:
    (_a, on_a), (_b, on_b) = await replicas.start(), await replicas.start()
    if True:
        customer, _, first = await on_b.conversation()
        contact_id = first["contact_id"]
        await router.assigned(contact_id)
        await customer.next("status", lambda s: s["state"] == "assigned")
        agent = await on_a.agent()
        joined = await agent.call("join", {"contact_id": contact_id})
        assert joined["ok"], joined

        reply = await agent.call(
            "message", {"contact_id": contact_id, "text": "무엇을 도와드릴까요?"}
        )
        assert reply["ok"], reply
        got = await customer.next("message", lambda m: m["message_id"] == reply["message_id"])
        assert got["text"] == "무엇을 도와드릴까요?" and got["author"] == "agent"

        ack = await customer.call("message", {"text": "환불해 주세요"})
        got = await agent.next("message", lambda m: m["message_id"] == ack["message_id"])
        assert got["text"] == "환불해 주세요"
        # The customer's typing on B reaches the agent on A.
        await customer.call("typing", {"typing": True})
        assert (await agent.next("typing"))["typing"] is True


async def test_resume_after_a_drop_replays_what_was_missed_even_across_a_restart(
    replicas: Any, router: Any
) -> None:
    a, on_a = await replicas.start()
    customer, _, first = await on_a.conversation()
    contact_id = first["contact_id"]
    initial = await customer.next("message")
    await router.assigned(contact_id)
    await customer.next("status", lambda s: s["state"] == "assigned")
    token = customer.token
    await customer.close()  # the network drops

    # While the customer is away, the agent writes twice, and the replica restarts.
    chat_a = a.chat
    assert chat_a is not None
    one = await chat_a.send_agent_message(TENANT, contact_id, "agent-1", "확인해 보겠습니다")
    two = await chat_a.send_agent_message(TENANT, contact_id, "agent-1", "환불 처리되었습니다")
    agent = await on_a.agent()
    await agent.call("join", {"contact_id": contact_id})
    await on_a.close()
    await a.stop()

    _b, on_b = await replicas.start()
    if True:
        # The widget reconnects with its token and the last seq it saw.
        again = await on_b.customer(token=token, since=initial["seq"])
        session = await again.next("session")
        assert session["contact_id"] == contact_id
        assert [m["message_id"] for m in session["messages"]] == [one.message_id, two.message_id]
        assert all(m["seq"] > initial["seq"] for m in session["messages"])
        assert await again.next("status") == {"state": "assigned", "agent_name": "이수진"}
        # A message re-sent with the same client id after the drop is one message, not two.
        first_try = await again.call("message", {"text": "감사합니다", "client_id": "c-0000001"})
        second_try = await again.call("message", {"text": "감사합니다", "client_id": "c-0000001"})
        assert first_try["message_id"] == second_try["message_id"]
        await again.next("message", lambda m: m["message_id"] == first_try["message_id"])
        full = await on_b.customer(token=token)
        history = (await full.next("session"))["messages"]
        assert [m["text"] for m in history].count("감사합니다") == 1
        assert history[0]["message_id"] == f"{contact_id}:initial"
