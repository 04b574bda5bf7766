"""The platform in one event loop: case, router and chat as real apps on real NATS, gRPC,
Socket.IO and SQL (SQLite, and PostgreSQL when SWITCHBOARD_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from switchboard.case.bootstrap import CaseApp
from switchboard.case.settings import CaseSettings
from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.settings import ChatSettings
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.embedded_nats import free_port
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.contacts import contact_created
from switchboard.testing.processes import CASE_TEST_MASTER_KEY, ServiceProcess, service_process
from switchboard.testing.secured_nats import SecuredNats
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2

SECRET = "e2e-secret"


def korean_email(
    tenant: str, email: str, name: str, subject: str, text: str, thread: str
) -> events_pb2.ContactCreated:
    """A Korean billing email, as the email channel publishes it (a new contact id each time)."""
    return contact_created(
        uuid.uuid4().hex,
        tenant=tenant,
        channel=contact_pb2.CHANNEL_EMAIL,
        email=email,
        name=name,
        language="ko",
        skills=["billing"],
        subject=subject,
        text=text,
        conversation_id=thread,
        at=datetime.now(UTC),
        source="email-ingest",
    )


def http_url(process: ServiceProcess) -> str:
    """The web address of a chat process made by Platform.chat_process."""
    return f"http://127.0.0.1:{process.env['CHAT_HTTP_PORT']}"


class Customer:
    """A web-chat customer: a visitor token from the chat service, then the /customer socket.
    `resume` connects again (to any replica) as the same visitor, from the last seq it saw."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient()
        self.token = ""
        self.last_seq = 0
        self.seen: dict[str, str] = {}  # the messages shown, by id (the widget shows each once)
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.statuses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sessions: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._auth: dict[str, str] = {}

    def _listen(self) -> None:
        self.sio.on("message", self._message, namespace="/customer")
        self.sio.on("status", self.statuses.put_nowait, namespace="/customer")
        self.sio.on("session", self.sessions.put_nowait, namespace="/customer")

    async def _message(self, message: dict[str, Any]) -> None:
        self.last_seq = max(self.last_seq, int(message.get("seq") or 0))
        self.seen[str(message.get("message_id"))] = str(message.get("text"))
        self.messages.put_nowait(message)

    async def connect(self, url: str, tenant: str, **auth_fields: str) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/api/visitor-token", json={"tenant": tenant}) as r:
                assert r.status == 200, await r.text()
                self.token = (await r.json())["token"]
        self._auth = auth_fields
        self._listen()
        await self._open(url, {})

    async def _open(self, url: str, extra: dict[str, Any]) -> None:
        await self.sio.connect(
            url,
            namespaces=["/customer"],
            auth={"token": self.token, **self._auth, **extra},
            transports=["websocket"],
            wait_timeout=10,
        )

    async def resume(self, url: str) -> dict[str, Any]:
        """Connect to `url` as the same visitor (a new socket; the old one is dropped): the
        session it answers with, holding what was said since `last_seq`."""
        with contextlib.suppress(Exception):
            await self.sio.disconnect()
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sessions = asyncio.Queue()
        self._listen()
        await self._open(url, {"since": self.last_seq})
        return await asyncio.wait_for(self.sessions.get(), 15)

    async def say(self, text: str) -> dict[str, Any]:
        return await self.sio.call("message", {"text": text}, namespace="/customer", timeout=15)

    async def next_from(self, author: str) -> dict[str, Any]:
        while True:
            m = await asyncio.wait_for(self.messages.get(), 15)
            if m["author"] == author:
                return m

    async def wait_status(self, state: str) -> dict[str, Any]:
        while True:
            s = await asyncio.wait_for(self.statuses.get(), 15)
            if s["state"] == state:
                return s


def case_process(nats_url: str, database_url: str, log: Path, **env: str) -> ServiceProcess:
    """`python -m switchboard.case` on `database_url` (not started yet), with `env` over the
    defaults: a replica of the case service, as a real process a test may kill."""
    return service_process(
        "switchboard.case",
        case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name,
        "CASE_GRPC_PORT",
        log,
        {
            "NATS_URL": nats_url,
            "CASE_DATABASE_URL": database_url,
            "CASE_MASTER_KEY": CASE_TEST_MASTER_KEY,
            "SWITCHBOARD_AUTH_SECRET": SECRET,
            **env,
        },
    )


@dataclass
class Platform:
    nats_url: str
    case: CaseApp
    router: RouterApp
    chat: ChatApp
    secret: str = SECRET
    # The settings every app was given, and the router's own (for a restarted router).
    common: dict[str, Any] = field(default_factory=dict)

    @property
    def router_target(self) -> str:
        return f"127.0.0.1:{self.router.port}"

    @property
    def case_target(self) -> str:
        return f"127.0.0.1:{self.case.port}"

    @property
    def chat_url(self) -> str:
        return f"http://127.0.0.1:{self.chat.http_port}"

    async def restart_router(self) -> None:
        """Stop the router and start another on the same port (state from the journal)."""
        port = self.router.port
        await self.router.stop()
        self.router = RouterApp(RouterSettings(**self.common, ROUTER_GRPC_PORT=port))
        await self.router.start()

    async def publish_article(self, title: str, body: str) -> None:
        """A published knowledge-base article (Korean), written by an admin over gRPC."""
        token = auth.mint(self.secret, "demo", "kb-admin", ["admin"])
        async with sb_grpc.channel(self.case_target, token) as ch:
            stub = case_pb2_grpc.CaseServiceStub(ch)
            article = await stub.CreateArticle(
                case_pb2.CreateArticleRequest(title=title, body=body, language="ko")
            )
            for state in (case_pb2.ARTICLE_STATE_REVIEW, case_pb2.ARTICLE_STATE_PUBLISHED):
                await stub.SetArticleState(
                    case_pb2.SetArticleStateRequest(article_id=article.article_id, state=state)
                )

    def chat_process(self, log: Path, **env: str) -> ServiceProcess:
        """Another chat replica on the platform as a real process (not started), configured as
        the deployment's replicas are: the same durable consumer, state shared over NATS."""
        http_port = free_port()
        return service_process(
            "switchboard.chat",
            "",
            "CHAT_GRPC_PORT",
            log,
            {
                "NATS_URL": self.nats_url,
                "SWITCHBOARD_AUTH_SECRET": self.secret,
                "CHAT_HTTP_PORT": str(http_port),
                "CHAT_ROUTER_ADDR": self.router_target,
                "CHAT_CASE_ADDR": self.case_target,
                # The embedded demo agents' directory, which production refuses.
                "SWITCHBOARD_MODE": "development",
                **env,
            },
        )

    def chat_replica(self, case_target: str = "") -> ChatApp:
        """Another chat process on the same platform (not started)."""
        return ChatApp(
            ChatSettings(
                NATS_URL=self.nats_url,
                SWITCHBOARD_AUTH_SECRET=self.secret,
                CHAT_GRPC_PORT=0,
                CHAT_HTTP_PORT=0,
                CHAT_ROUTER_ADDR=self.router_target,
                CHAT_CASE_ADDR=case_target or self.case_target,
                CHAT_CONSUMER="chat-replica",
                SHUTDOWN_GRACE_SECONDS=1.0,
            )
        )


@contextlib.asynccontextmanager
async def running_platform(
    nats_url: str,
    database_url: str,
    secret: str = SECRET,
    nats_users: SecuredNats | None = None,
    case_settings: dict[str, Any] | None = None,
    chat_settings: dict[str, Any] | None = None,
    **router_settings: Any,
) -> AsyncIterator[Platform]:
    """Case (with `case_settings`, e.g. its SMTP server), router (with `router_settings`) and
    chat (wired to both, with `chat_settings`) as real apps on one NATS server, stopped in reverse order (the router
    the platform has then: it may have been restarted). With `nats_users`, each app connects as
    its own user of that server."""
    common = {"NATS_URL": nats_url, "SWITCHBOARD_AUTH_SECRET": secret}

    def env(user: str) -> dict[str, Any]:
        return {**common, **(nats_users.env(user) if nats_users else {})}

    case = CaseApp(
        CaseSettings(
            **env("case"),
            CASE_GRPC_PORT=0,
            CASE_DATABASE_URL=database_url,
            **(case_settings or {}),
        )
    )
    router = RouterApp(RouterSettings(**env("router"), **router_settings, ROUTER_GRPC_PORT=0))
    started: list[Any] = []
    platform: Platform | None = None
    try:
        for app in (case, router):
            await app.start()
            started.append(app)
        chat = ChatApp(
            ChatSettings(
                **env("chat"),
                CHAT_GRPC_PORT=0,
                CHAT_HTTP_PORT=0,
                CHAT_ROUTER_ADDR=f"127.0.0.1:{router.port}",
                CHAT_CASE_ADDR=f"127.0.0.1:{case.port}",
                SHUTDOWN_GRACE_SECONDS=1.0,
                **(chat_settings or {}),
            )
        )
        await chat.start()
        started.append(chat)
        platform = Platform(
            nats_url, case, router, chat, secret, {**env("router"), **router_settings}
        )
        yield platform
    finally:
        for app in reversed(started):
            await (platform.router if app is router and platform else app).stop()


@pytest.fixture
def nats_access(request: pytest.FixtureRequest) -> str:
    """How the platform's services reach NATS: "anonymous" (the nats_server fixture), or
    "authorised" (parametrize indirectly: each service as its own user on secured_nats)."""
    return str(getattr(request, "param", "anonymous"))


@pytest.fixture
async def platform(
    nats_access: str, database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Platform]:
    if nats_access == "authorised":
        secured: SecuredNats = request.getfixturevalue("secured_nats")
        async with running_platform(secured.url, database_url, nats_users=secured) as made:
            yield made
    else:
        async with running_platform(request.getfixturevalue("nats_url"), database_url) as made:
            yield made
