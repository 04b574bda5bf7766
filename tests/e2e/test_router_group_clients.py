"""The router's clients reach each tenant's router group: two groups (ROUTER_GROUPS) as real
router apps on their own ports and a real nats-server; the chat (its router client and the
agents' inbox desks), the voice gateway's router client and the CLI, configured with the map
and each group's address (ROUTER_ENDPOINTS), call the group that serves the tenant they act
for."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.settings import ChatSettings
from switchboard.cli import commands
from switchboard.cli.endpoints import Endpoints
from switchboard.core import auth
from switchboard.core.bus import Bus
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import AgentClient
from switchboard.testing.contacts import chat_contact_created as created
from switchboard.testing.waiting import eventually
from switchboard.v1 import router_pb2
from switchboard.voice_gateway.adapters.router import RouterClient as VoiceRouterClient
from switchboard.voice_gateway.settings import VoiceGatewaySettings

SECRET = "router-group-clients-secret"
GROUPS = "g1=acme;g2=korea"


@pytest.fixture
async def routers(nats_url: str) -> AsyncIterator[dict[str, RouterApp]]:
    apps = {
        group: RouterApp(
            RouterSettings(
                NATS_URL=nats_url,
                ROUTER_GRPC_PORT=0,
                SWITCHBOARD_AUTH_SECRET=SECRET,
                SWITCHBOARD_REPLICA_ID=f"{group}-a",
                ROUTER_GROUP=group,
                ROUTER_GROUPS=GROUPS,
                ROUTER_ACCEPT_TIMEOUT_SECONDS=60,
            )
        )
        for group in ("g1", "g2")
    }
    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await app.start()
            stack.push_async_callback(app.stop)
        yield apps


def endpoints(routers: dict[str, RouterApp]) -> str:
    return ";".join(f"{g}=127.0.0.1:{app.port}" for g, app in routers.items())


async def test_chat_voice_and_cli_call_the_tenants_group(
    nats_url: str,
    routers: dict[str, RouterApp],
    bus: Bus,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g1, g2 = (f"127.0.0.1:{routers[g].port}" for g in ("g1", "g2"))
    korea = AgentClient(g2, SECRET, "korea", "kr-1")
    await korea.sign_in({"ko": 5})
    acme = AgentClient(g1, SECRET, "acme", "ac-1")
    await acme.sign_in({"en": 5})
    # A korea contact no agent speaks the language of: it waits in group 2.
    await bus.publish(created("k-wait", language="ja", tenant="korea"))

    # The single address is group 1's: without the map, every call would go there.
    chat = ChatApp(
        ChatSettings(
            NATS_URL=nats_url,
            SWITCHBOARD_AUTH_SECRET=SECRET,
            CHAT_GRPC_PORT=0,
            CHAT_HTTP_PORT=0,
            CHAT_ROUTER_ADDR=g1,
            CHAT_CASE_ADDR="127.0.0.1:1",
            CHAT_CONSUMER="chat-groups",
            SHUTDOWN_GRACE_SECONDS=1.0,
            ROUTER_GROUPS=GROUPS,
            ROUTER_ENDPOINTS=endpoints(routers),
        )
    )
    voice = VoiceGatewaySettings(
        VOICE_ROUTER_ADDR=g1, ROUTER_GROUPS=GROUPS, ROUTER_ENDPOINTS=endpoints(routers)
    )
    voice_router = VoiceRouterClient(voice.router_targets(voice.router_addr), SECRET)
    await chat.start()
    try:
        assert chat.router is not None and chat.inbox is not None
        # The chat's own calls (a service token per tenant)...
        assert await chat.router.agents_for("korea", "ko") is True
        assert await chat.router.agents_for("acme", "en") is True
        assert (await chat.router.surge("korea"))["level"] == 0  # answered, not refused
        # ...and an agent's inbox desk (the agent's own token).
        for tenant, agent_id in (("korea", "kr-1"), ("acme", "ac-1")):
            token = auth.mint(SECRET, tenant, agent_id, ["agent"])
            backends = chat.inbox._backends(token, tenant)
            try:
                listed = await backends.router.ListAgents(router_pb2.ListAgentsRequest())
                assert [a.agent_id for a in listed.agents] == [agent_id]
            finally:
                await backends.close()

        async def position() -> object:
            return await voice_router.position("korea", "k-wait")

        found = await eventually(position, "k-wait's position from group 2")
        assert (found.position, found.waiting) == (1, 1)  # type: ignore[attr-defined]
    finally:
        await chat.stop()
        await voice_router.close()

    # The CLI reads the same two settings.
    Endpoints(nats_url="", grpc={"router": g1}, tenant="acme").save(tmp_path / "endpoints.json")
    (tmp_path / "auth-secret").write_text(SECRET)
    monkeypatch.setenv("ROUTER_GROUPS", GROUPS)
    monkeypatch.setenv("ROUTER_ENDPOINTS", endpoints(routers))
    assert await commands.agents(tmp_path, "korea") == 0
    assert "kr-1" in capsys.readouterr().out
    assert await commands.agents(tmp_path, "acme") == 0
    assert "ac-1" in capsys.readouterr().out

    # Without ROUTER_ENDPOINTS the CLI calls the single address, whose group refuses korea
    # naming the group that serves it.
    monkeypatch.delenv("ROUTER_ENDPOINTS")
    assert await commands.agents(tmp_path, "korea") == 1
    out = capsys.readouterr().out
    assert "FAILED_PRECONDITION" in out and "router group 'g2'" in out
    await korea.close()
    await acme.close()
