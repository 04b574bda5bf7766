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
from switchboard.testing.secured_nats import SecuredNats

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
def nats_access(request: pytest.FixtureRequest) -> str:
    """How the platform's services reach NATS: "anonymous" (the nats_server fixture), or
    "authorised" (parametrize indirectly: each service as its own user on secured_nats)."""
    return str(getattr(request, "param", "anonymous"))


@pytest.fixture
async def platform(
    nats_access: str, database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Platform]:
    def env(user: str) -> dict[str, str]:
        if nats_access == "authorised":
            secured: SecuredNats = request.getfixturevalue("secured_nats")
            return {**secured.env(user), "SWITCHBOARD_AUTH_SECRET": SECRET}
        return {"NATS_URL": request.getfixturevalue("nats_url"), "SWITCHBOARD_AUTH_SECRET": SECRET}

    nats_url = env("chat")["NATS_URL"]
    case = CaseApp(CaseSettings(**env("case"), CASE_GRPC_PORT=0, CASE_DATABASE_URL=database_url))
    router = RouterApp(RouterSettings(**env("router"), ROUTER_GRPC_PORT=0))
    chat = ChatApp(ChatSettings(**env("chat"), CHAT_GRPC_PORT=0, CHAT_HTTP_PORT=0))
    started = []
    try:
        for app in (case, router, chat):
            await app.start()
            started.append(app)
        yield Platform(nats_url, case, router, chat)
    finally:
        for app in reversed(started):
            await app.stop()
