"""Fixtures for the chat: the real ChatApp on free ports, a real nats-server, real Socket.IO
clients, and a bus of our own playing the router's part."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import socketio
from google.protobuf.message import Message
from nats.js import api as js_api

from switchboard.chat import config as chat_config
from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.settings import ChatSettings
from switchboard.core import auth, events
from switchboard.core.bus import Bus
from switchboard.v1 import contact_pb2, events_pb2

SECRET = "chat-test-secret"
TENANT = "demo"
EVENT_TIMEOUT = 10.0


ALLOWED_ORIGIN = "https://shop.example.com"
OTHER_TENANTS_ORIGIN = "https://acme-shop.example.com"  # allowed for acme, not for demo


def config_for_tests(**limits: Any) -> chat_config.ChatConfig:
    """The embedded default with roomier limits (tests send quickly) and one allowed origin."""
    raw: dict[str, Any] = {
        "limits": {"message_burst": 50, "messages_per_second": 20.0, **limits},
        "tenants": {
            TENANT: {"allowed_origins": [ALLOWED_ORIGIN]},
            "acme": {"allowed_origins": [OTHER_TENANTS_ORIGIN]},
        },
    }
    import yaml

    base = yaml.safe_load(chat_config.DEFAULT_FILE.read_text(encoding="utf-8"))
    return chat_config.parse(chat_config._merge(base, raw))


def chat_settings(nats_url: str, **extra: Any) -> ChatSettings:
    values: dict[str, Any] = {
        "NATS_URL": nats_url,
        "CHAT_HTTP_PORT": 0,
        "CHAT_GRPC_PORT": 0,
        "SWITCHBOARD_AUTH_SECRET": SECRET,
        "CHAT_ASSIGNMENT_WAIT_SECONDS": 1.0,
        "SHUTDOWN_GRACE_SECONDS": 2.0,
        # No router in these tests: nothing listens here, so availability/position fall back.
        "CHAT_ROUTER_ADDR": "127.0.0.1:9",
    }
    values.update(extra)
    return ChatSettings(**values)


@pytest.fixture
async def chat(nats_url: str) -> AsyncIterator[ChatApp]:
    app = ChatApp(chat_settings(nats_url), config=config_for_tests())
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


class RouterStandIn:
    """Publishes what the router would, and reads back what the chat published."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def queued(self, contact_id: str, position: int, tenant: str = TENANT) -> None:
        await self.bus.publish(
            events_pb2.ContactQueued(
                meta=events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, "router"),
                contact_id=contact_id,
                queue="general",
                position=position,
            )
        )

    async def assigned(
        self,
        contact_id: str,
        agent_id: str = "agent-1",
        agent_name: str = "이수진",
        tenant: str = TENANT,
    ) -> None:
        await self.bus.publish(
            events_pb2.ContactAssigned(
                meta=events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, "router"),
                contact_id=contact_id,
                agent_id=agent_id,
                agent_name=agent_name,
                queue="general",
            )
        )

    async def read(
        self, subject: str, event_type: type[Message], count: int
    ) -> list[tuple[Any, dict[str, str]]]:
        """The first `count` events on `subject`, with their headers, via our own pull consumer."""
        sub = await self.bus.js.pull_subscribe(
            subject,
            stream="EVENTS",
            config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
        )
        try:
            msgs = await sub.fetch(count, timeout=EVENT_TIMEOUT)
        finally:
            await sub.unsubscribe()
        return [(event_type.FromString(m.data), dict(m.headers or {})) for m in msgs]

    async def stored(self) -> int:
        """How many events the EVENTS stream holds."""
        return int((await self.bus.js.stream_info("EVENTS")).state.messages)


@pytest.fixture
async def router(nats_url: str) -> AsyncIterator[RouterStandIn]:
    bus = await Bus.connect(nats_url, source="router")
    try:
        yield RouterStandIn(bus)
    finally:
        await bus.drain()


class Client:
    """A python-socketio client that records, per event, what the server emits to it."""

    EVENTS = ("session", "message", "status", "error", "connect_error")

    EVENTS_EXTRA = ("typing", "receipt", "rated")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.token = ""
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: dict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        for event in self.EVENTS + self.EVENTS_EXTRA:
            self.sio.on(event, self._recorder(event), namespace=namespace)

    def _recorder(self, event: str) -> Callable[..., Awaitable[None]]:
        async def record(data: Any = None) -> None:
            self.received[event].put_nowait(data)

        return record

    async def next(self, event: str, where: Callable[[Any], bool] = lambda _: True) -> Any:
        """The next `event` satisfying `where` (others are skipped), within a bounded wait."""

        async def find() -> Any:
            while True:
                data = await self.received[event].get()
                if where(data):
                    return data

        return await asyncio.wait_for(find(), EVENT_TIMEOUT)

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, namespace=self.namespace, timeout=EVENT_TIMEOUT)

    async def close(self) -> None:
        await self.sio.disconnect()


def customer_auth(**overrides: Any) -> dict[str, Any]:
    """The widget's connect auth (add the token); an override of None leaves the field out."""
    values: dict[str, Any] = {
        "name": "김민지",
        "email": "MinJi.Kim@Example.COM",
        "language": "ko",
        "topic": "billing",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


class Connect:
    """Opens real Socket.IO connections to the chat (and closes them after the test)."""

    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.made: list[Client] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app.http_port}"

    async def raw(
        self,
        namespace: str,
        auth: Any,
        transports: tuple[str, ...] = ("websocket",),
        headers: dict[str, str] | None = None,
    ) -> Client:
        client = Client(namespace)
        self.made.append(client)
        await client.sio.connect(
            self.url,
            namespaces=[namespace],
            auth=auth,
            transports=list(transports),
            headers=headers or {},
            wait_timeout=EVENT_TIMEOUT,
        )
        return client

    async def refused(
        self, namespace: str, auth: Any, headers: dict[str, str] | None = None
    ) -> str:
        """Connect expecting a refusal; return the reason the server gave."""
        client = Client(namespace)
        self.made.append(client)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.sio.connect(
                self.url,
                namespaces=[namespace],
                auth=auth,
                transports=["websocket"],
                headers=headers or {},
                wait_timeout=EVENT_TIMEOUT,
            )
        error = await client.next("connect_error")
        return str(error["message"] if isinstance(error, dict) else error)

    async def visitor_token(
        self, tenant: str = TENANT, token: str | None = None, origin: str | None = None
    ) -> dict[str, Any]:
        """POST /api/visitor-token, as the widget does."""
        body: dict[str, Any] = {"tenant": tenant}
        if token:
            body["token"] = token
        headers = {"Origin": origin} if origin else {}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.url}/api/visitor-token", json=body, headers=headers) as r:
                data: dict[str, Any] = await r.json()
                data["status"] = r.status
                return data

    async def customer(
        self,
        token: str | None = None,
        tenant: str = TENANT,
        headers: dict[str, str] | None = None,
        **overrides: Any,
    ) -> Client:
        """A customer socket; with `token`, the visitor it names (a resume)."""
        if token is None:
            token = (await self.visitor_token(tenant))["token"]
        client = await self.raw(
            "/customer", {"token": token, **customer_auth(**overrides)}, headers=headers
        )
        client.token = token
        return client

    def token(
        self,
        agent_id: str = "agent-1",
        roles: tuple[str, ...] = ("agent",),
        tenant: str = TENANT,
        secret: str = SECRET,
        ttl_seconds: int | None = auth.DEFAULT_TTL_SECONDS,
    ) -> str:
        return auth.mint(secret, tenant, agent_id, roles, ttl_seconds)

    async def agent(self, agent_id: str = "agent-1", **kwargs: Any) -> Client:
        return await self.raw("/agent", {"token": self.token(agent_id, **kwargs)})

    async def conversation(
        self, text: str = "요금이 두 번 청구되었어요", **overrides: Any
    ) -> tuple[Client, dict[str, Any], dict[str, Any]]:
        """A customer who has sent a first message: (client, session, ack)."""
        customer = await self.customer(**overrides)
        session = await customer.next("session")
        ack = await customer.call("message", {"text": text})
        assert ack["ok"], ack
        return customer, session, ack

    async def close(self) -> None:
        for client in self.made:
            if client.sio.connected:
                await client.close()


@pytest.fixture
async def connect(chat: ChatApp) -> AsyncIterator[Connect]:
    c = Connect(chat)
    try:
        yield c
    finally:
        await c.close()


class Replicas:
    """Starts extra chat apps (replicas, or ones with their own limits) on the test's NATS."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.apps: list[ChatApp] = []
        self.connects: list[Connect] = []

    async def start(self, **limits: Any) -> tuple[ChatApp, Connect]:
        app = ChatApp(chat_settings(self.nats_url), config=config_for_tests(**limits))
        await app.start()
        self.apps.append(app)
        connect = Connect(app)
        self.connects.append(connect)
        return app, connect

    async def close(self) -> None:
        for connect in self.connects:
            await connect.close()
        for app in self.apps:
            await app.stop()


@pytest.fixture
async def replicas(nats_url: str) -> AsyncIterator[Replicas]:
    r = Replicas(nats_url)
    try:
        yield r
    finally:
        await r.close()
