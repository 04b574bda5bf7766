"""The inbox's view of contacts: the first-response SLA by the channel a contact is answered on,
replies' delivery, and contacts the customer ended shown ended until wrap-up."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from switchboard.chat.inbox import wire
from switchboard.chat.inbox.desk import Desk, DeskContact
from switchboard.chat.inbox.directory import AgentProfile
from switchboard.chat.inbox.service import Inbox
from switchboard.chat.notifier import OFFLINE_SUBJECT
from switchboard.v1 import case_pb2, contact_pb2, events_pb2

AT = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)


def chat(conversation_id: str) -> contact_pb2.Contact:
    c = contact_pb2.Contact(
        contact_id="c-1", channel=contact_pb2.CHANNEL_CHAT, conversation_id=conversation_id
    )
    c.created_at.FromDatetime(AT)
    return c


def test_a_live_chat_has_the_chat_minute() -> None:
    data = wire.contact(chat("visitor-1"))
    assert data["reply_channel"] == "chat"
    assert data["sla_due"] == AT_MS + 60_000


def test_an_offline_chat_message_is_answered_by_email_with_the_email_day() -> None:
    data = wire.contact(chat("offline:visitor-1"))
    assert data["reply_channel"] == "email"
    assert data["sla_due"] == AT_MS + 24 * 3600 * 1000


def test_a_restored_offline_chat_message_keeps_the_email_day() -> None:
    case = case_pb2.Case(case_id="case-1")
    k = case_pb2.CaseContact(
        contact_id="c-1", channel=contact_pb2.CHANNEL_CHAT, subject=OFFLINE_SUBJECT
    )
    k.created_at.FromDatetime(AT)
    data = wire.restored_contact(case, k)
    assert data["reply_channel"] == "email"
    assert data["sla_due"] == AT_MS + 24 * 3600 * 1000
    live = case_pb2.CaseContact(contact_id="c-2", channel=contact_pb2.CHANNEL_CHAT)
    live.created_at.FromDatetime(AT)
    assert wire.restored_contact(case, live)["sla_due"] == AT_MS + 60_000
    # A portal message has a subject of its own; its conversation id says it is answered by email.
    portal = case_pb2.CaseContact(
        contact_id="c-3",
        channel=contact_pb2.CHANNEL_CHAT,
        subject="주소 변경",
        conversation_id="offline:portal:c-3",
    )
    portal.created_at.FromDatetime(AT)
    assert wire.restored_contact(case, portal)["reply_channel"] == "email"


async def test_delivery_status_reaches_the_reply_and_never_goes_back() -> None:
    emitted: list[tuple[str, dict[str, Any]]] = []

    async def emit(event: str, data: dict[str, Any]) -> None:
        emitted.append((event, data))

    async def surge_of(tenant: str) -> dict[str, Any]:
        return {"level": 0, "queue": ""}

    inbox = Inbox(
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        "secret",
        None,
        "",
        "",
        surge_of=surge_of,
    )
    desk = Desk(
        AgentProfile("demo", "ko-1", "이수진", "agent", "ko"), cast(Any, None), emit, surge_of
    )
    reply = {"id": "cmd-1", "text": "확인해 보겠습니다.", "delivery": "queued"}
    desk.contacts["c-1"] = DeskContact({"contact_id": "c-1", "channel": "email"}, 0, [reply])
    inbox.desks[("demo", "ko-1")] = desk

    def status(state: int, tenant: str = "demo") -> events_pb2.DeliveryStatus:
        return events_pb2.DeliveryStatus(
            meta=events_pb2.EventMeta(tenant=tenant),
            command_id="cmd-1",
            contact_id="c-1",
            state=state,  # type: ignore[arg-type]
            detail="250 ok",
        )

    await inbox.on_delivery_status(status(events_pb2.DELIVERY_STATE_FAILED, tenant="other"))
    assert reply["delivery"] == "queued" and emitted == []
    await inbox.on_delivery_status(status(events_pb2.DELIVERY_STATE_DELIVERED))
    assert reply["delivery"] == "delivered"
    [(event, data)] = emitted
    assert event == "contact" and data["replies"][0]["delivery"] == "delivered"
    await inbox.on_delivery_status(status(events_pb2.DELIVERY_STATE_SENT))  # late
    assert reply["delivery"] == "delivered" and len(emitted) == 1


def desk_of(emitted: list[tuple[str, dict[str, Any]]], backends: Any = None) -> Desk:
    async def emit(event: str, data: dict[str, Any]) -> None:
        emitted.append((event, data))

    async def surge_of(tenant: str) -> dict[str, Any]:
        return {"level": 0, "queue": ""}

    return Desk(AgentProfile("demo", "ko-1", "이수진", "agent", "ko"), backends, emit, surge_of)


def inbox_with(desk: Desk, chat: Any = None) -> Inbox:
    inbox = Inbox(
        chat, cast(Any, None), cast(Any, None), "secret", None, "", "", surge_of=desk.surge_of
    )
    inbox.desks[("demo", "ko-1")] = desk
    return inbox


def live_chat(contact_id: str) -> DeskContact:
    return DeskContact({"contact_id": contact_id, "channel": "chat", "reply_channel": "chat"}, 0)


async def test_a_contact_the_customer_ended_stays_on_the_desk_marked_ended() -> None:
    emitted: list[tuple[str, dict[str, Any]]] = []
    desk = desk_of(emitted)
    desk.contacts["c-1"] = live_chat("c-1")
    inbox = inbox_with(desk)

    def ended(contact_id: str, tenant: str = "demo") -> events_pb2.ContactEnded:
        return events_pb2.ContactEnded(
            meta=events_pb2.EventMeta(tenant=tenant),
            contact_id=contact_id,
            agent_id="ko-1",
            reason=events_pb2.END_REASON_CUSTOMER_LEFT,
        )

    await inbox.on_contact_ended(ended("c-1", tenant="other"))
    await inbox.on_contact_ended(ended("c-2"))
    assert emitted == [] and not desk.contacts["c-1"].ended
    await inbox.on_contact_ended(ended("c-1"))
    await inbox.on_contact_ended(ended("c-1"))  # the bus delivers it again
    [(event, data)] = emitted
    assert event == "contact" and data["contact_id"] == "c-1" and data["ended"] is True
    assert [c["ended"] for c in desk.state()["contacts"]] == [True]


async def test_a_chat_ended_through_another_replica_shows_ended_on_sign_in() -> None:
    class Store:
        async def get(self, tenant: str, contact_id: str) -> Any:
            return {"c-1": SimpleNamespace(ended=True), "c-2": SimpleNamespace(ended=False)}.get(
                contact_id
            )

    desk = desk_of([])
    for contact_id in ("c-1", "c-2", "c-3"):
        desk.contacts[contact_id] = live_chat(contact_id)
    inbox = inbox_with(desk, SimpleNamespace(store=Store()))

    await inbox._mark_ended(desk)

    assert {c["contact_id"]: c["ended"] for c in desk.state()["contacts"]} == {
        "c-1": True,
        "c-2": False,
        "c-3": False,
    }


async def test_a_rebuilt_desk_shows_a_contact_ended_but_not_wrapped_up_as_ended() -> None:
    case = case_pb2.Case(case_id="case-1")
    for contact_id, status in (("c-1", "ended"), ("c-2", "assigned")):
        k = case.contacts.add(contact_id=contact_id, channel=contact_pb2.CHANNEL_CHAT)
        k.status = status

    class Cases:
        async def ListCases(self, request: case_pb2.ListCasesRequest) -> Any:
            return case_pb2.ListCasesResponse(cases=[case])

        async def GetCase(self, request: case_pb2.GetCaseRequest) -> case_pb2.Case:
            return case

    desk = desk_of([], SimpleNamespace(case=Cases()))

    assert await desk._restore(["c-1", "c-2"]) == []

    assert desk.contacts["c-1"].ended and not desk.contacts["c-2"].ended


def test_every_case_status_the_desk_sends_has_a_named_choice_in_every_language() -> None:
    """The case panel's status list shows whatever the case service says, also the closure
    review's states (which the service sets, so the agent cannot pick them)."""
    import json
    import re
    from importlib import resources

    static = resources.files("switchboard.chat").joinpath("static")
    html = static.joinpath("inbox.html").read_text("utf-8")
    select = html[
        html.index('id="case-status"') : html.index("</select>", html.index('id="case-status"'))
    ]
    options = dict(re.findall(r'<option value="([a-z_]+)" data-i18n="([a-z_]+)"', select))
    assert set(options) == set(wire.CASE_STATUSES.values())
    for lang in ("en", "ko", "zh"):
        labels = json.loads(static.joinpath("i18n", f"{lang}.json").read_text("utf-8"))
        assert all(labels.get(key) for key in options.values()), lang
    for status in ("pending_review", "pending_confirmation"):
        assert re.search(rf'<option value="{status}"[^>]* disabled>', select), status


async def test_desk_events_reach_the_replica_that_holds_the_desk(nats_url: str) -> None:
    """The bus gives a DeliveryStatus or a ContactEnded to one chat replica; the agent's desk may
    be on another. Two replicas on one real NATS: events taken by A show on B's desk."""
    import nats

    from switchboard.testing.waiting import eventually, subscriptions_active

    emitted: list[tuple[str, dict[str, Any]]] = []
    desk = desk_of(emitted)
    reply = {"id": "cmd-1", "text": "확인해 보겠습니다.", "delivery": "queued"}
    desk.contacts["c-1"] = DeskContact({"contact_id": "c-1", "channel": "email"}, 0, [reply])
    desk.contacts["c-2"] = live_chat("c-2")
    holder = inbox_with(desk)  # replica B: holds the agent's desk
    taker = Inbox(  # replica A: its consumer takes the events
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        "secret",
        None,
        "",
        "",
        surge_of=desk.surge_of,
    )
    ncs = [await nats.connect(nats_url), await nats.connect(nats_url)]
    try:
        await holder.follow(ncs[0], "switchboard.chat.socketio.desks")
        await taker.follow(ncs[1], "switchboard.chat.socketio.desks")
        await subscriptions_active(ncs[0])
        await taker.on_delivery_status(
            events_pb2.DeliveryStatus(
                meta=events_pb2.EventMeta(tenant="demo"),
                command_id="cmd-1",
                contact_id="c-1",
                state=events_pb2.DELIVERY_STATE_DELIVERED,
            )
        )
        await taker.on_contact_ended(
            events_pb2.ContactEnded(
                meta=events_pb2.EventMeta(tenant="demo"), contact_id="c-2", agent_id="ko-1"
            )
        )

        async def shown() -> bool:
            return reply["delivery"] == "delivered" and desk.contacts["c-2"].ended

        await eventually(shown, "both events on the holder's desk")
        assert {d["contact_id"] for e, d in emitted if e == "contact"} == {"c-1", "c-2"}
        # A message on the subject that is not a desk event changes nothing and breaks nothing.
        await ncs[1].publish("switchboard.chat.socketio.desks", b"\xff", headers={"Sb-Event": "x"})
        await ncs[1].publish(
            "switchboard.chat.socketio.desks", b"\xff\xff", headers={"Sb-Event": "ContactEnded"}
        )
        await ncs[1].flush()
    finally:
        await holder.unfollow()
        await taker.unfollow()
        for nc in ncs:
            await nc.close()
