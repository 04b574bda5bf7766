"""The chat's calls to the router over mutual TLS: with GRPC_TLS_* set, its own router client
(service token) and the inbox's calls (the agent's token) reach a router that admits only
clients with a certificate of the CA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from switchboard.chat.bootstrap import ChatApp
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.testing.tls import grpc_tls
from switchboard.v1 import router_pb2, router_pb2_grpc

from .conftest import SECRET, TENANT, chat_settings, config_for_tests


class Router(router_pb2_grpc.RouterServiceServicer):
    """Answers who asks, so the test sees which token reached it."""

    async def GetContactPosition(
        self, request: router_pb2.GetContactPositionRequest, context: Any
    ) -> router_pb2.ContactPosition:
        return router_pb2.ContactPosition(contact_id=request.contact_id, position=2, waiting=3)

    async def ListAgents(
        self, request: router_pb2.ListAgentsRequest, context: Any
    ) -> router_pb2.ListAgentsResponse:
        caller = sb_grpc.principal().subject
        return router_pb2.ListAgentsResponse(agents=[router_pb2.Agent(agent_id=caller)])


@pytest.fixture
async def router_target(tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    server_tls, client_tls = grpc_tls(tmp_path, client_auth="require")
    router = (router_pb2_grpc.add_RouterServiceServicer_to_server, Router(), "RouterService")
    server, port, _ = await sb_grpc.start_server([router], "127.0.0.1", 0, SECRET, tls=server_tls)
    yield f"127.0.0.1:{port}", client_tls
    await server.stop(0)


async def test_the_chat_calls_the_router_over_mutual_tls(
    nats_url: str, router_target: tuple[str, Any]
) -> None:
    target, client_tls = router_target
    app = ChatApp(
        chat_settings(
            nats_url,
            CHAT_ROUTER_ADDR=target,
            GRPC_TLS_CERT_FILE=client_tls.cert_file,
            GRPC_TLS_KEY_FILE=client_tls.key_file,
            GRPC_TLS_CA_FILE=client_tls.ca_file,
        ),
        config=config_for_tests(),
    )
    await app.start()
    try:
        assert app.router is not None and app.inbox is not None
        position = await app.router.position(TENANT, "contact-1")
        assert position is not None and (position.position, position.waiting) == (2, 3)
        token = auth.mint(SECRET, TENANT, "ko-1", ["agent"])
        backends = app.inbox._backends(token, TENANT)
        try:
            agents = await backends.router.ListAgents(router_pb2.ListAgentsRequest())
            assert [a.agent_id for a in agents.agents] == ["ko-1"]
        finally:
            await backends.close()
    finally:
        await app.stop()


async def test_without_the_chats_certificate_the_router_refuses(
    router_target: tuple[str, Any],
) -> None:
    target, _ = router_target
    token = auth.mint(SECRET, TENANT, "ko-1", ["agent"])
    async with sb_grpc.channel(target, token) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await router_pb2_grpc.RouterServiceStub(ch).ListAgents(router_pb2.ListAgentsRequest())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
