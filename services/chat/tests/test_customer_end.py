"""The customer ending a chat, and the queue position's wait estimate (small fakes, no network)."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.chat.adapters.conversations import InMemoryConversations
from switchboard.chat.adapters.router_client import Position
from switchboard.chat.domain.commands import CustomerMessage, Rating
from switchboard.chat.domain.model import CustomerProfile
from switchboard.chat.handlers import Chat
from switchboard.chat.notifier import ChatNotifier
from switchboard.core import events
from switchboard.core.auth import Principal
from switchboard.testing.fakes import FakePublisher
from switchboard.v1 import contact_pb2, events_pb2

TENANT = "demo"
PROFILE = CustomerProfile(TENANT, "김민지", "ko", "minji@example.com", "billing", "v1")


class Delivery:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, str, dict[str, Any]]] = []

    async def to_customer(
        self, tenant: str, visitor_id: str, event: str, data: dict[str, Any]
    ) -> None:
        self.emitted.append((f"visitor:{visitor_id}", event, data))

    async def to_agents(self, contact_id: str, event: str, data: dict[str, Any]) -> None:
        self.emitted.append((f"contact:{contact_id}", event, data))


class Router:
    """The router's answers the chat asks for: a place in the queue and whether its wait
    estimate is measured."""

    def __init__(self, answered: bool, estimate: int | None = 40) -> None:
        self.answered = answered
        self.estimate = estimate
        self.asked: list[str] = []

    async def position(self, tenant: str, contact_id: str) -> Position:
        return Position(2, 3, self.estimate, "waiting", "billing-ko")

    async def wait_is_measured(self, tenant: str, queue: str) -> bool:
        self.asked.append(queue)
        return self.answered


@pytest.fixture
def bus() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def delivery() -> Delivery:
    return Delivery()


def make_chat(bus: FakePublisher, delivery: Delivery, router: Router | None = None) -> Chat:
    return Chat(
        InMemoryConversations(),
        ChatNotifier(bus),
        delivery,
        4000,
        router=router,  # type: ignore[arg-type]
    )


async def test_ending_a_waiting_chat_abandons_it(bus: FakePublisher, delivery: Delivery) -> None:
    chat = make_chat(bus, delivery, Router(answered=False))
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("여보세요"))

    assert await chat.customer_end(PROFILE) == sent.contact_id

    [abandoned] = bus.of(events_pb2.ContactAbandoned)
    assert abandoned.contact_id == sent.contact_id and abandoned.queue == "billing-ko"
    assert abandoned.meta.tenant == TENANT and abandoned.meta.source == "chat"
    assert bus.of(events_pb2.ContactEnded) == []
    ended = {"state": "ended", "contact_id": sent.contact_id}
    assert ("visitor:v1", "status", ended) in delivery.emitted
    assert (f"contact:{sent.contact_id}", "status", ended) in delivery.emitted
    # Nothing is open any more; the next message starts another chat.
    assert await chat.customer_end(PROFILE) is None
    again = await chat.customer_message(PROFILE, "v1", CustomerMessage("다시요"))
    assert again.contact_id != sent.contact_id


async def test_ending_an_answered_chat_ends_it_for_the_agent(
    bus: FakePublisher, delivery: Delivery
) -> None:
    chat = make_chat(bus, delivery)
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("여보세요"))
    await chat.on_contact_assigned(
        events_pb2.ContactAssigned(
            meta=events.new_meta(TENANT, contact_pb2.CHANNEL_CHAT, "router"),
            contact_id=sent.contact_id,
            agent_id="ko-1",
            agent_name="이수진",
        )
    )

    await chat.customer_end(PROFILE)

    [ended] = bus.of(events_pb2.ContactEnded)
    assert ended.contact_id == sent.contact_id and ended.agent_id == "ko-1"
    assert ended.reason == events_pb2.END_REASON_CUSTOMER_LEFT
    assert ended.queue == "general"  # no router to ask: the queue chats are created in
    assert bus.of(events_pb2.ContactAbandoned) == []
    # The bus brings the event back: it is not announced a second time.
    before = len(delivery.emitted)
    await chat.on_contact_ended(ended)
    assert len(delivery.emitted) == before


async def test_an_agent_cannot_reply_after_the_customer_ended(
    bus: FakePublisher, delivery: Delivery
) -> None:
    chat = make_chat(bus, delivery)
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("여보세요"))
    await chat.on_contact_assigned(
        events_pb2.ContactAssigned(
            meta=events.new_meta(TENANT, contact_pb2.CHANNEL_CHAT, "router"),
            contact_id=sent.contact_id,
            agent_id="ko-1",
        )
    )
    await chat.customer_end(PROFILE)
    with pytest.raises(Exception, match="has ended"):
        await chat.send_agent_message(TENANT, sent.contact_id, "ko-1", "안녕하세요")


async def test_the_agent_still_reads_the_ended_chat_and_its_rating(
    bus: FakePublisher, delivery: Delivery
) -> None:
    # The agent's page opens the conversation again (a reload) after the customer ended and
    # rated it: during wrap-up it is theirs to read, marked ended, with the score.
    chat = make_chat(bus, delivery)
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("여보세요"))
    await chat.on_contact_assigned(
        events_pb2.ContactAssigned(
            meta=events.new_meta(TENANT, contact_pb2.CHANNEL_CHAT, "router"),
            contact_id=sent.contact_id,
            agent_id="ko-1",
        )
    )
    await chat.customer_end(PROFILE)
    await chat.rate(PROFILE, Rating(sent.contact_id, 4))

    agent = Principal(TENANT, "ko-1", frozenset({"agent"}))
    joined = await chat.agent_join(agent, sent.contact_id)

    assert joined.ended and joined.rated and joined.rating == 4
    assert [m.text for m in joined.messages] == ["여보세요"]
    chat.assignment_wait = 0.0
    other = Principal(TENANT, "ko-2", frozenset({"agent"}))
    with pytest.raises(Exception, match="not assigned to you"):
        await chat.agent_join(other, sent.contact_id)
    # Wrapped up (the router's ContactEnded with the code): no longer theirs to open.
    await chat.on_contact_ended(
        events_pb2.ContactEnded(
            meta=events.new_meta(TENANT, contact_pb2.CHANNEL_CHAT, "router"),
            contact_id=sent.contact_id,
            agent_id="ko-1",
            reason=events_pb2.END_REASON_COMPLETED,
            wrap_up_code="resolved",
        )
    )
    with pytest.raises(Exception, match="not assigned to you"):
        await chat.agent_join(agent, sent.contact_id)


@pytest.mark.parametrize(("answered", "shown"), [(True, True), (False, False)])
async def test_the_wait_estimate_rests_on_answered_contacts(
    bus: FakePublisher, delivery: Delivery, answered: bool, shown: bool
) -> None:
    router = Router(answered=answered)
    chat = make_chat(bus, delivery, router)
    await chat.customer_message(PROFILE, "v1", CustomerMessage("여보세요"))

    status = await chat.queue_position(PROFILE)

    assert status is not None and status["position"] == 2
    assert ("estimated_wait_seconds" in status) is shown
    if shown:
        assert status["estimated_wait_seconds"] == 40
    assert router.asked == ["billing-ko"]
