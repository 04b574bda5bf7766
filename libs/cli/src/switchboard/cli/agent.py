"""`switchboard agent`: a terminal agent for trying the platform before the browser inbox.

Signs in to the router over gRPC, takes offers from StreamOffers, joins accepted chats over the
chat service's /agent Socket.IO namespace, and sends what you type. Commands: /accept, /decline,
/wrap CODE, /quit. Ctrl-C signs out as /quit does and exits with status 130.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import socketio

from switchboard.cli.endpoints import Endpoints, auth_secret
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import router_pb2, router_pb2_grpc


def _pairs(values: list[str]) -> list[tuple[str, int]]:
    out = []
    for value in values:
        name, _, level = value.partition(":")
        out.append((name, int(level or 3)))
    return out


async def _lines() -> Any:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.decode().strip()


# The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 128 + signal.SIGINT


async def run(directory: Path, args: argparse.Namespace) -> int:
    """The terminal agent until /quit, end of input, or Ctrl-C (which signs out all the same).

    The session runs as its own task, and Ctrl-C cancels that task: however the session then
    ends (cancelled, or finishing on its own because its input ended at the same moment and it
    was already signing out), an interrupted agent exits with 130, and this task is never left
    with a cancellation pending.
    """
    loop = asyncio.get_running_loop()
    session = asyncio.create_task(_session(directory, args))
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            session.cancel()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        code = await session
    except asyncio.CancelledError:
        if not (interrupted and session.cancelled()):
            raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    if interrupted:
        print("stopped.")
        return INTERRUPTED
    return code


async def _session(directory: Path, args: argparse.Namespace) -> int:
    ep = Endpoints.load(directory)
    tenant = args.tenant or ep.tenant
    token = auth.mint(
        auth_secret(directory), tenant, args.agent_id, ["agent"], ttl_seconds=12 * 3600
    )
    state: dict[str, Any] = {"offer": None, "contact": None}
    # The chat over HTTPS with the embedded default's own CA (the agent joins by websocket).
    ssl_options = {"ssl": ssl.create_default_context(cafile=ep.tls["ca_file"])} if ep.tls else {}
    # Ctrl-C is ours (run() signs out first): socketio's own handler would cancel every task.
    # Its own HTTP session, closed here whichever way the agent stops.
    http = aiohttp.ClientSession()
    sio = socketio.AsyncClient(
        http_session=http, websocket_extra_options=ssl_options, handle_sigint=False
    )

    @sio.on("message", namespace="/agent")
    async def on_message(data: dict[str, Any]) -> None:
        if data.get("author") != "agent":
            print(f"[{data.get('contact_id', '')[:8]}] customer: {data.get('text')}")

    async with http, sb_grpc.channel(ep.router(tenant), token, tls=ep.grpc_tls()) as ch:
        stub = router_pb2_grpc.RouterServiceStub(ch)
        await stub.SignIn(
            router_pb2.SignInRequest(
                agent_id=args.agent_id,
                display_name=args.name or args.agent_id,
                languages=[
                    router_pb2.LanguageSkill(language=n, proficiency=p)
                    for n, p in _pairs(args.language)
                ],
                skills=[router_pb2.Skill(name=n, proficiency=p) for n, p in _pairs(args.skill)],
            )
        )

        async def accept(offer: router_pb2.Offer) -> None:
            await stub.AcceptOffer(
                router_pb2.AcceptOfferRequest(agent_id=args.agent_id, offer_id=offer.offer_id),
                metadata=(("traceparent", offer.traceparent),) if offer.traceparent else None,
            )
            joined = await sio.call(
                "join", {"contact_id": offer.contact.contact_id}, namespace="/agent"
            )
            state["contact"], state["offer"] = offer.contact.contact_id, None
            for m in joined.get("messages", []):
                print(f"[{offer.contact.contact_id[:8]}] {m['author']}: {m['text']}")

        async def offers() -> None:
            async for offer in stub.StreamOffers(
                router_pb2.StreamOffersRequest(agent_id=args.agent_id)
            ):
                c = offer.contact
                print(
                    f"offer {offer.offer_id[:8]}: {c.customer_name or 'customer'} ({c.language}) "
                    f"skills={list(c.skills)}"
                    + ("" if args.auto_accept else " — /accept or /decline")
                )
                state["offer"] = offer
                if args.auto_accept:
                    await accept(offer)

        offer_task: asyncio.Task[None] | None = None
        try:  # signed in from here on: whatever happens, sign out
            await sio.connect(
                ep.http["chat"],
                namespaces=["/agent"],
                auth={"token": token},
                transports=["websocket"],
            )
            print(f"signed in as {args.agent_id} ({tenant}); waiting for offers. /quit to leave.")
            offer_task = asyncio.create_task(offers())
            async for line in _lines():
                if line == "/quit":
                    break
                if line == "/accept" and state["offer"]:
                    await accept(state["offer"])
                elif line == "/decline" and state["offer"]:
                    await stub.DeclineOffer(
                        router_pb2.DeclineOfferRequest(
                            agent_id=args.agent_id, offer_id=state["offer"].offer_id
                        )
                    )
                    state["offer"] = None
                elif line.startswith("/wrap") and state["contact"]:
                    await stub.WrapUp(
                        router_pb2.WrapUpRequest(
                            agent_id=args.agent_id,
                            contact_id=state["contact"],
                            wrap_up_code=line[5:].strip(),
                        )
                    )
                    print("wrapped up")
                    state["contact"] = None
                elif line and state["contact"]:
                    reply = await sio.call(
                        "message",
                        {"contact_id": state["contact"], "text": line},
                        namespace="/agent",
                    )
                    if not reply.get("ok"):
                        print(f"not sent: {reply.get('error')}")
        finally:
            if offer_task is not None:
                offer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    try:
                        await offer_task
                    except Exception as exc:  # the offers stream ended with an error: say so
                        print(f"offers stopped: {exc}")
            # Also after Ctrl-C (a second one does not cancel again): the router must not keep
            # offering contacts to an agent who left.
            await _sign_out(stub, sio, args.agent_id)
    return 0


async def _sign_out(
    stub: router_pb2_grpc.RouterServiceStub, sio: socketio.AsyncClient, agent_id: str
) -> None:
    try:
        await stub.SignOut(router_pb2.SignOutRequest(agent_id=agent_id))
    except grpc.aio.AioRpcError as exc:
        print(f"not signed out: {exc.code().name} {exc.details()}")
    await sio.disconnect()
