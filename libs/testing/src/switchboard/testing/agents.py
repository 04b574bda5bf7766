"""Real gRPC agent clients for tests and the bench: `AgentClient` signs in, keeps StreamOffers
open, and accepts and declines with unary calls; `SessionAgentClient` does the same on one
AgentSession stream (offers and surge notices down, actions up)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import grpc

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.grpc import OFFERS_OPEN
from switchboard.core.tls import GrpcTls
from switchboard.v1 import events_pb2, router_pb2, router_pb2_grpc


class AgentClient:
    def __init__(
        self,
        target: str,
        secret: str,
        tenant: str,
        agent_id: str,
        tls: GrpcTls | None = None,
        roles: tuple[str, ...] = ("agent",),
    ) -> None:
        self.agent_id = agent_id
        self.tenant = tenant
        self.token = auth.mint(secret, tenant, agent_id, list(roles))
        self.channel = sb_grpc.channel(target, self.token, tls=tls)
        self.stub = router_pb2_grpc.RouterServiceStub(self.channel)
        self.offers: asyncio.Queue[router_pb2.Offer] = asyncio.Queue()
        self._stream: Any = None
        self._task: asyncio.Task[None] | None = None
        self.stream_error: grpc.aio.AioRpcError | None = None

    async def sign_in(
        self,
        languages: dict[str, int],
        skills: dict[str, int] | None = None,
        name: str = "",
        capacity: dict[int, int] | None = None,
    ) -> router_pb2.Agent:
        agent = await self.stub.SignIn(
            router_pb2.SignInRequest(
                agent_id=self.agent_id,
                display_name=name or self.agent_id,
                languages=[
                    router_pb2.LanguageSkill(language=k, proficiency=v)
                    for k, v in languages.items()
                ],
                skills=[router_pb2.Skill(name=k, proficiency=v) for k, v in (skills or {}).items()],
                capacity=[
                    router_pb2.ChannelCapacity(channel=ch, max_contacts=n)  # type: ignore[arg-type]
                    for ch, n in (capacity or {}).items()
                ],
            )
        )
        await self.open_stream()
        return agent

    async def open_stream(self) -> None:
        self._stream = self.stub.StreamOffers(
            router_pb2.StreamOffersRequest(agent_id=self.agent_id)
        )
        self._task = asyncio.create_task(self._pump())
        await self._connected()

    async def _connected(self) -> None:
        """Offers reach the agent once the router has its stream open: it says so with the
        `switchboard-offers-open` header, before any offer."""
        metadata = await asyncio.wait_for(self._stream.initial_metadata(), 15)
        if OFFERS_OPEN in (metadata or ()):
            return
        # Refused (or ended) before it opened: the pump has the reason.
        assert self._task is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), 5)
        raise self.stream_error or ConnectionError(
            f"the router ended {self.agent_id}'s offer stream before opening it"
        )

    async def _pump(self) -> None:
        try:
            async for offer in self._stream:
                self.offers.put_nowait(offer)
        except grpc.aio.AioRpcError as exc:
            self.stream_error = exc
        except asyncio.CancelledError:
            pass

    async def next_offer(self, timeout: float = 15.0) -> router_pb2.Offer:
        return await asyncio.wait_for(self.offers.get(), timeout)

    async def accept(self, offer: router_pb2.Offer) -> router_pb2.Assignment:
        metadata = (("traceparent", offer.traceparent),) if offer.traceparent else None
        return await self.stub.AcceptOffer(
            router_pb2.AcceptOfferRequest(agent_id=self.agent_id, offer_id=offer.offer_id),
            metadata=metadata,
        )

    async def decline(self, offer: router_pb2.Offer, reason: str = "") -> None:
        await self.stub.DeclineOffer(
            router_pb2.DeclineOfferRequest(
                agent_id=self.agent_id, offer_id=offer.offer_id, reason=reason
            )
        )

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.channel.close()


class ActionRefused(Exception):
    """The router refused an action sent on an agent session."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class SessionAgentClient(AgentClient):
    """An agent on one AgentSession stream: `open_stream` opens the session, and `accept`,
    `decline` and `wrap_up` are sent on it and answered on it."""

    def __init__(
        self,
        target: str,
        secret: str,
        tenant: str,
        agent_id: str,
        tls: GrpcTls | None = None,
        roles: tuple[str, ...] = ("agent",),
    ) -> None:
        super().__init__(target, secret, tenant, agent_id, tls, roles)
        self.surges: asyncio.Queue[events_pb2.SurgeLevelChanged] = asyncio.Queue()
        # The agent's own state as the router tells it, and its offers withdrawn.
        self.states: asyncio.Queue[router_pb2.Agent] = asyncio.Queue()
        self.withdrawn: asyncio.Queue[router_pb2.OfferWithdrawn] = asyncio.Queue()
        self._told: dict[str, asyncio.Queue[Any]] = {
            "offer": self.offers,
            "surge": self.surges,
            "agent": self.states,
            "withdrawn": self.withdrawn,
        }
        self._answers: dict[str, asyncio.Future[router_pb2.AgentSessionEvent]] = {}
        self._ids = itertools.count(1)
        # Called with each offer as it is read off the stream, before it is queued.
        self.on_offer: Callable[[router_pb2.Offer], None] | None = None

    async def open_stream(self) -> None:
        self._stream = self.stub.AgentSession()
        await self._stream.write(
            router_pb2.AgentSessionRequest(
                open=router_pb2.StreamOffersRequest(agent_id=self.agent_id)
            )
        )
        self._task = asyncio.create_task(self._pump())
        await self._connected()

    async def _pump(self) -> None:
        try:
            while True:
                event = await self._stream.read()
                if event is grpc.aio.EOF:
                    break
                # Told on the session, to its queue; the rest answers an action.
                told = self._told.get(kind := event.WhichOneof("event"))
                if kind == "offer" and self.on_offer is not None:
                    self.on_offer(event.offer)
                if told is not None:
                    told.put_nowait(getattr(event, kind))
                    continue
                answer = self._answers.pop(event.request_id, None)
                if answer is not None and not answer.done():
                    answer.set_result(event)
        except grpc.aio.AioRpcError as exc:
            self.stream_error = exc
        except asyncio.CancelledError:
            pass
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(
                    self.stream_error or ConnectionError("the agent session ended")
                )

    async def _send(self, **action: Any) -> router_pb2.AgentSessionEvent:
        request_id = str(next(self._ids))
        answer = asyncio.get_running_loop().create_future()
        self._answers[request_id] = answer
        await self._stream.write(router_pb2.AgentSessionRequest(request_id=request_id, **action))
        event: router_pb2.AgentSessionEvent = await answer
        if event.WhichOneof("event") == "error":
            code = _CODES.get(event.error.code, grpc.StatusCode.UNKNOWN)
            raise ActionRefused(code, event.error.message)
        return event

    async def accept(self, offer: router_pb2.Offer) -> router_pb2.Assignment:
        event = await self._send(accept=router_pb2.AcceptOfferRequest(offer_id=offer.offer_id))
        return event.assigned

    async def decline(self, offer: router_pb2.Offer, reason: str = "") -> None:
        await self._send(
            decline=router_pb2.DeclineOfferRequest(offer_id=offer.offer_id, reason=reason)
        )

    async def wrap_up(self, contact_id: str, code: str = "") -> None:
        await self._send(wrap_up=router_pb2.WrapUpRequest(contact_id=contact_id, wrap_up_code=code))

    async def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.done_writing()
        await super().close()
