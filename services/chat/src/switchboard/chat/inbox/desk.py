"""One signed-in agent's desk in this chat process: the router session (SignIn, the agent's
AgentSession stream, presence), the offers on the table and the contacts the agent is working on.

The desk holds one AgentSession stream for its whole signed-in life: offers come down it, and the
agent's accepts, declines and wrap-ups go up it, each answered on it under its own request id (a
refusal carries the status code and message the unary call would have failed with, so the agent
sees the same errors). When the stream ends (a router restart or failover, a newer session for
the agent elsewhere) the desk opens a new one; the router sends an offer still outstanding again
on it. An action in flight when a stream ends is answered "unavailable, please try again", as a
unary call to a router that went away is.

A desk outlives the agent's sockets for a grace period, so a page reload (or a dropped
connection) finds the same offers and contacts; offers that arrive in between wait for it.
Everything the desk emits goes to the agent's room, so every tab of the agent sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from switchboard.chat.inbox import wire
from switchboard.chat.inbox.backends import TIMEOUT_SECONDS, Backends
from switchboard.chat.inbox.directory import AgentProfile
from switchboard.core import tasks
from switchboard.core.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from switchboard.core.grpc import OFFERS_OPEN
from switchboard.core.service_client import call, domain_error
from switchboard.v1 import case_pb2, contact_pb2, router_pb2

logger = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
RETRY_SECONDS = 1.0
ACTION_SECONDS = TIMEOUT_SECONDS  # an action's answer, like a unary call's deadline
RESTORE_ATTEMPTS = 30  # about two minutes of looking for contacts the case has not recorded yet
SURGE_POLL_SECONDS = 5.0
# How long a sign-in waits for the router to open the agent's session before it reports the
# desk ready anyway.
CONNECT_SECONDS = 5.0


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
_CHANNELS = {
    "voice": contact_pb2.CHANNEL_VOICE,
    "chat": contact_pb2.CHANNEL_CHAT,
    "email": contact_pb2.CHANNEL_EMAIL,
    "fax": contact_pb2.CHANNEL_FAX,
}


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class DeskContact:
    data: dict[str, Any]
    assigned_at: int
    replies: list[dict[str, Any]] = field(default_factory=list)
    responded_at: int | None = None
    ended: bool = False
    held: bool = False
    # Where its files are (fax pages, email attachments): served by inbox/http.py, never sent.
    refs: list[contact_pb2.AttachmentRef] = field(default_factory=list)

    @property
    def contact_id(self) -> str:
        return str(self.data["contact_id"])

    @property
    def channel(self) -> str:
        return str(self.data["channel"])

    def to_wire(self) -> dict[str, Any]:
        return {
            **self.data,
            "assigned_at": self.assigned_at,
            "responded_at": self.responded_at,
            "ended": self.ended,
            "held": self.held,
            "replies": list(self.replies),
        }


SurgeOf = Callable[[str], Awaitable[dict[str, Any]]]


class Desk:
    def __init__(
        self,
        profile: AgentProfile,
        backends: Backends,
        emit: Emit,
        surge_of: SurgeOf,
        name_of: Callable[[str], str] = str,
    ) -> None:
        """`name_of` names a colleague (a supervisor who changed the agent's presence) by id."""
        self.profile = profile
        self.name_of = name_of
        self.backends = backends
        self.emit = emit
        self.surge_of = surge_of
        self.offers: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, DeskContact] = {}
        self.presence: dict[str, Any] = dict(wire.SIGNED_OUT)
        self.surge: dict[str, Any] = {"level": 0, "queue": ""}
        self.sockets: set[str] = set()
        self.started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        # The open AgentSession call (None while it is being opened again) and the actions
        # sent on it that wait for their answer, by request id: (the unary call's name, answer).
        self._session: Any = None
        self._session_open = asyncio.Event()
        # Set while the router has the session open (it said so with its headers): offers
        # reach the agent.
        self._receiving = asyncio.Event()
        self._answers: dict[str, tuple[str, asyncio.Future[router_pb2.AgentSessionEvent]]] = {}
        self._request_ids = itertools.count(1)
        # Set when the router refused the agent's session (a token it does not take).
        self._refused: tuple[grpc.StatusCode, str] | None = None

    @property
    def agent_id(self) -> str:
        return self.profile.agent_id

    @property
    def tenant(self) -> str:
        return self.profile.tenant

    def state(self) -> dict[str, Any]:
        now = _now_ms()
        return {
            "agent": self.profile.to_wire(),
            "presence": dict(self.presence),
            "surge": dict(self.surge),
            "offers": [o for o in self.offers.values() if (o.get("expires_at") or now) >= now],
            "contacts": [c.to_wire() for c in self.contacts.values()],
        }

    # ---- life cycle ----------------------------------------------------------------------------

    def _sign_in_request(self, presence: int) -> router_pb2.SignInRequest:
        p = self.profile
        return router_pb2.SignInRequest(
            agent_id=p.agent_id,
            display_name=p.name,
            languages=[
                router_pb2.LanguageSkill(language=k, proficiency=v) for k, v in p.languages.items()
            ],
            skills=[router_pb2.Skill(name=k, proficiency=v) for k, v in p.skills.items()],
            capacity=[
                router_pb2.ChannelCapacity(channel=_CHANNELS[k], max_contacts=v)
                for k, v in p.capacity.items()
            ],
            presence=presence,  # type: ignore[arg-type]
        )

    async def apply_profile(self, profile: AgentProfile) -> None:
        """The administrator changed the agent: the router takes its new languages, skills and
        capacity at once, the agent's presence and contacts staying as they are."""
        async with self._lock:
            self.profile = profile
            if not self.started or self.presence["presence"] == "offline":
                return  # taken at the agent's next sign-in
            presence = router_pb2.PRESENCE_AVAILABLE
            if self.presence["presence"] == "break":
                presence = router_pb2.PRESENCE_BREAK
            router = self.backends.router
            agent = await call("SignIn", router.SignIn(self._sign_in_request(presence)))
            self._set_presence(agent)
        await self.emit("presence", dict(self.presence))

    async def sign_out(self) -> None:
        """The agent was disabled: no more offers (its open contacts stay with the router)."""
        with contextlib.suppress(DomainError):
            router = self.backends.router
            await call("SignOut", router.SignOut(router_pb2.SignOutRequest(agent_id=self.agent_id)))
        self.presence = dict(wire.SIGNED_OUT)
        await self.emit("presence", dict(self.presence))

    async def start(self) -> None:
        """Sign in to the router (keeping a break already in force) and open the agent's
        session."""
        async with self._lock:
            if self.started:
                return
            router = self.backends.router
            listed = await call("ListAgents", router.ListAgents(router_pb2.ListAgentsRequest()))
            existing = next((a for a in listed.agents if a.agent_id == self.agent_id), None)
            presence = router_pb2.PRESENCE_AVAILABLE
            if existing is not None and existing.presence == router_pb2.PRESENCE_BREAK:
                presence = router_pb2.PRESENCE_BREAK
            agent = await call("SignIn", router.SignIn(self._sign_in_request(presence)))
            self._set_presence(agent)
            missing = await self._restore(agent.active_contact_ids)
            self.started = True
            self._tasks = [
                asyncio.create_task(
                    self._session_loop(), name=f"session:{self.tenant}:{self.agent_id}"
                ),
                asyncio.create_task(self._surge(), name=f"surge:{self.tenant}:{self.agent_id}"),
            ]
            if missing:
                self._tasks.append(
                    asyncio.create_task(
                        self._restore_later(missing), name=f"restore:{self.agent_id}"
                    )
                )
            await self._wait_connected()

    async def _restore_later(self, contact_ids: list[str]) -> None:
        """Contacts the case service had not recorded yet when the desk opened (its consumer
        runs behind the router): looked up again, with growing pauses, while the router still
        has them with this agent, and shown as they come."""
        delay = 0.2
        for _ in range(RESTORE_ATTEMPTS):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                listed = await call(
                    "ListAgents", self.backends.router.ListAgents(router_pb2.ListAgentsRequest())
                )
            except DomainError as exc:
                logger.info("%s: cannot list agents to restore contacts: %s", self.agent_id, exc)
                continue
            me = next((a for a in listed.agents if a.agent_id == self.agent_id), None)
            active = set(me.active_contact_ids) if me is not None else set()
            wanted = [c for c in contact_ids if c in active and c not in self.contacts]
            still = await self._restore(wanted)
            for contact_id in wanted:
                if contact_id not in still and contact_id in self.contacts:
                    await self.emit("contact", self.contacts[contact_id].to_wire())
            contact_ids = still
            if not contact_ids:
                return
        logger.warning(
            "%s: contacts %s are assigned but the case service has no record of them",
            self.agent_id,
            ", ".join(contact_ids),
        )

    async def _restore(self, contact_ids: Any) -> list[str]:
        """Contacts the router still has this agent working on (a desk opened after the grace
        period, or on another chat replica), rebuilt from the case service's record. Returns
        those it has no record of yet."""
        missing: list[str] = []
        for contact_id in contact_ids:
            if contact_id in self.contacts:
                continue
            try:
                listed = await call(
                    "ListCases",
                    self.backends.case.ListCases(
                        case_pb2.ListCasesRequest(contact_id=contact_id, page_size=1)
                    ),
                )
                if not listed.cases:
                    missing.append(contact_id)
                    continue
                found = await call(
                    "GetCase",
                    self.backends.case.GetCase(
                        case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id)
                    ),
                )
            except DomainError as exc:
                logger.info("cannot restore contact %s yet: %s", contact_id, exc)
                missing.append(contact_id)
                continue
            for k in found.contacts:
                if k.contact_id == contact_id:
                    data = wire.restored_contact(found, k)
                    # Ended (the customer left) but not wrapped up yet: shown ended.
                    self.contacts[contact_id] = DeskContact(
                        data, wire.ms(k.assigned_at) or _now_ms(), ended=k.status == "ended"
                    )
                    break
            else:
                missing.append(contact_id)
        return missing

    async def _wait_connected(self) -> None:
        """Offers reach the agent once the router has its session open: report ready only then
        (the router's headers say so; nothing is asked of it)."""
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                await self._receiving.wait()
        except TimeoutError:
            logger.warning("router has not opened %s's session yet", self.agent_id)

    def attach(self, sid: str) -> None:
        self.sockets.add(sid)
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None

    def detach(self, sid: str, grace: float, on_idle: Callable[[], None]) -> None:
        self.sockets.discard(sid)
        if not self.sockets and self._closing is None:
            self._closing = asyncio.get_running_loop().call_later(grace, on_idle)

    async def close(self) -> None:
        await tasks.cancel_and_wait(*self._tasks)
        self._tasks = []
        await self.backends.close()

    async def _session_loop(self) -> None:
        """Hold the agent's AgentSession open for as long as the desk lives, opening it again
        RETRY_SECONDS after it ends; a refused token ends the desk's session for good."""
        while True:
            session = self.backends.router.AgentSession()
            try:
                await session.write(
                    router_pb2.AgentSessionRequest(
                        open=router_pb2.StreamOffersRequest(agent_id=self.agent_id)
                    )
                )
                # Actions written from now on follow the open message on the stream.
                self._session = session
                self._session_open.set()
                # The router sends the session's headers once it has it open; a refused session
                # ends with its status and none.
                if OFFERS_OPEN in (await session.initial_metadata() or ()):
                    self._receiving.set()
                while (event := await session.read()) is not grpc.aio.EOF:
                    await self._on_event(event)
                logger.info("session of %s ended; reopening", self.agent_id)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                ):
                    logger.warning("session of %s refused: %s", self.agent_id, exc.code().name)
                    self._refused = (exc.code(), exc.details() or "")
                    await self.emit("desk_error", {"error": exc.details() or exc.code().name})
                    return
                logger.info("session of %s ended (%s); reopening", self.agent_id, exc.code().name)
            except asyncio.InvalidStateError:  # the open message met a call that had ended
                logger.info("session of %s ended before it opened; reopening", self.agent_id)
            finally:
                self._session_open.clear()
                self._receiving.clear()
                self._session = None
                session.cancel()
                self._unanswered()
            await asyncio.sleep(RETRY_SECONDS)

    async def _on_event(self, event: router_pb2.AgentSessionEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "offer":
            data = wire.offer(event.offer)
            self.offers[event.offer.offer_id] = data
            await self.emit("offer", data)
            return
        if kind == "withdrawn":
            # The contact ended or went elsewhere, the offer timed out, or the presence changed.
            if self.offers.pop(event.withdrawn.offer_id, None) is not None:
                await self.emit("offer_gone", {"offer_id": event.withdrawn.offer_id})
            return
        if kind == "agent":
            # Whoever changed it: a supervisor, the router (not responding, wrap-up), another tab.
            before = dict(self.presence)
            if self._set_presence(event.agent) != before:
                await self.emit("presence", dict(self.presence))
            return
        waiting = self._answers.get(event.request_id)
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(event)

    def _unanswered(self) -> None:
        """The session ended: its actions still waiting will never be answered on it."""
        for what, answer in self._answers.values():
            if not answer.done():
                answer.set_exception(domain_error(grpc.StatusCode.UNAVAILABLE, "", what))

    async def _act(self, what: str, **action: Any) -> router_pb2.AgentSessionEvent:
        """Send one action on the agent's session and return its answer. A refusal raises the
        DomainError the unary call `what` (AcceptOffer, DeclineOffer, WrapUp) would have; no
        session within ACTION_SECONDS, or no answer, is UNAVAILABLE or DEADLINE_EXCEEDED."""
        if self._refused is not None:
            raise domain_error(*self._refused, what)
        request_id = str(next(self._request_ids))
        answer: asyncio.Future[router_pb2.AgentSessionEvent] = (
            asyncio.get_running_loop().create_future()
        )
        try:
            async with asyncio.timeout(ACTION_SECONDS):
                while (session := self._session) is None:
                    await self._session_open.wait()
                self._answers[request_id] = (what, answer)
                try:
                    await session.write(
                        router_pb2.AgentSessionRequest(request_id=request_id, **action)
                    )
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    raise domain_error(grpc.StatusCode.UNAVAILABLE, "", what) from None
                event = await answer
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED if request_id in self._answers else None
            raise domain_error(code or grpc.StatusCode.UNAVAILABLE, "", what) from None
        finally:
            self._answers.pop(request_id, None)
        if event.WhichOneof("event") == "error":
            code = _STATUS_CODES.get(event.error.code, grpc.StatusCode.UNKNOWN)
            raise domain_error(code, event.error.message, what)
        return event

    async def _surge(self) -> None:
        while True:
            try:
                await self.refresh_surge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a router restart must not end the desk
                logger.debug("surge poll: %s", exc)
            await asyncio.sleep(SURGE_POLL_SECONDS)

    async def refresh_surge(self) -> None:
        """Ask the router for the tenant's surge level; tell the agent's pages when it changed."""
        surge = await self.surge_of(self.profile.tenant)
        if surge != self.surge:
            self.surge = surge
            await self.emit("surge", surge)

    # ---- presence and offers -------------------------------------------------------------------

    def _set_presence(self, agent: router_pb2.Agent) -> dict[str, Any]:
        self.presence = wire.presence(agent, self.name_of)
        return self.presence

    async def set_presence(self, name: Any, reason: Any) -> dict[str, Any]:
        if name not in ("available", "break", "offline"):
            raise InvalidArgument("presence", "must be available, break or offline")
        if not isinstance(reason, str) or len(reason) > 64:
            raise InvalidArgument("reason", "must be text of at most 64 characters")
        router = self.backends.router
        if name == "offline":
            agent = await call(
                "SignOut", router.SignOut(router_pb2.SignOutRequest(agent_id=self.agent_id))
            )
        else:
            try:
                agent = await call(
                    "SetPresence",
                    router.SetPresence(
                        router_pb2.SetPresenceRequest(
                            agent_id=self.agent_id,
                            presence=wire.PRESENCE_BY_NAME[name],  # type: ignore[arg-type]
                            reason=reason if name == "break" else "",
                        )
                    ),
                )
            except FailedPrecondition:
                # Refused by the surge protocol: every page of the agent shows the lock now.
                with contextlib.suppress(Exception):
                    await self.refresh_surge()
                raise
        presence = self._set_presence(agent)
        await self.emit("presence", presence)
        return presence

    def _offer(self, offer_id: Any) -> dict[str, Any] | None:
        """The offer as streamed to this desk. It may have reached the agent's page through
        another chat replica's stream: then the router alone decides whether it is theirs."""
        if not isinstance(offer_id, str) or not offer_id or len(offer_id) > 128:
            raise InvalidArgument("offer_id")
        return self.offers.get(offer_id)

    async def accept(self, offer_id: Any) -> DeskContact:
        data = self._offer(offer_id)
        try:
            answer = await self._act(
                "AcceptOffer",
                accept=router_pb2.AcceptOfferRequest(agent_id=self.agent_id, offer_id=offer_id),
            )
        finally:
            self.offers.pop(offer_id, None)
            await self.emit("offer_gone", {"offer_id": offer_id})
        assignment = answer.assigned
        has = assignment.HasField("contact")
        if not has and data is None:
            raise NotFound("offer", offer_id)
        desk_contact = DeskContact(
            wire.contact(assignment.contact) if has else data["contact"],  # type: ignore[index]
            wire.ms(assignment.assigned_at) or _now_ms(),
            refs=list(assignment.contact.attachments) if has else [],
        )
        self.contacts[desk_contact.contact_id] = desk_contact
        await self.emit("contact", desk_contact.to_wire())
        return desk_contact

    async def decline(self, offer_id: Any, reason: Any) -> None:
        self._offer(offer_id)
        reason = reason if isinstance(reason, str) else ""
        try:
            await self._act(
                "DeclineOffer",
                decline=router_pb2.DeclineOfferRequest(
                    agent_id=self.agent_id, offer_id=offer_id, reason=reason[:64]
                ),
            )
        finally:
            self.offers.pop(offer_id, None)
            await self.emit("offer_gone", {"offer_id": offer_id})

    # ---- contacts ------------------------------------------------------------------------------

    def contact(self, contact_id: Any) -> DeskContact:
        """One of this agent's contacts; anything else (another agent's, another tenant's) is
        NOT_FOUND, the same answer as for a contact that does not exist."""
        if not isinstance(contact_id, str) or not contact_id:
            raise InvalidArgument("contact_id")
        found = self.contacts.get(contact_id)
        if found is None:
            raise NotFound("contact", contact_id)
        return found

    async def replied(self, c: DeskContact, reply: dict[str, Any]) -> None:
        c.replies.append(reply)
        if c.responded_at is None:
            c.responded_at = reply["sent_at"]
        await self.emit("contact", c.to_wire())

    async def ended(self, contact_id: str) -> None:
        c = self.contacts.get(contact_id)
        if c is not None and not c.ended:
            c.ended = True
            await self.emit("contact", c.to_wire())

    async def hold(self, contact_id: Any, held: bool) -> DeskContact:
        c = self.contact(contact_id)
        await call(
            "SetHold",
            self.backends.router.SetHold(
                router_pb2.SetHoldRequest(
                    agent_id=self.agent_id, contact_id=c.contact_id, held=held
                )
            ),
        )
        c.held = held
        await self.emit("contact", c.to_wire())
        return c

    async def wrap_up(self, contact_id: Any, code: Any, codes: tuple[str, ...]) -> None:
        c = self.contact(contact_id)
        if not isinstance(code, str) or code not in codes:
            raise InvalidArgument("code", f"must be one of {', '.join(codes)}")
        try:
            await self._act(
                "WrapUp",
                wrap_up=router_pb2.WrapUpRequest(
                    agent_id=self.agent_id, contact_id=c.contact_id, wrap_up_code=code
                ),
            )
        except FailedPrecondition as exc:
            # Already ended and wrapped up elsewhere (another tab): it leaves the desk all the same.
            if "already ended" not in str(exc):
                raise
        self.contacts.pop(c.contact_id, None)
        await self.emit("contact_gone", {"contact_id": c.contact_id})
