"""The agent inbox's server side against a real platform: router, case and chat apps on a real
nats-server, real gRPC, SQLite and Socket.IO: sign-in, offers, replies on each contact's own
channel, the case panel, surge-locked breaks, tenant isolation, and the desk's AgentSession
(accepts, declines and wrap-ups on it, refusals, a router restart)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
import socketio
from nats.js import api as js_api
from prometheus_client import REGISTRY

from switchboard.case.adapters import orm
from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.inbox import service as inbox_service
from switchboard.chat.settings import ChatSettings
from switchboard.core import auth, events, stores
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port as sb_free_port
from switchboard.core.errors import Erased
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.waiting import eventually
from switchboard.v1 import (
    case_pb2,
    case_pb2_grpc,
    contact_pb2,
    events_pb2,
    router_pb2,
    router_pb2_grpc,
)

from ..conftest import Customer, Platform, korean_email, running_platform

SECRET = "inbox-test-secret"
TIMEOUT = 15.0


@dataclass
class Inbox:
    """The platform, seen from the inbox's side, and a bus for the test's own events."""

    platform: Platform
    bus: Bus

    @property
    def url(self) -> str:
        return self.platform.chat_url

    @property
    def chat(self) -> ChatApp:
        return self.platform.chat

    @property
    def case_port(self) -> int:
        return self.platform.case.port

    @property
    def router_port(self) -> int:
        return self.platform.router.port

    @property
    def router(self) -> RouterApp:
        return self.platform.router

    async def restart_router(self) -> None:
        await self.platform.restart_router()

    def replica(self, nats_url: str, case_target: str = "") -> ChatApp:
        """Another chat process on the same platform."""
        return self.platform.chat_replica(case_target)


@contextlib.asynccontextmanager
async def platform(
    nats_url: str, database_url: str, **router_settings: Any
) -> AsyncIterator[Inbox]:
    """Case, router (with `router_settings`) and chat apps on one NATS server."""
    bus = await Bus.connect(nats_url, source="test")
    try:
        async with running_platform(nats_url, database_url, SECRET, **router_settings) as made:
            yield Inbox(made, bus)
    finally:
        await bus.drain()


@pytest.fixture
async def inbox(nats_url: str, database_url: str) -> AsyncIterator[Inbox]:
    async with platform(nats_url, database_url) as made:
        yield made


class AgentSocket:
    EVENTS = (
        "offer",
        "offer_gone",
        "contact",
        "contact_gone",
        "presence",
        "surge",
        "message",
        "stats",
        "day",
    )

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.queues: dict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        for event in self.EVENTS:
            self.sio.on(event, self._recorder(event), namespace="/agent")

    def _recorder(self, event: str) -> Any:
        async def record(data: Any = None) -> None:
            self.queues[event].put_nowait(data)

        return record

    async def next(self, event: str, where: Any = lambda _: True) -> Any:
        async def find() -> Any:
            while True:
                data = await self.queues[event].get()
                if where(data):
                    return data

        return await asyncio.wait_for(find(), TIMEOUT)

    async def call(self, event: str, data: Any = None) -> Any:
        return await self.sio.call(event, data or {}, namespace="/agent", timeout=TIMEOUT)


@pytest.fixture
async def sockets() -> AsyncIterator[list[AgentSocket]]:
    made: list[AgentSocket] = []
    yield made
    for s in made:
        if s.sio.connected:
            await s.sio.disconnect()


async def login(url: str, agent_id: str, password: str, tenant: str = "demo") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/api/agent/login",
            json={"tenant": tenant, "agent_id": agent_id, "password": password},
        ) as r:
            return r.status, await r.json()


async def connect(url: str, token: str, made: list[AgentSocket]) -> AgentSocket:
    s = AgentSocket()
    made.append(s)
    await s.sio.connect(
        url,
        namespaces=["/agent"],
        auth={"token": token},
        transports=["websocket"],
        wait_timeout=TIMEOUT,
    )
    return s


async def refused(url: str, auth_data: Any) -> str:
    sio = socketio.AsyncClient(reconnection=False)
    errors: asyncio.Queue[Any] = asyncio.Queue()
    sio.on("connect_error", errors.put_nowait, namespace="/agent")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(
            url,
            namespaces=["/agent"],
            auth=auth_data,
            transports=["websocket"],
            wait_timeout=TIMEOUT,
        )
    error = await asyncio.wait_for(errors.get(), TIMEOUT)
    return str(error["message"] if isinstance(error, dict) else error)


async def signed_in(
    inbox: Inbox, sockets: list[AgentSocket], agent_id: str = "ko-1"
) -> tuple[AgentSocket, dict[str, Any]]:
    """A demo agent logged in with its demo password, connected and signed in; and the login's
    body (its token)."""
    _, body = await login(inbox.url, agent_id, f"demo-{agent_id}")
    agent = await connect(inbox.url, body["token"], sockets)
    assert (await agent.call("sign_in"))["ok"]
    return agent, body


async def accepted_email(inbox: Inbox, agent: AgentSocket) -> str:
    """An email contact, offered to `agent` and accepted; its id."""
    contact_id = await email_contact(inbox.bus)
    offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)
    assert (await agent.call("accept", {"offer_id": offer["offer_id"]}))["ok"]
    return contact_id


async def email_contact(bus: Bus, tenant: str = "demo", text: str = "") -> str:
    """Publish an email contact as the email channel does."""
    event = korean_email(
        tenant,
        "minji@example.com",
        "김민지",
        "청구서 문의",
        text or "이번 달 청구서가 두 번 왔어요.\n\n> 지난 메일 내용\n> 인용된 줄",
        "<thread-1@example.com>",
    )
    await bus.publish(event)
    contact_id = event.contact.contact_id
    return contact_id


async def read_one(bus: Bus, subject: str, stream: str, event_type: Any) -> Any:
    sub = await bus.js.pull_subscribe(
        subject,
        stream=stream,
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
    )
    try:
        [msg] = await sub.fetch(1, timeout=TIMEOUT)
    finally:
        await sub.unsubscribe()
    return event_type.FromString(msg.data)


async def test_supervisors_watch_live_statistics_and_agents_may_not(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    _, sup = await login(inbox.url, "sup-1", "demo-sup-1")
    board = await connect(inbox.url, sup["token"], sockets)
    watched = await board.call("watch")
    assert watched["ok"] and watched["time_zone"] == "Asia/Seoul"  # the demo tenant's zone
    first = await board.next("stats", lambda s: "total" in s)
    assert first["total"]["waiting"] == 0
    assert {q["queue"] for q in first["queues"]} >= {"general", "email"}
    day = await board.next("day")
    assert isinstance(day["hours"], list) and day["time_zone"] == "Asia/Seoul"
    assert len(day["quarters"]) >= 1  # today so far, per 15 minutes

    await email_contact(inbox.bus)  # nobody is signed in: it waits
    later = await board.next("stats", lambda s: "total" in s and s["total"]["waiting"] == 1)
    assert later["surge_level"] == 0

    _, agent_login = await login(inbox.url, "ko-1", "demo-ko-1")
    agent = await connect(inbox.url, agent_login["token"], sockets)
    refused_watch = await agent.call("watch")
    assert refused_watch["ok"] is False and "supervisor" in refused_watch["error"]


async def test_the_boards_day_report_carries_each_agents_day_from_the_record(
    inbox: Inbox, sockets: list[AgentSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wallboard's day report (every minute) carries each agent's day so far, from the case
    service's agent-states report: time signed in and on a break, the breaks taken."""
    monkeypatch.setattr(inbox_service, "REPORT_SECONDS", 0.2)
    agent, _ = await signed_in(inbox, sockets)
    assert (await agent.call("presence", {"presence": "break", "reason": "lunch"}))["ok"]
    _, sup = await login(inbox.url, "sup-1", "demo-sup-1")
    board = await connect(inbox.url, sup["token"], sockets)
    assert (await board.call("watch"))["ok"]
    day = await board.next("day", lambda d: d["agents"].get("ko-1", {}).get("breaks") == 1)
    ko = day["agents"]["ko-1"]
    assert set(ko) == {"signed_in_s", "break_s", "breaks", "availability"}
    assert 0 < ko["signed_in_s"] and 0 <= ko["break_s"] <= ko["signed_in_s"]
    assert 0 <= ko["availability"] < 1  # part of the day on the break


async def test_a_supervisor_sets_an_agent_available_or_signed_out_and_others_may_not(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    agent, _ = await signed_in(inbox, sockets)
    assert (await agent.call("presence", {"presence": "break", "reason": "lunch"}))["ok"]
    _, sup = await login(inbox.url, "sup-1", "demo-sup-1")
    board = await connect(inbox.url, sup["token"], sockets)

    # Neither the agent nor a team lead of no team of the agent's may; nonsense is named.
    lead = await connect(inbox.url, auth.mint(SECRET, "demo", "lead-9", ["team_lead"]), sockets)
    for who, asked, words in (
        (agent, {"agent_id": "ko-1", "presence": "available"}, "supervisor"),
        (lead, {"agent_id": "ko-1", "presence": "available"}, "teams they lead"),
        (board, {"agent_id": "ko-1", "presence": "break"}, "presence"),
        (board, {"agent_id": "", "presence": "offline"}, "agent_id"),
        (board, {"agent_id": "nobody", "presence": "offline"}, "nobody"),
    ):
        refused = await who.call("agent_presence", asked)
        assert refused["ok"] is False and words in refused["error"], (asked, refused)

    made = await board.call("agent_presence", {"agent_id": "ko-1", "presence": "available"})
    assert made["ok"] and made["agent"] == {
        "agent_id": "ko-1",
        "presence": "available",
        "reason": "",
    }, made
    await agent.next("presence", lambda p: p["presence"] == "available")
    made = await board.call("agent_presence", {"agent_id": "ko-1", "presence": "offline"})
    assert made["ok"] and made["agent"]["presence"] == "offline", made
    await agent.next("presence", lambda p: p["presence"] == "offline")


async def test_supervisors_see_their_tenants_live_chats_and_watch_them(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    agent, _ = await signed_in(inbox, sockets)
    customer = Customer()
    await customer.connect(inbox.url, tenant="demo", name="김민지", language="ko")
    try:
        asked = await customer.say("요금이 두 번 청구되었어요")
        contact_id = asked["contact_id"]
        offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)
        assert (await agent.call("accept", {"offer_id": offer["offer_id"]}))["ok"]
        await customer.wait_status("assigned")

        _, sup = await login(inbox.url, "sup-1", "demo-sup-1")
        board = await connect(inbox.url, sup["token"], sockets)
        listed = await board.call("live_chats")
        assert listed["ok"], listed
        [chat] = [c for c in listed["chats"] if c["contact_id"] == contact_id]
        assert (chat["customer_name"], chat["agent_id"], chat["agent_name"]) == (
            "김민지",
            "ko-1",
            "이수진",
        )
        assert chat["waiting_since"] and chat["started_at"]  # the customer awaits an answer
        watched = await board.call("supervise", {"contact_id": contact_id})
        assert watched["ok"] and watched["messages"][0]["text"] == "요금이 두 번 청구되었어요"

        # Another tenant's supervisor sees none of it; an agent may not look.
        acme = await connect(inbox.url, auth.mint(SECRET, "acme", "sup-1", ["supervisor"]), sockets)
        assert (await acme.call("live_chats"))["chats"] == []
        assert (await acme.call("supervise", {"contact_id": contact_id}))["kind"] == "NotFound"
        refused_list = await agent.call("live_chats")
        assert refused_list["ok"] is False and refused_list["kind"] == "PermissionDenied"
    finally:
        await customer.sio.disconnect()


async def test_login_checks_the_password_and_bad_tokens_are_refused_with_a_reason(
    inbox: Inbox,
) -> None:
    status, body = await login(inbox.url, "ko-1", "not-the-password")
    assert (status, body["error"]) == (401, "wrong agent id or password")
    status, body = await login(inbox.url, "nobody", "demo-ko-1")
    assert (status, body["error"]) == (401, "wrong agent id or password")
    status, body = await login(inbox.url, "ko-1", "demo-ko-1", tenant="Not A Tenant")
    assert status == 400 and "tenant" in body["error"]

    # Guessing is throttled per client address and agent id (five tries, then a pause); other
    # agents are unaffected.
    for _ in range(5):
        assert (await login(inbox.url, "zh-1", "guess"))[0] == 401
    status, body = await login(inbox.url, "zh-1", "demo-zh-1")
    assert status == 429 and "too many failed sign-ins" in body["error"]

    status, body = await login(inbox.url, "ko-1", "demo-ko-1")
    assert status == 200
    assert body["agent"]["agent_id"] == "ko-1" and body["agent"]["role"] == "agent"
    assert auth.verify(SECRET, body["token"]).roles == frozenset({"agent"})
    _, sup = await login(inbox.url, "sup-1", "demo-sup-1")
    assert auth.verify(SECRET, sup["token"]).roles == frozenset({"supervisor"})

    assert "token" in await refused(inbox.url, {})
    forged = body["token"][:-4] + ("AAAA" if not body["token"].endswith("AAAA") else "BBBB")
    reason = await refused(inbox.url, {"token": forged})
    assert "signature" in reason or "token" in reason
    partner = auth.mint(SECRET, "demo", "p-1", ["partner"])
    assert "team_lead or supervisor role" in await refused(inbox.url, {"token": partner})
    other_secret = auth.mint("another-secret", "demo", "ko-1", ["agent"])
    assert await refused(inbox.url, {"token": other_secret})


async def test_agent_takes_an_email_offer_and_replies_by_outbound_email(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    _, body = await login(inbox.url, "ko-1", "demo-ko-1")
    agent = await connect(inbox.url, body["token"], sockets)
    desk = await agent.call("sign_in")
    assert desk["ok"], desk
    assert desk["presence"]["presence"] == "available"
    assert "resolved" in desk["wrap_up_codes"] and "lunch" in desk["break_reasons"]

    contact_id = await email_contact(inbox.bus)
    offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)
    assert offer["contact"]["channel"] == "email"
    assert offer["contact"]["subject"] == "청구서 문의"
    assert offer["expires_at"] > 0

    accepted = await agent.call("accept", {"offer_id": offer["offer_id"]})
    assert accepted["ok"], accepted
    assert accepted["contact"]["reply_channel"] == "email"
    assert accepted["contact"]["sla_due"] > accepted["contact"]["created_at"]
    opened = await agent.call("open", {"contact_id": contact_id})
    assert opened["ok"] and "두 번" in opened["contact"]["text"]

    reply = await agent.call(
        "reply", {"contact_id": contact_id, "text": "확인 후 환불해 드리겠습니다."}
    )
    assert reply["ok"], reply
    command = await read_one(inbox.bus, "outbound.email.send", "OUTBOUND", events_pb2.OutboundEmail)
    assert list(command.to) == ["minji@example.com"]
    assert command.subject == "Re: 청구서 문의"
    assert command.text == "확인 후 환불해 드리겠습니다."
    assert command.contact_id == contact_id and command.agent_id == "ko-1"
    assert command.in_reply_to == "<thread-1@example.com>" and command.kind == "reply"
    assert command.meta.event_id == reply["reply"]["id"]
    updated = await agent.next("contact", lambda c: c["contact_id"] == contact_id and c["replies"])
    assert updated["responded_at"] is not None

    # The case panel: the case service recorded the contact; a note goes onto the case.
    for _ in range(100):
        panel = await agent.call("case", {"contact_id": contact_id})
        if panel["ok"] and panel["case"]:
            break
        await asyncio.sleep(0.05)
    assert panel["case"]["contacts"][0]["contact_id"] == contact_id
    assert panel["history"] and panel["history"][0]["case_id"] == panel["case"]["case_id"]
    note = await agent.call("note", {"case_id": panel["case"]["case_id"], "text": "환불 요청"})
    assert note["ok"] and note["note"]["text"] == "환불 요청"
    moved = await agent.call(
        "case_status", {"case_id": panel["case"]["case_id"], "status": "in_progress"}
    )
    assert moved["ok"] and moved["case"]["status"] == "in_progress", moved
    wrong = await agent.call("case_status", {"case_id": panel["case"]["case_id"], "status": "x"})
    assert not wrong["ok"] and "status" in wrong["error"]

    # Knowledge-base search, through the case service, with the agent's own token.
    await inbox.platform.publish_article("이중 청구 환불", "이중 청구는 3영업일 안에 환불됩니다.")
    found = await agent.call("kb_search", {"query": "환불", "language": "ko"})
    assert found["ok"] and found["available"], found
    assert [h["title"] for h in found["hits"]] == ["이중 청구 환불"]
    assert "3영업일" in found["hits"][0]["body"]
    bad = await agent.call("wrap_up", {"contact_id": contact_id, "code": "no-such-code"})
    assert not bad["ok"] and "must be one of" in bad["error"]

    done = await agent.call("wrap_up", {"contact_id": contact_id, "code": "resolved"})
    assert done["ok"], done
    ended = await read_one(inbox.bus, "contact.demo.email.ended", "EVENTS", events_pb2.ContactEnded)
    assert ended.contact_id == contact_id and ended.wrap_up_code == "resolved"


async def test_a_reload_finds_the_same_desk(inbox: Inbox, sockets: list[AgentSocket]) -> None:
    first, body = await signed_in(inbox, sockets)
    contact_id = await email_contact(inbox.bus)
    offer = await first.next("offer")
    assert (await first.call("accept", {"offer_id": offer["offer_id"]}))["ok"]
    await first.sio.disconnect()

    again = await connect(inbox.url, body["token"], sockets)
    desk = await again.call("sign_in")
    assert [c["contact_id"] for c in desk["contacts"]] == [contact_id]


async def test_agents_never_see_another_tenants_contacts(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    demo, _ = await signed_in(inbox, sockets)
    # An agent of another tenant with the same languages, signed in at the same time.
    other = await connect(inbox.url, auth.mint(SECRET, "acme", "ko-1", ["agent"]), sockets)
    other_desk = await other.call("sign_in")
    assert other_desk["ok"] and other_desk["agent"]["tenant"] == "acme"

    contact_id = await email_contact(inbox.bus, tenant="demo")
    offer = await demo.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)
    assert (await demo.call("accept", {"offer_id": offer["offer_id"]}))["ok"]

    assert other.queues["offer"].empty()
    for event, data in (
        ("open", {"contact_id": contact_id}),
        ("reply", {"contact_id": contact_id, "text": "hi"}),
        ("case", {"contact_id": contact_id}),
        ("join", {"contact_id": contact_id}),
        ("accept", {"offer_id": offer["offer_id"]}),
        ("wrap_up", {"contact_id": contact_id, "code": "resolved"}),
    ):
        got = await other.call(event, data)
        assert got["ok"] is False, (event, got)
    assert (await other.call("sign_in"))["contacts"] == []


SURGE_CONFIG = """
tenants:
  surge:
    languages: [ko, en, fr]
    break_reasons: [lunch, rest]
    default_queue: general
    queues:
      - name: general
        service_level: {threshold: 20s, target: 0.8, window: 1h}
    surge:
      - level: 3
        raise: {waiting_over: 0, wait_longer_than: 1s}
        clear: {idle_agents: 5, idle_for: 1h}
        actions: [refuse_breaks]
"""


async def test_the_surge_protocol_locks_breaks_and_the_desk_says_why(
    nats_url: str, database_url: str, tmp_path: Any, sockets: list[AgentSocket]
) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(SURGE_CONFIG, encoding="utf-8")
    common = {"NATS_URL": nats_url, "SWITCHBOARD_AUTH_SECRET": SECRET}
    router = RouterApp(RouterSettings(**common, ROUTER_GRPC_PORT=0, ROUTER_CONFIG_FILE=str(config)))
    await router.start()
    bus = await Bus.connect(nats_url, source="test")
    chat = ChatApp(
        ChatSettings(
            **common,
            CHAT_GRPC_PORT=0,
            CHAT_HTTP_PORT=0,
            CHAT_ROUTER_ADDR=f"127.0.0.1:{router.port}",
            CHAT_CASE_ADDR="127.0.0.1:9",
        )
    )
    await chat.start()
    try:
        url = f"http://127.0.0.1:{chat.http_port}"
        agent = await connect(url, auth.mint(SECRET, "surge", "ko-9", ["agent"]), sockets)
        assert (await agent.call("sign_in"))["ok"]
        first = await agent.call("presence", {"presence": "break", "reason": "lunch"})
        assert first["ok"] and first["presence"] == {
            "presence": "break",
            "reason": "lunch",
            "by": "",
            "by_name": "",
        }
        assert (await agent.call("presence", {"presence": "available"}))["ok"]
        # A contact nobody can take (French) waits past the surge threshold.
        contact = contact_pb2.Contact(
            contact_id=uuid.uuid4().hex,
            tenant="surge",
            channel=contact_pb2.CHANNEL_EMAIL,
            language="fr",
            subject="facture",
        )
        await bus.publish(
            events_pb2.ContactCreated(
                meta=events.new_meta("surge", contact_pb2.CHANNEL_EMAIL, "email-ingest"),
                contact=contact,
            )
        )
        for _ in range(200):
            refused_break = await agent.call("presence", {"presence": "break", "reason": "rest"})
            if not refused_break["ok"]:
                break
            assert (await agent.call("presence", {"presence": "available"}))["ok"]
            await asyncio.sleep(0.1)
        assert refused_break["ok"] is False and refused_break["locked"] is True
        assert "surge level 3" in refused_break["error"]
        surge = await agent.next("surge", lambda s: s["level"] == 3)
        assert surge["queue"] == "general"
    finally:
        await chat.stop()
        await router.stop()
        await bus.drain()


async def test_another_chat_replica_rebuilds_the_desk_from_the_router_and_the_case(
    inbox: Inbox, nats_url: str, sockets: list[AgentSocket]
) -> None:
    first, body = await signed_in(inbox, sockets)
    contact_id = await accepted_email(inbox, first)
    await first.sio.disconnect()

    replica = inbox.replica(nats_url)
    await replica.start()
    try:
        url = f"http://127.0.0.1:{replica.http_port}"
        again = await connect(url, body["token"], sockets)
        desk = await again.call("sign_in")
        assert desk["ok"], desk
        # From the case record: in the desk at once, or as soon as the case service has it.
        restored = (
            desk["contacts"][0]
            if desk["contacts"]
            else await again.next("contact", lambda c: c["contact_id"] == contact_id)
        )
        assert restored["contact_id"] == contact_id and restored["channel"] == "email"
        assert {"kind": "email", "value": "minji@example.com"} in restored["identities"]
        reply = await again.call("reply", {"contact_id": contact_id, "text": "답변드립니다."})
        assert reply["ok"], reply
        command = await read_one(
            inbox.bus, "outbound.email.send", "OUTBOUND", events_pb2.OutboundEmail
        )
        assert command.to == ["minji@example.com"] and command.case_reference.startswith("C-")
        await again.sio.disconnect()
    finally:
        await replica.stop()


async def test_fax_pages_are_served_to_their_agent_only_with_safe_types(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    store = await inbox.bus.js.create_object_store("FAXTEST")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    await store.put("demo/page-1", png)
    await store.put("demo/doc", b"%PDF-1.4 <script>alert(1)</script>")
    contact_id = uuid.uuid4().hex
    contact = contact_pb2.Contact(
        contact_id=contact_id,
        tenant="demo",
        channel=contact_pb2.CHANNEL_FAX,
        language="ko",
        identities=[
            contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_PHONE, value="+8225550100")
        ],
        content=[contact_pb2.ContentPart(content_type="text/plain", text="주문서 (OCR)")],
        attachments=[
            contact_pb2.AttachmentRef(
                bucket="FAXTEST",
                object_name="demo/page-1",
                filename="page-1.png",
                content_type="image/png",
                size_bytes=len(png),
            ),
            contact_pb2.AttachmentRef(
                bucket="FAXTEST",
                object_name="demo/doc",
                filename="fax.html",
                content_type="text/html",
                size_bytes=10,
            ),
        ],
    )
    contact.created_at.GetCurrentTime()
    await inbox.bus.publish(
        events_pb2.ContactCreated(
            meta=events.new_meta("demo", contact_pb2.CHANNEL_FAX, "fax"), contact=contact
        )
    )
    agent, body = await signed_in(inbox, sockets)
    offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)
    accepted = await agent.call("accept", {"offer_id": offer["offer_id"]})
    assert [a["filename"] for a in accepted["contact"]["attachments"]] == ["page-1.png", "fax.html"]

    async def get(index: int, token: str) -> tuple[int, dict[str, str], bytes]:
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{inbox.url}/api/agent/attachment",
                params={"contact_id": contact_id, "index": str(index)},
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                return r.status, dict(r.headers), await r.read()

    status, headers, data = await get(0, body["token"])
    assert (status, headers["Content-Type"], data) == (200, "image/png", png)
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, _ = await get(1, body["token"])
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in headers["Content-Security-Policy"]
    # Another agent, and an agent of another tenant, get nothing.
    _, other = await signed_in(inbox, sockets, "zh-1")
    assert (await get(0, other["token"]))[0] == 404
    assert (await get(0, auth.mint(SECRET, "acme", "ko-1", ["agent"])))[0] in (404, 409)
    reply = await agent.call("reply", {"contact_id": contact_id, "text": "확인했습니다."})
    assert reply["ok"] and reply["reply"]["to"] == "+8225550100"
    fax = await read_one(inbox.bus, "outbound.fax.send", "OUTBOUND", events_pb2.OutboundFax)
    assert fax.to_number == "+8225550100" and fax.text == "확인했습니다."


class Gate:
    """A TCP path to a service that is closed (connections refused) until opened."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = sb_free_port()
        self.server: asyncio.Server | None = None

    async def open(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.server = await asyncio.start_server(forward, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_desk_opened_while_the_case_service_is_away_shows_its_contact_when_it_is_back(
    inbox: Inbox, nats_url: str, sockets: list[AgentSocket]
) -> None:
    first, body = await signed_in(inbox, sockets)
    contact_id = await accepted_email(inbox, first)
    await first.sio.disconnect()

    gate = Gate(inbox.case_port)  # the case service cannot be reached from the new replica
    replica = inbox.replica(nats_url, case_target=f"127.0.0.1:{gate.port}")
    await replica.start()
    try:
        again = await connect(f"http://127.0.0.1:{replica.http_port}", body["token"], sockets)
        desk = await again.call("sign_in")
        assert desk["ok"], desk
        assert desk["contacts"] == []  # the router says it is this agent's; no record to show
        await gate.open()
        restored = await again.next("contact", lambda c: c["contact_id"] == contact_id)
        assert restored["channel"] == "email"
        assert {"kind": "email", "value": "minji@example.com"} in restored["identities"]
        await again.sio.disconnect()
    finally:
        await replica.stop()
        await gate.close()


# ---- the desk's AgentSession ----------------------------------------------------------------

ACTIONS = {"accept": "AcceptOffer", "decline": "DeclineOffer", "wrap_up": "WrapUp"}


def router_traffic() -> dict[str, float]:
    """What the router (in this process) counted: actions answered on agents' sessions, by
    action and code, and unary calls of the same actions, by method (every code)."""
    counted: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "switchboard_router_agent_session_actions_total":
                key = f"session {sample.labels['action']} {sample.labels['code']}"
                counted[key] = counted.get(key, 0.0) + sample.value
            elif sample.name == "switchboard_grpc_requests_total" and (
                sample.labels["method"] in ACTIONS.values()
            ):
                key = f"unary {sample.labels['method']}"
                counted[key] = counted.get(key, 0.0) + sample.value
    return counted


def traffic_since(before: dict[str, float]) -> dict[str, float]:
    now = router_traffic()
    return {k: v - before.get(k, 0.0) for k, v in now.items() if v != before.get(k, 0.0)}


async def test_the_desk_accepts_declines_and_wraps_up_on_the_agents_session(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    agent, _ = await signed_in(inbox, sockets)
    before = router_traffic()

    first = await email_contact(inbox.bus)
    offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == first)
    accepted = await agent.call("accept", {"offer_id": offer["offer_id"]})
    assert accepted["ok"] and accepted["contact"]["contact_id"] == first, accepted
    await agent.next("offer_gone", lambda g: g["offer_id"] == offer["offer_id"])
    done = await agent.call("wrap_up", {"contact_id": first, "code": "resolved"})
    assert done["ok"], done
    await agent.next("contact_gone", lambda g: g["contact_id"] == first)
    ended = await read_one(inbox.bus, "contact.demo.email.ended", "EVENTS", events_pb2.ContactEnded)
    assert ended.contact_id == first and ended.wrap_up_code == "resolved"

    second = await email_contact(inbox.bus)
    offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == second)
    declined = await agent.call("decline", {"offer_id": offer["offer_id"], "reason": "busy"})
    assert declined["ok"], declined
    await agent.next("offer_gone", lambda g: g["offer_id"] == offer["offer_id"])

    # The router answered all three on the agent's session; no unary call was made for them.
    assert traffic_since(before) == {
        "session accept OK": 1,
        "session wrap_up OK": 1,
        "session decline OK": 1,
    }


async def test_an_accept_the_router_refuses_on_the_session_shows_the_agent_its_reason(
    nats_url: str, database_url: str, sockets: list[AgentSocket]
) -> None:
    async with platform(nats_url, database_url, ROUTER_ACCEPT_TIMEOUT_SECONDS=1.0) as inbox:
        agent, body = await signed_in(inbox, sockets)
        contact_id = await email_contact(inbox.bus)
        offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)

        # The agent lets the offer run out: the router says so in the contact's decision.
        token = auth.mint(SECRET, "demo", "sup-1", ["supervisor"])
        async with sb_grpc.channel(f"127.0.0.1:{inbox.router_port}", token) as ch:
            router = router_pb2_grpc.RouterServiceStub(ch)
            for _ in range(500):
                decision = await router.ExplainDecision(
                    router_pb2.ExplainDecisionRequest(contact_id=contact_id)
                )
                outcomes = {a.offer_id: a.outcome for a in decision.attempts}
                if outcomes.get(offer["offer_id"]) == "timed_out":
                    break
                await asyncio.sleep(0.02)
            assert outcomes.get(offer["offer_id"]) == "timed_out", outcomes

        before = router_traffic()
        late = await agent.call("accept", {"offer_id": offer["offer_id"]})
        assert late["ok"] is False
        await agent.next("offer_gone", lambda g: g["offer_id"] == offer["offer_id"])
        assert traffic_since(before) == {"session accept FAILED_PRECONDITION": 1}
        assert late["error"].startswith(f"offer {offer['offer_id']} is no longer live")
        # The very words the unary AcceptOffer answers with (what the inbox showed before).
        async with sb_grpc.channel(f"127.0.0.1:{inbox.router_port}", body["token"]) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await router_pb2_grpc.RouterServiceStub(ch).AcceptOffer(
                    router_pb2.AcceptOfferRequest(agent_id="ko-1", offer_id=offer["offer_id"])
                )
        assert unary.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert late["error"] == unary.value.details()


def list_agents_calls() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == "switchboard_grpc_requests_total"
        and sample.labels["method"] == "ListAgents"
    )


async def test_a_desk_is_ready_when_the_router_says_its_session_is_open(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    """Signing in waits for the router's headers on the agent's session, not for the agent
    to appear as connected in ListAgents (asked every 20 ms, the whole tenant's list each
    time, at every sign-in); the one ListAgents left asks whether a break is in force."""
    _, body = await login(inbox.url, "ko-1", "demo-ko-1")
    agent = await connect(inbox.url, body["token"], sockets)
    before = list_agents_calls()
    assert (await agent.call("sign_in"))["ok"]
    assert list_agents_calls() - before == 1
    # Ready means ready: a contact published now is offered to the desk.
    contact_id = await email_contact(inbox.bus)
    await agent.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)


async def test_the_desk_is_told_what_the_router_and_a_supervisor_change(
    nats_url: str, database_url: str, sockets: list[AgentSocket]
) -> None:
    """An offer that runs out leaves the desk at once (not when the agent next clicks it), and
    a presence set by a supervisor reaches the agent's desk."""
    async with platform(nats_url, database_url, ROUTER_ACCEPT_TIMEOUT_SECONDS=1.0) as inbox:
        agent, _ = await signed_in(inbox, sockets)
        contact_id = await email_contact(inbox.bus)
        offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)
        await agent.next("offer_gone", lambda g: g["offer_id"] == offer["offer_id"])

        token = auth.mint(SECRET, "demo", "sup-1", ["supervisor"])
        async with sb_grpc.channel(f"127.0.0.1:{inbox.router_port}", token) as ch:
            router = router_pb2_grpc.RouterServiceStub(ch)
            await router.SetPresence(
                router_pb2.SetPresenceRequest(
                    agent_id="ko-1", presence=router_pb2.PRESENCE_BREAK, reason="training"
                )
            )
            told = await agent.next("presence", lambda p: p["presence"] != "available")
            assert told == {
                "presence": "break",
                "reason": "training",
                "by": "sup-1",
                "by_name": "박지훈",  # as the directory names the supervisor
            }
            await router.SignOut(router_pb2.SignOutRequest(agent_id="ko-1"))
            told = await agent.next("presence", lambda p: p["presence"] == "offline")
            assert told == {
                "presence": "offline",
                "reason": "signed out",
                "by": "sup-1",
                "by_name": "박지훈",
            }
        assert (await agent.call("sign_in"))["presence"] == told


async def test_the_desk_opens_its_session_again_after_a_router_restart_with_the_offer_it_had(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    agent, _ = await signed_in(inbox, sockets)
    contact_id = await email_contact(inbox.bus)
    offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)

    await inbox.restart_router()
    # The router sends the outstanding offer again on the desk's new session.
    again = await agent.next("offer", lambda o: o["offer_id"] == offer["offer_id"])
    assert again["contact"]["contact_id"] == contact_id
    assert [o["offer_id"] for o in (await agent.call("sign_in"))["offers"]] == [offer["offer_id"]]
    before = router_traffic()
    accepted = await agent.call("accept", {"offer_id": offer["offer_id"]})
    assert accepted["ok"] and accepted["contact"]["contact_id"] == contact_id, accepted
    done = await agent.call("wrap_up", {"contact_id": contact_id, "code": "resolved"})
    assert done["ok"], done
    assert traffic_since(before) == {"session accept OK": 1, "session wrap_up OK": 1}


async def test_an_erased_customers_fax_page_is_gone_and_the_inbox_says_so(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    fax_id = uuid.uuid4().hex
    png = b"\x89PNG\r\n\x1a\n" + b"\1" * 64
    name = f"demo/{fax_id}/page-1.png"
    await (await stores.object_store(inbox.bus.js, "fax-documents")).put(name, png)
    contact = contact_pb2.Contact(
        contact_id=fax_id,
        tenant="demo",
        channel=contact_pb2.CHANNEL_FAX,
        language="ko",
        identities=[
            contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_PHONE, value="+8225550177")
        ],
        attachments=[stores.attachment_ref("fax-documents", name, "page-1.png", "image/png", png)],
    )
    contact.created_at.GetCurrentTime()
    await inbox.bus.publish(
        events_pb2.ContactCreated(
            meta=events.new_meta("demo", contact_pb2.CHANNEL_FAX, "fax"), contact=contact
        )
    )
    agent, body = await signed_in(inbox, sockets)
    offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == fax_id)
    assert (await agent.call("accept", {"offer_id": offer["offer_id"]}))["ok"]

    async def page() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{inbox.url}/api/agent/attachment",
                params={"contact_id": fax_id, "index": "0"},
                headers={"Authorization": f"Bearer {body['token']}"},
            ) as r:
                return r.status, await r.read()

    assert await page() == (200, png)

    sessions = inbox.platform.case.sessions
    assert sessions is not None

    async def customer() -> str | None:
        async with sessions() as session:
            row = await session.get(orm.Contact, fax_id)
            return row.customer_id if row is not None else None

    customer_id = await eventually(customer, "the fax recorded in its case")
    token = auth.mint(SECRET, "demo", "dpo-1", ["admin"])
    async with sb_grpc.channel(f"127.0.0.1:{inbox.case_port}", token) as ch:
        erased = await case_pb2_grpc.CaseServiceStub(ch).EraseCustomer(
            case_pb2.EraseCustomerRequest(customer_id=customer_id)
        )
    assert erased.customer_id == customer_id

    async def gone() -> tuple[int, bytes] | None:
        answer = await page()
        return answer if answer[0] != 200 else None

    status, data = await eventually(gone, "the page deleted by the case service")
    assert status == 404
    assert json.loads(data)["error"] == "attachment '0' was erased"
    with pytest.raises(Erased):
        await stores.ObjectStores(inbox.bus.js).get("fax-documents", name)
