"""`switchboard agent` keeps taking offers across a router restart: its offers stream ends with
the router, the agent says so, opens it again once the router is back (a real router app
restarted on the same port, recovering from its journal on a real nats-server) and the next
contact's offer reaches it. A command the router cannot take meanwhile is answered with the
reason, and the agent goes on. What a supervisor or the router changes about the agent (its
presence, an offer withdrawn, a sign-out) is told on the agent's session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.settings import ChatSettings
from switchboard.cli.endpoints import Endpoints
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.contacts import chat_contact_created as created
from switchboard.testing.ports import free_tcp_and_udp_port
from switchboard.v1 import router_pb2, router_pb2_grpc

SECRET = "agent-reconnect-secret"


class Router:
    """The router app on one port, stopped and started again as a restart does."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.port = free_tcp_and_udp_port()
        self.app: RouterApp | None = None

    async def start(self, secret: str = SECRET) -> None:
        self.app = RouterApp(
            RouterSettings(
                NATS_URL=self.nats_url,
                ROUTER_GRPC_PORT=self.port,
                SWITCHBOARD_AUTH_SECRET=secret,
                ROUTER_ACCEPT_TIMEOUT_SECONDS=60,
            )
        )
        await self.app.start()

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.stop()
            self.app = None


@pytest.fixture
async def router(nats_url: str) -> AsyncIterator[Router]:
    router = Router(nats_url)
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


@pytest.fixture
async def chat(nats_url: str) -> AsyncIterator[ChatApp]:
    app = ChatApp(
        ChatSettings(
            NATS_URL=nats_url,
            SWITCHBOARD_AUTH_SECRET=SECRET,
            CHAT_GRPC_PORT=0,
            CHAT_HTTP_PORT=0,
            CHAT_ROUTER_ADDR="127.0.0.1:1",
            CHAT_CASE_ADDR="127.0.0.1:1",
            CHAT_CONSUMER="chat-agent-reconnect",
            SHUTDOWN_GRACE_SECONDS=1.0,
        )
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


class Terminal:
    """The agent's process, its output read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[str] = []

    async def line_with(self, text: str, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while line := (await self.proc.stdout.readline()).decode():
                self.seen.append(line)
                if text in line:
                    return line
        raise AssertionError(f"the agent ended without printing {text!r}: {self.seen}")

    async def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()


@contextlib.asynccontextmanager
async def terminal_agent(run_dir: Path, router: str, chat_url: str) -> AsyncIterator[Terminal]:
    Endpoints(
        nats_url="nats://127.0.0.1:1",
        grpc={"router": router},
        http={"chat": chat_url},
        tenant="acme",
    ).save(run_dir / "endpoints.json")
    (run_dir / "auth-secret").write_text(SECRET)
    env = {**os.environ, "SWITCHBOARD_RUN_DIR": str(run_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("SWITCHBOARD_AUTH_SECRET", None)
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "switchboard.cli", "agent", "--id", "ko-1", "--language", "ko:5"),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield Terminal(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.fixture
async def agent(router: Router, chat: ChatApp, tmp_path: Path) -> AsyncIterator[Terminal]:
    """`switchboard agent` signed in to `router`, waiting for offers."""
    chat_url = f"http://127.0.0.1:{chat.http_port}"
    async with terminal_agent(tmp_path, f"127.0.0.1:{router.port}", chat_url) as agent:
        await agent.line_with("waiting for offers")
        yield agent


async def test_the_agent_takes_offers_again_after_the_router_restarts(
    bus: Bus, router: Router, agent: Terminal
) -> None:
    await bus.publish(created("before", language="ko"))
    first = await agent.line_with("offer ")
    assert "(ko)" in first

    await router.stop()
    await agent.line_with("offers stream lost")
    # With no router, /decline is answered with the reason; the agent goes on.
    await agent.type("/decline")
    assert "UNAVAILABLE" in await agent.line_with("not declined")

    await router.start()
    await agent.line_with("offers stream open again")
    # The offer made before the restart is still the agent's: it is sent again.
    assert (await agent.line_with("offer ")) == first
    await agent.type("/decline")
    await bus.publish(created("after", language="ko"))
    # The agent takes offers on the new stream: the next one is another offer.
    assert (await agent.line_with("offer ")) != first
    await agent.type("/quit")
    assert await agent.proc.wait() == 0
    reopened = next(i for i, line in enumerate(agent.seen) if "open again" in line)
    assert not any("not declined" in line for line in agent.seen[reopened:]), agent.seen
    assert not any("Traceback" in line for line in agent.seen), agent.seen


async def test_a_router_that_refuses_the_agents_token_ends_the_session(
    router: Router, agent: Terminal
) -> None:
    await router.stop()
    await agent.line_with("offers stream lost")
    # The router comes back with another secret: opening the stream again cannot mend a refused
    # token, so the agent stops and says why.
    await router.start(secret="rotated-secret")
    assert "UNAUTHENTICATED" in await agent.line_with("offers stopped")
    assert await agent.proc.wait() == 1


async def test_the_agent_is_told_what_a_supervisor_changes_and_signed_out_it_leaves(
    bus: Bus, router: Router, agent: Terminal
) -> None:
    await bus.publish(created("told", language="ko"))
    offer_id = (await agent.line_with("offer ")).split()[1].rstrip(":")
    token = auth.mint(SECRET, "acme", "sup-1", ["supervisor"])
    async with sb_grpc.channel(f"127.0.0.1:{router.port}", token) as ch:
        supervisor = router_pb2_grpc.RouterServiceStub(ch)
        await supervisor.SetPresence(
            router_pb2.SetPresenceRequest(
                agent_id="ko-1", presence=router_pb2.PRESENCE_BREAK, reason="training"
            )
        )
        withdrawn = await agent.line_with(" withdrawn")
        assert withdrawn.strip() == f"offer {offer_id} withdrawn (agent went break)"
        told = await agent.line_with("presence:")
        assert told.strip() == "presence: break (training), set by sup-1"
        # The agent's own commands: back to available, then a break of its own.
        await agent.type("/available")
        assert (await agent.line_with("presence:")).strip() == "presence: available"
        await agent.type("/break lunch")
        assert (await agent.line_with("presence:")).strip() == "presence: break (lunch)"
        await agent.type("/break lunch")
        assert (await agent.line_with("presence:")).strip() == "presence: break (lunch) (unchanged)"
        await supervisor.SignOut(router_pb2.SignOutRequest(agent_id="ko-1"))
        left = await agent.line_with("signed out by someone else")
        assert "offline (signed out), set by sup-1" in left
    assert await agent.proc.wait() == 0
    assert not any("Traceback" in line for line in agent.seen), agent.seen
