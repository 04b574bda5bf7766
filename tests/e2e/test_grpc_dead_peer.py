"""A peer that vanishes without a word (its machine died, its network was cut: no FIN, no RST)
is found out on both ends of a long-lived gRPC stream: an agent's offers stream to a real router
app, through a TCP proxy that falls silent. The agent's side ends its stream (and can open one
to wherever the router is now), and the router stops counting the agent as connected, so it
does not keep offering contacts down a stream nobody reads.

Without keepalive pings neither end would ever know: an idle stream sends nothing, so nothing
times out."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.tcp_proxy import SilentProxy
from switchboard.testing.waiting import eventually
from switchboard.v1 import router_pb2, router_pb2_grpc

SECRET = "dead-peer-secret"
# Keepalive pings every KEEPALIVE_TIME_MS, each given KEEPALIVE_TIMEOUT_MS: found out within
# their sum, with room for a loaded machine.
FOUND_OUT_SECONDS = (sb_grpc.KEEPALIVE_TIME_MS + sb_grpc.KEEPALIVE_TIMEOUT_MS) / 1000 * 3


@pytest.mark.timeout(180)
async def test_a_vanished_peer_is_found_out_on_both_ends_of_an_offers_stream(
    nats_url: str,
) -> None:
    router = RouterApp(
        RouterSettings(NATS_URL=nats_url, ROUTER_GRPC_PORT=0, SWITCHBOARD_AUTH_SECRET=SECRET)
    )
    await router.start()
    proxy = await SilentProxy("127.0.0.1", router.port).start()
    token = auth.mint(SECRET, "acme", "ko-1", ["agent"])
    try:
        async with (
            sb_grpc.channel(proxy.target, token) as through_proxy,
            sb_grpc.channel(f"127.0.0.1:{router.port}", token) as direct,
        ):
            agent = router_pb2_grpc.RouterServiceStub(through_proxy)
            await agent.SignIn(
                router_pb2.SignInRequest(
                    agent_id="ko-1", languages=[router_pb2.LanguageSkill(language="ko")]
                )
            )
            offers = agent.StreamOffers(router_pb2.StreamOffersRequest(agent_id="ko-1"))
            assert sb_grpc.OFFERS_OPEN in await offers.initial_metadata()

            async def connected() -> bool:
                listed = await router_pb2_grpc.RouterServiceStub(direct).ListAgents(
                    router_pb2.ListAgentsRequest()
                )
                return any(a.agent_id == "ko-1" and a.connected for a in listed.agents)

            assert await connected()
            # A quiet stream whose peer answers its pings lives on (pings went both ways).
            await asyncio.sleep(sb_grpc.KEEPALIVE_TIME_MS / 1000 + 2)
            assert not offers.done() and await connected()

            proxy.silence()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                async with asyncio.timeout(FOUND_OUT_SECONDS):
                    async for _ in offers:
                        pass
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value

            async def gone() -> bool:
                return not await connected()

            await eventually(
                gone, "the router to stop counting the agent as connected", FOUND_OUT_SECONDS
            )
    finally:
        await proxy.stop()
        await router.stop()
