"""The service client against a real gRPC server: a token per tenant, one channel per tenant,
and failures turned into domain errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from switchboard.core import auth, errors
from switchboard.core import grpc as sb_grpc
from switchboard.core.service_client import ServiceClient, call, domain_error
from switchboard.v1 import router_pb2, router_pb2_grpc

SECRET = "test-secret-of-at-least-32-characters!"
MAX_LIFETIME = 3600


class EchoRouter(router_pb2_grpc.RouterServiceServicer):
    """Answers ListAgents with the caller, and refuses GetContactPosition as NotFound."""

    async def ListAgents(self, request: Any, context: Any) -> router_pb2.ListAgentsResponse:
        p = sb_grpc.principal()
        agent = router_pb2.Agent(
            agent_id=p.subject, tenant=p.tenant, display_name=",".join(p.roles)
        )
        return router_pb2.ListAgentsResponse(agents=[agent])

    async def GetContactPosition(self, request: Any, context: Any) -> router_pb2.ContactPosition:
        raise errors.NotFound("contact", request.contact_id)


@pytest.fixture
async def router() -> AsyncIterator[str]:
    server, port, _ = await sb_grpc.start_server(
        [
            (
                router_pb2_grpc.add_RouterServiceServicer_to_server,
                EchoRouter(),
                "switchboard.v1.RouterService",
            )
        ],
        "127.0.0.1",
        0,
        SECRET,
        token_max_lifetime=MAX_LIFETIME,
    )
    yield f"127.0.0.1:{port}"
    await sb_grpc.stop_server(server, 0)


async def test_calls_carry_a_service_token_of_each_tenant(router: str) -> None:
    client = ServiceClient(router, SECRET, "chat", router_pb2_grpc.RouterServiceStub)
    for tenant in ("acme", "globex"):
        reply = await client.stub(tenant).ListAgents(router_pb2.ListAgentsRequest())
        (agent,) = reply.agents
        assert (agent.tenant, agent.agent_id, agent.display_name) == (tenant, "chat", "service")
    assert client.stub("acme") is client.stub("acme")  # one channel per tenant
    assert client.stub("acme") is not client.stub("globex")
    await client.close()
    # After close, a call opens a fresh channel.
    reply = await client.stub("acme").ListAgents(router_pb2.ListAgentsRequest())
    assert reply.agents[0].tenant == "acme"
    await client.close()


async def test_a_token_from_another_secret_is_refused(router: str) -> None:
    client = ServiceClient(router, "another-secret-of-at-least-32-chars!!", "chat",
                           router_pb2_grpc.RouterServiceStub)  # fmt: skip
    with pytest.raises(errors.Unauthenticated):
        await call("ListAgents", client.stub("acme").ListAgents(router_pb2.ListAgentsRequest()))
    await client.close()


async def test_call_turns_a_failed_rpc_into_a_domain_error(router: str) -> None:
    client = ServiceClient(router, SECRET, "voice-gateway", router_pb2_grpc.RouterServiceStub)
    stub = client.stub("acme")
    with pytest.raises(errors.NotFound, match="contact 'c1' not found"):
        await call(
            "GetContactPosition",
            stub.GetContactPosition(router_pb2.GetContactPositionRequest(contact_id="c1")),
        )
    with pytest.raises(errors.Unimplemented, match="ExplainDecision is not available yet"):
        await call("ExplainDecision", stub.ExplainDecision(router_pb2.ExplainDecisionRequest()))
    await client.close()


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.Unavailable),
        (grpc.StatusCode.INTERNAL, errors.Unavailable),
    ],
)
def test_domain_error_of_each_status(
    code: grpc.StatusCode, error: type[errors.DomainError]
) -> None:
    err = domain_error(code, "the backend's reason", "SetHold")
    assert type(err) is error
    if error in (errors.Unimplemented, errors.Unavailable):
        assert "SetHold" in str(err)  # the backend's reason is not the caller's to show
    else:
        assert str(err) == "the backend's reason"


async def test_service_tokens_expire_and_are_minted_again(router: str) -> None:
    client = ServiceClient(router, SECRET, "chat", router_pb2_grpc.RouterServiceStub, ttl_seconds=1)
    stub = client.stub("acme")
    await stub.ListAgents(router_pb2.ListAgentsRequest())
    await asyncio.sleep(1.2)  # the first token has expired: the channel sends a new one
    assert (await stub.ListAgents(router_pb2.ListAgentsRequest())).agents[0].agent_id == "chat"
    await client.close()


async def test_a_server_with_a_maximum_lifetime_refuses_longer_lived_tokens(router: str) -> None:
    for token in (
        auth.mint(SECRET, "acme", "p-1", ["admin"], ttl_seconds=None),  # never expires
        auth.mint(SECRET, "acme", "p-1", ["admin"], ttl_seconds=MAX_LIFETIME + 60),
    ):
        async with sb_grpc.channel(router, token) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await router_pb2_grpc.RouterServiceStub(ch).ListAgents(
                    router_pb2.ListAgentsRequest()
                )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    within = auth.mint(SECRET, "acme", "p-1", ["admin"], ttl_seconds=MAX_LIFETIME)
    async with sb_grpc.channel(router, within) as ch:
        await router_pb2_grpc.RouterServiceStub(ch).ListAgents(router_pb2.ListAgentsRequest())
