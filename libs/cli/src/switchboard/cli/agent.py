"""`switchboard agent`: a terminal agent for trying the platform before the browser inbox.

Signs in to the router over gRPC, takes offers on its AgentSession stream, joins accepted chats
over the chat service's /agent Socket.IO namespace, and sends what you type. Commands: /accept,
/decline, /wrap CODE, /break [REASON], /available, /quit. Ctrl-C signs out as /quit does and exits
with status 130.

The session also tells the agent what others change: an offer withdrawn (the customer left, it
timed out), a presence set by a supervisor or by the router (not responding after missed offers;
wrap-up), a surge notice. Signed out by someone else (a supervisor), the agent says so and ends
with status 0.

When the stream ends (the router restarts or fails over to another replica) the agent says so
and opens it again every RETRY_SECONDS until the router answers; the router then sends again an
offer still outstanding. A router that does not know the agent (its state started afresh) or
refuses its token ends the session with status 1. A command the router or the chat cannot take
now (a restart in progress, an offer already gone) is answered with the reason; the agent goes
on.
"""

from __future__ import annotations

import argparse
import asyncio
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
from switchboard.core.grpc import OFFERS_OPEN
from switchboard.core.tasks import cancel_and_wait
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

# How long the agent waits before opening its offers stream again after it ended.
RETRY_SECONDS = 1.0

# The offers stream's refusals that opening it again cannot mend.
_FINAL = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
)


def _why(exc: Exception) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name} {exc.details() or ''}".strip()
    return str(exc) or type(exc).__name__


class _Refused(Exception):
    """The router refused the offers stream for good (see _FINAL)."""


class _SignedOut(Exception):
    """Someone else (a supervisor) signed the agent out."""


def _presence(agent: router_pb2.Agent) -> str:
    name = router_pb2.Presence.Name(agent.presence).removeprefix("PRESENCE_").lower()
    said = f"{name} ({agent.presence_reason})" if agent.presence_reason else name
    return f"{said}, set by {agent.presence_set_by}" if agent.presence_set_by else said


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
        signed_in = await stub.SignIn(
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
        state["presence"] = _presence(signed_in)

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

        def presence_is(agent: router_pb2.Agent) -> None:
            """Say the agent's presence when it changed (told on the session, or answered to
            the agent's own command, whichever comes first)."""
            presence = _presence(agent)
            if presence != state["presence"]:
                state["presence"] = presence
                hint = ""
                if agent.presence == router_pb2.PRESENCE_NOT_RESPONDING:
                    hint = " — /available to take offers again"
                print(f"presence: {presence}{hint}")

        async def on_event(event: router_pb2.AgentSessionEvent) -> None:
            kind = event.WhichOneof("event")
            if kind == "offer":
                offer = event.offer
                c = offer.contact
                print(
                    f"offer {offer.offer_id[:8]}: {c.customer_name or 'customer'} "
                    f"({c.language}) skills={list(c.skills)}"
                    + ("" if args.auto_accept else " — /accept or /decline")
                )
                state["offer"] = offer
                if args.auto_accept:
                    await command("accepted", accept(offer))
            elif kind == "withdrawn":
                offer = state["offer"]
                if offer is not None and offer.offer_id == event.withdrawn.offer_id:
                    print(f"offer {offer.offer_id[:8]} withdrawn ({event.withdrawn.reason})")
                    state["offer"] = None
            elif kind == "agent":
                if event.agent.presence == router_pb2.PRESENCE_OFFLINE:
                    raise _SignedOut(_presence(event.agent))
                presence_is(event.agent)
            elif kind == "surge":
                s = event.surge
                where = f"queue {s.queue}" if s.queue else "all queues"
                print(f"surge level {s.level} in {where}" + (f": {s.reason}" if s.reason else ""))

        async def offers() -> None:
            lost = False
            while True:
                call = stub.AgentSession()
                try:
                    await call.write(
                        router_pb2.AgentSessionRequest(
                            open=router_pb2.StreamOffersRequest(agent_id=args.agent_id)
                        )
                    )
                    # The router sends the stream's headers once it has it open (a refused
                    # stream ends with its status and no headers).
                    opened = OFFERS_OPEN in (await call.initial_metadata() or ())
                    if lost and opened:
                        print("offers stream open again; waiting for offers.")
                        lost = False
                    while (event := await call.read()) is not grpc.aio.EOF:
                        await on_event(event)
                    why = "ended by the router"
                except grpc.aio.AioRpcError as exc:
                    if exc.code() in _FINAL:
                        raise _Refused(_why(exc)) from None
                    why = _why(exc)
                except asyncio.InvalidStateError:  # the open message met a call that had ended
                    why = "ended before it opened"
                finally:
                    call.cancel()
                if not lost:
                    print(f"offers stream lost ({why}); opening it again.")
                    lost = True
                await asyncio.sleep(RETRY_SECONDS)

        async def command(done: str, action: Any) -> None:
            """Run one command; one the router or the chat cannot take now is answered with
            the reason, and the agent goes on."""
            try:
                await action
            except (grpc.aio.AioRpcError, socketio.exceptions.SocketIOError) as exc:
                print(f"not {done}: {_why(exc)}")

        async def decline(offer: router_pb2.Offer) -> None:
            await stub.DeclineOffer(
                router_pb2.DeclineOfferRequest(agent_id=args.agent_id, offer_id=offer.offer_id)
            )
            state["offer"] = None

        async def wrap_up(contact_id: str, code: str) -> None:
            await stub.WrapUp(
                router_pb2.WrapUpRequest(
                    agent_id=args.agent_id, contact_id=contact_id, wrap_up_code=code
                )
            )
            print("wrapped up")
            state["contact"] = None

        async def set_presence(presence: int, reason: str) -> None:
            before = state["presence"]
            agent = await stub.SetPresence(
                router_pb2.SetPresenceRequest(
                    agent_id=args.agent_id,
                    presence=presence,  # type: ignore[arg-type]
                    reason=reason,
                )
            )
            presence_is(agent)
            if state["presence"] == before:
                print(f"presence: {before} (unchanged)")

        async def send(contact_id: str, text: str) -> None:
            reply = await sio.call(
                "message", {"contact_id": contact_id, "text": text}, namespace="/agent"
            )
            if not reply.get("ok"):
                print(f"not sent: {reply.get('error')}")

        async def typed() -> None:
            async for line in _lines():
                if line == "/quit":
                    return
                if line == "/accept" and state["offer"]:
                    await command("accepted", accept(state["offer"]))
                elif line == "/decline" and state["offer"]:
                    await command("declined", decline(state["offer"]))
                elif line.startswith("/wrap") and state["contact"]:
                    await command("wrapped up", wrap_up(state["contact"], line[5:].strip()))
                elif line == "/available":
                    await command("available", set_presence(router_pb2.PRESENCE_AVAILABLE, ""))
                elif line == "/break" or line.startswith("/break "):
                    reason = line[6:].strip()
                    await command("on break", set_presence(router_pb2.PRESENCE_BREAK, reason))
                elif line and state["contact"]:
                    await command("sent", send(state["contact"], line))

        code = 0
        tasks: list[asyncio.Task[None]] = []
        try:  # signed in from here on: whatever happens, sign out
            await sio.connect(
                ep.http["chat"],
                namespaces=["/agent"],
                auth={"token": token},
                transports=["websocket"],
            )
            print(f"signed in as {args.agent_id} ({tenant}); waiting for offers. /quit to leave.")
            offer_task, input_task = asyncio.create_task(offers()), asyncio.create_task(typed())
            tasks = [offer_task, input_task]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if offer_task.done():
                exc = offer_task.exception()
                if isinstance(exc, _SignedOut):
                    print(f"signed out by someone else: {exc}; leaving.")
                else:
                    print(f"offers stopped: {exc}")
                    code = 1
            else:
                await input_task  # its own error, if any, is the session's
        finally:
            await cancel_and_wait(*tasks)
            # Also after Ctrl-C (a second one does not cancel again): the router must not keep
            # offering contacts to an agent who left.
            await _sign_out(stub, sio, args.agent_id)
    return code


async def _sign_out(
    stub: router_pb2_grpc.RouterServiceStub, sio: socketio.AsyncClient, agent_id: str
) -> None:
    try:
        await stub.SignOut(router_pb2.SignOutRequest(agent_id=agent_id))
    except grpc.aio.AioRpcError as exc:
        print(f"not signed out: {exc.code().name} {exc.details()}")
    await sio.disconnect()
