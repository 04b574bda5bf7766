"""Disabling an agent or resetting its password in the admin console refuses the tokens it was
given before, at once, in every service: the chat's API and the router's and the case service's
gRPC (the revocation list every service follows), not only its inbox desk. Real apps on a real
nats-server, real gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc, router_pb2, router_pb2_grpc

from .conftest import Platform
from .test_admin_console import Console


async def grpc_status(platform: Platform, token: str) -> tuple[grpc.StatusCode, grpc.StatusCode]:
    """What the router and the case service say to `token` (OK, or the refusal's code)."""
    codes = []
    for target, call in (
        (
            platform.router_target,
            lambda ch: router_pb2_grpc.RouterServiceStub(ch).GetQueueStats(
                router_pb2.GetQueueStatsRequest()
            ),
        ),
        (
            platform.case_target,
            lambda ch: case_pb2_grpc.CaseServiceStub(ch).GetTenantPolicy(
                case_pb2.GetTenantPolicyRequest()
            ),
        ),
    ):
        async with sb_grpc.channel(target, token) as ch:
            try:
                await call(ch)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
    return codes[0], codes[1]


async def refused_everywhere(platform: Platform, user: Console) -> None:
    """The chat refuses at once (it wrote the revocation); the other services as their watch
    of the revocation list delivers it (boundedly waited for)."""
    status, body = await user.call("GET", "/api/admin/agents")
    assert status == 401, body
    assert "revoked" in body["error"]
    codes: tuple[grpc.StatusCode, ...] = ()
    for _ in range(100):
        codes = await grpc_status(platform, user.token)
        if codes == (grpc.StatusCode.UNAUTHENTICATED,) * 2:
            return
        await asyncio.sleep(0.1)
    assert codes == (grpc.StatusCode.UNAUTHENTICATED,) * 2


@pytest.mark.parametrize("nats_access", ["anonymous", "authorised"], indirect=True)
async def test_disabling_an_agent_refuses_its_tokens_in_every_service(
    platform: Platform, nats_access: str, request: pytest.FixtureRequest
) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    sup = await Console(platform).login("sup-1", "demo-sup-1")
    assert (await sup.call("GET", "/api/admin/agents"))[0] == 200
    assert await grpc_status(platform, sup.token) == (grpc.StatusCode.OK, grpc.StatusCode.OK)

    status, body = await admin.call("PUT", "/api/admin/agents/sup-1", {"disabled": True})
    assert status == 200, body
    await refused_everywhere(platform, sup)
    # The administrator's own token is someone else's: untouched.
    assert (await admin.call("GET", "/api/admin/agents"))[0] == 200
    entry = (await admin.call("GET", "/api/admin/audit"))[1]["entries"][0]
    assert (entry["action"], entry["target"]) == ("agent.disable", "sup-1")
    if nats_access == "authorised":  # the chat may write its tenants' revocations
        assert request.getfixturevalue("secured_nats").violations() == []


async def test_a_password_reset_refuses_the_old_tokens_in_every_service(
    platform: Platform,
) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    sup = await Console(platform).login("sup-1", "demo-sup-1")
    assert await grpc_status(platform, sup.token) == (grpc.StatusCode.OK, grpc.StatusCode.OK)
    status, body = await admin.call(
        "POST", "/api/admin/agents/sup-1/password", {"password": "a-new-password"}
    )
    assert status == 200, body
    await refused_everywhere(platform, sup)
    # Editing someone's name is no reason to sign them out.
    ko = await Console(platform).login("ko-1", "demo-ko-1")
    status, body = await admin.call("PUT", "/api/admin/agents/ko-1", {"name": "Kim"})
    assert status == 200, body
    assert await grpc_status(platform, ko.token) != (grpc.StatusCode.UNAUTHENTICATED,) * 2


async def test_a_role_that_may_do_less_refuses_the_old_tokens_one_that_may_do_more_does_not(
    platform: Platform,
) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    sup = await Console(platform).login("sup-1", "demo-sup-1")
    ko = await Console(platform).login("ko-1", "demo-ko-1")
    status, body = await admin.call("PUT", "/api/admin/agents/ko-1", {"role": "supervisor"})
    assert status == 200, body
    status, body = await admin.call("PUT", "/api/admin/agents/sup-1", {"role": "agent"})
    assert status == 200, body
    # The supervisor made an agent no longer holds a supervisor's token.
    await refused_everywhere(platform, sup)
    # The promoted agent keeps its token (the new rights come with its next sign-in).
    assert (await ko.call("GET", "/api/admin/agents"))[0] == 403
    entry = (await admin.call("GET", "/api/admin/audit"))[1]["entries"][0]
    assert entry["changes"] == {"role": "agent", "role_before": "supervisor"}
