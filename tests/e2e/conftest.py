"""The platform in one event loop: case, router and chat as real apps on real NATS, gRPC,
Socket.IO and SQL (SQLite, and PostgreSQL when SWITCHBOARD_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from switchboard.case.bootstrap import CaseApp
from switchboard.case.settings import CaseSettings
from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.settings import ChatSettings
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings

SECRET = "e2e-secret"


@dataclass
class Platform:
    nats_url: str
    case: CaseApp
    router: RouterApp
    chat: ChatApp
    secret: str = SECRET

    @property
    def router_target(self) -> str:
        return f"127.0.0.1:{self.router.port}"

    @property
    def case_target(self) -> str:
        return f"127.0.0.1:{self.case.port}"

    @property
    def chat_url(self) -> str:
        return f"http://127.0.0.1:{self.chat.http_port}"


@pytest.fixture
async def platform(nats_url: str, database_url: str) -> AsyncIterator[Platform]:
    common = {"NATS_URL": nats_url, "SWITCHBOARD_AUTH_SECRET": SECRET}
    case = CaseApp(CaseSettings(**common, CASE_GRPC_PORT=0, CASE_DATABASE_URL=database_url))
    router = RouterApp(RouterSettings(**common, ROUTER_GRPC_PORT=0))
    chat = ChatApp(ChatSettings(**common, CHAT_GRPC_PORT=0, CHAT_HTTP_PORT=0))
    started = []
    try:
        for app in (case, router, chat):
            await app.start()
            started.append(app)
        yield Platform(nats_url, case, router, chat)
    finally:
        for app in reversed(started):
            await app.stop()
