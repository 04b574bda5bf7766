"""The agent inbox's application layer: sign-in, desks, replies on each contact's own channel, the
case side panel and the supervisors' wallboard feed.

The /agent namespace (entrypoints/agent_namespace.py) and the login route call these; every call
acts for the principal of the socket's token, whose tenant scopes everything (the router and the
case service are called with that same token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import grpc
from google.protobuf.duration_pb2 import Duration
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchboard.chat.domain.login_throttle import LoginThrottle
from switchboard.chat.domain.model import check_text
from switchboard.chat.handlers import Chat
from switchboard.chat.inbox import wire
from switchboard.chat.inbox.backends import Backends
from switchboard.chat.inbox.calls import CallSupervision
from switchboard.chat.inbox.desk import Desk, DeskContact, SurgeOf, _now_ms
from switchboard.chat.inbox.directory import AgentProfile, Directory
from switchboard.chat.inbox.oidc import OidcSignIn
from switchboard.chat.inbox.recordings import Recordings
from switchboard.chat.inbox.supervision import Supervision
from switchboard.chat.portal.used_links import InMemoryUsedLinks
from switchboard.core import auth as sb_auth
from switchboard.core import recording_seal, roles, stores, tasks
from switchboard.core.bus import Bus
from switchboard.core.errors import (
    DomainError,
    Erased,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
)
from switchboard.core.service_client import call
from switchboard.core.tls import GrpcTls
from switchboard.v1 import case_pb2, events_pb2, router_pb2

logger = logging.getLogger(__name__)

TOKEN_TTL_SECONDS = 12 * 3600
BREAK_REASONS = ("lunch", "rest", "training", "meeting", "personal")
KB_LIMIT = 8
REPORT_SECONDS = 60.0
# Sign-in throttling per tenant and agent id: after this many wrong passwords, a pause.
# The wallboard streams this RPC with the signed-in user's token: its rule says who may open it.
WATCH_QUEUE_STATS = "/switchboard.v1.RouterService/WatchQueueStats"

RoomEmit = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]  # tenant, agent, event, data


def _email_of(contact: dict[str, Any]) -> str:
    return next((i["value"] for i in contact["identities"] if i["kind"] == "email"), "")


def _phone_of(contact: dict[str, Any]) -> str:
    return next((i["value"] for i in contact["identities"] if i["kind"] == "phone"), "")


def _reply_subject(subject: str) -> str:
    subject = subject.strip() or "Your message"
    return subject if subject.lower().startswith(("re:", "답장:", "回复:")) else f"Re: {subject}"


class Inbox:
    def __init__(
        self,
        chat: Chat,
        bus: Bus,
        directory: Directory,
        secret: str,
        known_tenants: frozenset[str] | None,
        router_target: str | Callable[[str], str],
        case_target: str,
        desk_grace_seconds: float = 60.0,
        *,
        surge_of: SurgeOf,
        token_max_lifetime: int | None = None,
        revocations: sb_auth.Revoked | None = None,
        tls: GrpcTls | None = None,
        time_zone_of: Callable[[str], str] = lambda tenant: "UTC",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recording_key: recording_seal.Keys = b"",
        voice_targets: list[str] | None = None,
        voice_service: str = "",
        supervise_timeout: float = 60.0,
    ) -> None:
        self.chat = chat
        # A tenant's IANA time zone (its wallboard's day) and the time now.
        self.time_zone_of = time_zone_of
        self.clock = clock
        self.bus = bus
        self.directory = directory
        self.secret = secret
        self.known_tenants = known_tenants
        # The router's address, or its address for each tenant (a partitioned router).
        self.router_target = router_target
        self.case_target = case_target
        self.tls = tls  # the chat's own gRPC certificate and CA, for the agents' calls
        self.desk_grace_seconds = desk_grace_seconds
        self.surge_of = surge_of  # asked with the chat's service token, not the agent's
        self.token_max_lifetime = token_max_lifetime
        # How the inbox checks the tokens it is shown (downloads; the sockets check their own).
        self.verify = sb_auth.Verifier(secret, known_tenants, token_max_lifetime, revocations)
        self.desks: dict[tuple[str, str], Desk] = {}
        self._emit: RoomEmit | None = None
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self.login_throttle = LoginThrottle()
        # Sign-in through a tenant's company directory (its states used once: on every
        # replica when the app gives it a shared store, see `bootstrap`).
        self.oidc = OidcSignIn(secret, InMemoryUsedLinks().claim)
        self._stores: stores.ObjectStores | None = None
        # Call recordings played in the case panel, opened with the voice gateway's master key.
        self.recordings = Recordings(
            self.object_stores,
            recording_key or recording_seal.master_key("", "", secret),
            secret,
            case_target,
            tls,
        )
        self.supervision = Supervision(self)
        # Live calls, listened to through the voice gateways' VoiceService.
        self.calls = CallSupervision(
            self, voice_targets or [], supervise_timeout, tls, voice_service
        )
        # What the bus tells one replica about a desk another replica may hold.
        self._nc: NATS | None = None
        self._desk_subject = ""
        self._desk_sub: Any = None

    async def follow(self, nc: NATS, subject: str) -> None:
        """Share the desk events this replica's consumer takes (the bus gives each to one
        replica) with every replica on `subject`, one of the chat's own plain subjects, and apply
        what any replica shares to the desks held here."""
        self._nc, self._desk_subject = nc, subject
        self._desk_sub = await nc.subscribe(subject, cb=self._desk_event)

    async def unfollow(self) -> None:
        sub, self._desk_sub, self._nc = self._desk_sub, None, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _share(self, event: events_pb2.DeliveryStatus | events_pb2.ContactEnded) -> None:
        kind = type(event).__name__
        if self._nc is None:
            await self._apply(kind, event)
            return
        await self._nc.publish(
            self._desk_subject, event.SerializeToString(), headers={"Sb-Event": kind}
        )

    async def _desk_event(self, msg: Msg) -> None:
        kind = (msg.headers or {}).get("Sb-Event", "")
        cls = {"DeliveryStatus": events_pb2.DeliveryStatus, "ContactEnded": events_pb2.ContactEnded}
        if kind not in cls:
            return
        event = cls[kind]()
        try:
            event.ParseFromString(msg.data)
        except Exception:
            logger.warning("a shared desk event %s could not be read", kind)
            return
        try:
            await self._apply(kind, event)
        except Exception:
            logger.exception("a shared desk event %s failed", kind)

    async def _apply(self, kind: str, event: Any) -> None:
        if kind == "DeliveryStatus":
            await self._delivery_status_here(event)
        else:
            await self._contact_ended_here(event)

    def set_emitter(self, emit: RoomEmit) -> None:
        self._emit = emit

    async def to_agent(self, tenant: str, agent_id: str, event: str, data: dict[str, Any]) -> None:
        """Emit to every tab of the agent, on whichever replica it is open."""
        if self._emit is not None:
            await self._emit(tenant, agent_id, event, data)

    # ---- sign-in -------------------------------------------------------------------------------

    async def login(
        self, tenant: Any, agent_id: Any, password: Any, client: str = ""
    ) -> dict[str, Any]:
        """Check the password and issue an inbox token (the directory's role). Guessing is
        throttled per client address and account, and per client address (`LoginThrottle`)."""
        if (
            isinstance(tenant, str)
            and self.known_tenants is not None
            and tenant not in self.known_tenants
        ):
            raise PermissionDenied(f"tenant {tenant!r} is not served here")
        who = (client, str(tenant), str(agent_id))
        self.login_throttle.check(*who)
        try:
            profile = await self.directory.verify_async(tenant, agent_id, password)
        except Unauthenticated:
            self.login_throttle.failed(*who)
            raise
        self.login_throttle.succeeded(*who)
        logger.info("inbox sign-in of %s (%s)", profile.agent_id, profile.tenant)
        return self.issue(profile)

    def issue(self, profile: AgentProfile) -> dict[str, Any]:
        """The inbox token of a signed-in agent (a password's or its company directory's):
        the directory's role, for TOKEN_TTL_SECONDS."""
        token = sb_auth.mint(
            self.secret,
            profile.tenant,
            profile.agent_id,
            [profile.role],
            ttl_seconds=TOKEN_TTL_SECONDS,
        )
        return {
            "token": token,
            "expires_at": int(time.time()) + TOKEN_TTL_SECONDS,
            "agent": profile.to_wire(),
        }

    def oidc_result(self, token: str) -> dict[str, Any]:
        """What a password sign-in answers, for the token an OIDC sign-in left in its cookie."""
        principal = self.verify(token)
        profile = self.directory.profile(principal.tenant, principal.subject)
        if profile is None or profile.disabled:
            raise Unauthenticated("this account is disabled")
        issued = principal.issued_at or int(time.time())
        return {
            "token": token,
            "expires_at": issued + TOKEN_TTL_SECONDS,
            "agent": profile.to_wire(),
        }

    def profile(self, principal: sb_auth.Principal) -> AgentProfile:
        found = self.directory.profile(principal.tenant, principal.subject)
        if found is not None and found.disabled:
            raise Unauthenticated("this account is disabled")
        if found is not None:
            return found
        # A token minted outside the directory (the CLI's, a partner's tool): a bare profile.
        role = next(
            (r for r in (roles.SUPERVISOR, roles.TEAM_LEAD) if principal.has_any(r)), "agent"
        )
        return AgentProfile(principal.tenant, principal.subject, principal.subject, role, "")

    def _backends(self, token: str, tenant: str) -> Backends:
        """Channels for `token`'s calls; the router's is to `tenant`'s router group."""
        target = self.router_target
        router = target if isinstance(target, str) else target(tenant)
        return Backends(router, self.case_target, token, self.tls)

    async def sign_in(self, principal: sb_auth.Principal, token: str, sid: str) -> dict[str, Any]:
        """Open (or find) the agent's desk: signed in to the router, offers streaming."""
        key = (principal.tenant, principal.subject)
        desk = self.desks.get(key)
        if desk is None:
            profile = self.profile(principal)

            async def emit(event: str, data: dict[str, Any]) -> None:
                if self._emit is not None:
                    await self._emit(profile.tenant, profile.agent_id, event, data)

            backends = self._backends(token, principal.tenant)
            desk = self.desks[key] = Desk(
                profile, backends, emit, self.surge_of, partial(self.name_of, principal.tenant)
            )
        desk.attach(sid)
        try:
            await desk.start()
        except BaseException:
            if not desk.started:
                self.desks.pop(key, None)
                await desk.close()
            raise
        await self._mark_ended(desk)
        return {
            **desk.state(),
            "wrap_up_codes": list(self.directory.codes(principal.tenant)),
            "break_reasons": list(BREAK_REASONS),
        }

    async def profiles_changed(self, before: Directory, after: Directory) -> None:
        """The directory changed at run time: desks open here take their agent's new profile
        (the router with it) and their tenant's wrap-up codes, and their sockets are told
        (``profile`` {agent, wrap_up_codes}); a disabled or removed agent's desk signs out and
        closes."""
        for key, desk in list(self.desks.items()):
            old, new = before.agents.get(key), after.agents.get(key)
            codes = after.codes(key[0])
            if new == old and codes == before.codes(key[0]):
                continue
            try:
                if new is None or new.disabled:
                    self.desks.pop(key, None)
                    await desk.sign_out()
                    await desk.close()
                    logger.info("desk of %s closed: the agent was disabled", key[1])
                    continue
                await desk.emit("profile", {"agent": new.to_wire(), "wrap_up_codes": list(codes)})
                if new != old:
                    await desk.apply_profile(new)
            except DomainError as exc:
                logger.warning("desk of %s kept its old profile: %s", key[1], exc)

    def desk(self, principal: sb_auth.Principal) -> Desk:
        desk = self.desks.get((principal.tenant, principal.subject))
        if desk is None or not desk.started:
            from switchboard.core.errors import FailedPrecondition

            raise FailedPrecondition("sign in to the inbox first (sign_in)")
        return desk

    def disconnected(self, principal: sb_auth.Principal, sid: str) -> None:
        key = (principal.tenant, principal.subject)
        desk = self.desks.get(key)
        if desk is not None and sid in desk.sockets:

            def idle() -> None:
                if self.desks.get(key) is desk and not desk.sockets:
                    self.desks.pop(key, None)
                    asyncio.get_running_loop().create_task(desk.close())

            desk.detach(sid, self.desk_grace_seconds, idle)
        watcher = self._watchers.pop(sid, None)
        if watcher is not None:
            watcher.cancel()

    async def close(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        self._watchers.clear()
        desks, self.desks = list(self.desks.values()), {}
        for desk in desks:
            await desk.close()

    # ---- conversations and replies ------------------------------------------------------------

    async def conversation(self, principal: sb_auth.Principal, contact_id: Any) -> dict[str, Any]:
        """What the conversation view shows for a non-chat contact: the contact as it arrived,
        the messages the case service recorded, and the agent's replies from this desk."""
        c = self.desk(principal).contact(contact_id)
        messages: list[dict[str, Any]] = []
        with contextlib.suppress(DomainError):
            found = await self._case_of(principal, c)
            if found is not None:
                for k in found.contacts:
                    if k.contact_id == c.contact_id:
                        messages = [wire.message(m) for m in k.messages]
        return {"contact": c.to_wire(), "messages": messages}

    async def reply(self, principal: sb_auth.Principal, data: Any) -> dict[str, Any]:
        """Send the agent's reply on the contact's own channel. With `retry_of` (the id of a
        reply whose delivery failed), that reply's text is sent again as a new command."""
        desk = self.desk(principal)
        c = desk.contact(data.get("contact_id") if isinstance(data, dict) else None)
        retry_of = data.get("retry_of")
        failed: dict[str, Any] | None = None
        if retry_of is not None:
            failed = next((r for r in c.replies if r.get("id") == retry_of), None)
            if failed is None:
                raise InvalidArgument("retry_of", "is not a reply to this contact")
            if failed.get("delivery") != "failed" or failed.get("retried"):
                raise FailedPrecondition("only a reply whose delivery failed can be sent again")
            data = {**data, "text": failed["text"]}
        text = check_text(
            data,
            self.chat.max_message_bytes * 16
            if c.channel != "chat"
            else self.chat.max_message_bytes,
        )
        channel = c.data["reply_channel"]
        if channel == "chat":
            sent = await self.chat.send_agent_message(
                principal.tenant, c.contact_id, principal.subject, text
            )
            reply = {"id": sent.message_id, "channel": "chat", "text": text, "sent_at": _now_ms()}
        elif channel == "email":
            reply = await self._email(principal, desk, c, text)
        elif channel == "fax":
            reply = await self._fax(principal, c, text)
        else:
            raise InvalidArgument("contact_id", "a voice contact is answered on the phone")
        if failed is not None:
            failed["retried"] = reply["id"]
        await desk.replied(c, reply)
        return reply

    async def on_delivery_status(self, event: events_pb2.DeliveryStatus) -> None:
        """What became of a reply sent by email or fax, taken from the bus by one replica:
        shared with every replica, whichever holds the agent's desk shows it."""
        await self._share(event)

    async def _delivery_status_here(self, event: events_pb2.DeliveryStatus) -> None:
        """Shown on the reply in every tab of the agent whose desk (in this process) holds the
        contact. States never go back: a late "sent" does not undo "delivered" or "failed"."""
        state = wire.DELIVERY_STATES.get(event.state)
        if state is None or not event.command_id:
            return
        for desk in list(self.desks.values()):
            if desk.tenant != event.meta.tenant:
                continue
            c = desk.contacts.get(event.contact_id)
            reply = (
                next((r for r in c.replies if r.get("id") == event.command_id), None) if c else None
            )
            if c is None or reply is None:
                continue
            if wire.DELIVERY_RANK[state] < wire.DELIVERY_RANK.get(reply.get("delivery", ""), 0):
                continue
            reply["delivery"] = state
            reply["delivery_detail"] = event.detail
            await desk.emit("contact", c.to_wire())

    async def on_contact_ended(self, event: events_pb2.ContactEnded) -> None:
        """A contact ended (the customer left, hung up), taken from the bus by one replica:
        shared with every replica, whichever holds the agent's desk shows it."""
        await self._share(event)

    async def _contact_ended_here(self, event: events_pb2.ContactEnded) -> None:
        """The desk of this process holding the contact keeps it, marked ended, until the agent
        wraps it up; every tab of the agent sees it."""
        for desk in list(self.desks.values()):
            if desk.tenant == event.meta.tenant:
                await desk.ended(event.contact_id)

    async def _mark_ended(self, desk: Desk) -> None:
        """Chats on the desk that ended while the event went to another chat replica: the
        shared conversation record says so."""
        for c in list(desk.contacts.values()):
            if c.ended or c.channel != "chat" or c.data.get("reply_channel") != "chat":
                continue
            conversation = await self.chat.store.get(desk.tenant, c.contact_id)
            if conversation is not None and conversation.ended:
                c.ended = True

    async def _case_of(self, principal: sb_auth.Principal, c: DeskContact) -> Any:
        case_stub = self.desk(principal).backends.case
        case_id = c.data.get("case_id")
        if not case_id:
            listed = await call(
                "ListCases",
                case_stub.ListCases(
                    case_pb2.ListCasesRequest(contact_id=c.contact_id, page_size=1)
                ),
            )
            if not listed.cases:
                return None
            case_id = listed.cases[0].case_id
        return await call("GetCase", case_stub.GetCase(case_pb2.GetCaseRequest(case_id=case_id)))

    async def _case_ref(self, principal: sb_auth.Principal, c: DeskContact) -> tuple[str, str]:
        try:
            found = await self._case_of(principal, c)
        except DomainError as exc:
            logger.info("no case for %s yet: %s", c.contact_id, exc)
            return c.data.get("case_id") or "", ""
        return (found.case_id, found.reference) if found is not None else ("", "")

    async def _email(
        self, principal: sb_auth.Principal, desk: Desk, c: DeskContact, text: str
    ) -> dict[str, Any]:
        to = _email_of(c.data)
        if not to:
            raise InvalidArgument("contact_id", "the customer left no email address")
        case_id, reference = await self._case_ref(principal, c)
        thread = c.data.get("conversation_id") or ""
        in_reply_to = thread if thread.startswith("<") and thread.endswith(">") else ""
        command = await self.chat.notifier.email_reply(
            principal.tenant,
            c.contact_id,
            case_id,
            reference,
            principal.subject,
            to,
            _reply_subject(c.data.get("subject") or ""),
            text,
            in_reply_to,
        )
        logger.info("email reply to contact %s queued (%s)", c.contact_id, command.meta.event_id)
        return {
            "id": command.meta.event_id,
            "channel": "email",
            "to": to,
            "subject": command.subject,
            "text": text,
            "sent_at": _now_ms(),
            "delivery": "queued",  # until the email channel reports (DeliveryStatus)
        }

    async def _fax(self, principal: sb_auth.Principal, c: DeskContact, text: str) -> dict[str, Any]:
        number = _phone_of(c.data)
        if not number:
            raise InvalidArgument("contact_id", "the fax came without a number to answer")
        case_id, reference = await self._case_ref(principal, c)
        command = await self.chat.notifier.fax_reply(
            principal.tenant, c.contact_id, case_id, reference, principal.subject, number, text
        )
        return {
            "id": command.meta.event_id,
            "channel": "fax",
            "to": number,
            "text": text,
            "sent_at": _now_ms(),
            "delivery": "queued",
        }

    def object_stores(self) -> stores.ObjectStores:
        if self._stores is None:  # bound on first use: a unit test's bus has no JetStream
            self._stores = stores.ObjectStores(self.bus.js)
        return self._stores

    async def read_object(self, bucket: str, name: str) -> bytes | None:
        """A file from the JetStream object store (where the channels keep them); None when it
        cannot be read, Erased when its customer was erased."""
        try:
            return await self.object_stores().get(bucket, name)
        except Erased:
            raise
        except Exception as exc:
            logger.info("attachment %s/%s not readable: %s", bucket, name, type(exc).__name__)
            return None

    # ---- the case side panel -------------------------------------------------------------------

    async def case_panel(self, principal: sb_auth.Principal, contact_id: Any) -> dict[str, Any]:
        """The contact's case (notes, status, SLA) and the customer's history across channels."""
        desk = self.desk(principal)
        c = desk.contact(contact_id)
        found = await self._case_of(principal, c)
        if found is None:
            return {"case": None, "history": []}
        history: list[dict[str, Any]] = []
        if found.customer.customer_id:
            try:
                h = await call(
                    "GetCustomerHistory",
                    desk.backends.case.GetCustomerHistory(
                        case_pb2.GetCustomerHistoryRequest(
                            customer_id=found.customer.customer_id, max_cases=20
                        )
                    ),
                )
                history = [wire.case(k, with_messages=False) for k in h.cases]
            except Unimplemented:
                pass
        return {"case": wire.case(found), "history": history}

    def _case_id(self, data: Any) -> str:
        case_id = data.get("case_id") if isinstance(data, dict) else None
        if not isinstance(case_id, str) or not case_id:
            raise InvalidArgument("case_id")
        return case_id

    async def add_note(self, principal: sb_auth.Principal, data: Any) -> dict[str, Any]:
        case_id = self._case_id(data)
        text = check_text(data, 8000)
        note = await call(
            "AddNote",
            self.desk(principal).backends.case.AddNote(
                case_pb2.AddNoteRequest(case_id=case_id, text=text)
            ),
        )
        return {
            "note_id": note.note_id,
            "author": note.author,
            "text": note.text,
            "at": wire.ms(note.created_at),
        }

    async def set_case_status(self, principal: sb_auth.Principal, data: Any) -> dict[str, Any]:
        case_id = self._case_id(data)
        status = wire.CASE_STATUS_BY_NAME.get(data.get("status"))
        if status is None:
            raise InvalidArgument("status", f"must be one of {', '.join(wire.CASE_STATUS_BY_NAME)}")
        reason = data.get("reason") or ""
        updated = await call(
            "UpdateCaseStatus",
            self.desk(principal).backends.case.UpdateCaseStatus(
                case_pb2.UpdateCaseStatusRequest(
                    case_id=case_id, status=status, reason=str(reason)[:500]
                )  # type: ignore[arg-type]
            ),
        )
        return wire.case(updated, with_messages=False)

    async def search_knowledge(self, principal: sb_auth.Principal, data: Any) -> dict[str, Any]:
        query = data.get("query") if isinstance(data, dict) else None
        if not isinstance(query, str) or not query.strip() or len(query) > 500:
            raise InvalidArgument("query", "must be 1-500 characters")
        language = data.get("language") or ""  # the agent's filter; empty: every language
        prefer = str(data.get("prefer") or "")  # the contact's language, listed first
        try:
            found = await call(
                "SearchKnowledge",
                self.desk(principal).backends.case.SearchKnowledge(
                    case_pb2.SearchKnowledgeRequest(
                        query=query.strip(), limit=KB_LIMIT, language=str(language)[:16]
                    )
                ),
            )
        except Unimplemented:
            return {"available": False, "hits": []}
        hits = (
            sorted(found.hits, key=lambda h: h.article.language != prefer) if prefer else found.hits
        )
        return {
            "available": True,
            "hits": [
                {
                    "article_id": h.article.article_id,
                    "title": h.article.title,
                    "body": h.article.body,
                    "language": h.article.language,
                    "snippet": h.snippet,
                }
                for h in hits
            ],
        }

    # ---- the supervisors' wallboard ------------------------------------------------------------

    def watch(
        self,
        principal: sb_auth.Principal,
        token: str,
        sid: str,
        send: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> dict[str, Any]:
        """Stream live statistics to one supervisor socket until it disconnects."""
        if not roles.RULES[WATCH_QUEUE_STATS].admits(principal):
            raise PermissionDenied("the wallboard needs the supervisor or team lead role")
        if sid not in self._watchers:
            self._watchers[sid] = asyncio.create_task(
                self._watch(principal, token, send), name=f"wallboard:{sid}"
            )
        return {
            "time_zone": self.time_zone_of(principal.tenant),
            "my_teams": self.directory.led_by(principal.tenant, principal.subject),
        }

    def board_agents(self, tenant: str, agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The router's agents with their directory team; when the tenant has teams, the team
        members not signed in are on the board as offline (a team lead sees the whole team)."""
        seen = set()
        for a in agents:
            profile = self.directory.profile(tenant, a["agent_id"])
            a["team"] = profile.team if profile else ""
            seen.add(a["agent_id"])
        for agent_id, team in sorted(self.directory.team_map(tenant).items()):
            profile = self.directory.profile(tenant, agent_id)
            if agent_id in seen or profile is None or profile.disabled:
                continue
            agents.append(
                {
                    "agent_id": agent_id,
                    "name": profile.name,
                    "presence": "offline",
                    "state": "offline",
                    "reason": "",
                    "active": 0,
                    "connected": False,
                    "pending_offer": False,
                    "since": None,
                    "languages": sorted(profile.languages),
                    "team": team,
                }
            )
        return agents

    def name_of(self, tenant: str, user_id: str) -> str:
        """A user's display name in the directory (its id when it has none there)."""
        profile = self.directory.profile(tenant, user_id)
        return profile.name if profile is not None and profile.name else user_id

    def board_teams(self, tenant: str) -> list[dict[str, Any]]:
        return [t.to_yaml() for t in self.directory.teams_of(tenant)]

    async def day_report(self, backends: Backends, tenant: str) -> dict[str, Any]:
        """Today (in the tenant's time zone) from the record: the case service's service-level
        report per 15 minutes, and the same contacts per local hour. A restart of the chat loses
        nothing: every figure is read back from the case service."""
        tz_name = self.time_zone_of(tenant)
        tz = ZoneInfo(tz_name)
        now = self.clock().astimezone(tz)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        request = case_pb2.GetReportRequest(
            kind=case_pb2.REPORT_KIND_SERVICE_LEVEL, interval="15m", time_zone=tz_name
        )
        getattr(request, "from").FromDatetime(start.astimezone(UTC))
        # To the end of the current quarter hour (the report's intervals are whole).
        end = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
        request.to.FromDatetime((end + timedelta(minutes=15)).astimezone(UTC))
        report = await call("GetReport", backends.case.GetReport(request))
        quarters: list[dict[str, Any]] = []
        hours: dict[int, dict[str, Any]] = {}
        for row in report.rows:
            values = {v.name: (v.value if v.defined else None) for v in row.values}
            local = row.interval_start.ToDatetime(UTC).astimezone(tz)
            counts = {k: int(values.get(k) or 0) for k in ("offered", "answered", "abandoned")}
            quarters.append(
                {
                    "start": wire.ms(row.interval_start),
                    "hour": local.hour,
                    "minute": local.minute,
                    **counts,
                    "service_level": values.get("service_level"),
                }
            )
            hour = hours.setdefault(
                local.hour, {"hour": local.hour, "offered": 0, "answered": 0, "abandoned": 0}
            )
            for k, n in counts.items():
                hour[k] += n
        return {
            "time_zone": tz_name,
            "date": start.date().isoformat(),
            "quarters": quarters,
            "hours": [hours[h] for h in sorted(hours)],
            "agents": await self._agents_today(backends, tz_name, start),
        }

    async def _agents_today(
        self, backends: Backends, tz_name: str, start: datetime
    ) -> dict[str, dict[str, float | None]]:
        """Each agent's day so far from the record (the agent-states report): time signed in
        and on a break, the breaks taken, the availability. Empty where the case service cannot
        say (the board's live figures go on)."""
        request = case_pb2.GetReportRequest(
            kind=case_pb2.REPORT_KIND_AGENT_STATES,
            interval="day",
            time_zone=tz_name,
            group_by=["agent"],
        )
        getattr(request, "from").FromDatetime(start.astimezone(UTC))
        request.to.FromDatetime((start + timedelta(days=1)).astimezone(UTC))
        try:
            report = await call("GetReport", backends.case.GetReport(request))
        except DomainError as exc:
            logger.info("wallboard agents' day: %s", exc)
            return {}
        shown = ("signed_in_s", "break_s", "breaks", "availability")
        return {
            row.agent_id: {
                v.name: (v.value if v.defined else None) for v in row.values if v.name in shown
            }
            for row in report.rows
            if row.agent_id
        }

    async def _watch(
        self,
        principal: sb_auth.Principal,
        token: str,
        send: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        tenant = principal.tenant
        backends = self._backends(token, tenant)
        report_task = asyncio.create_task(self._report_loop(backends, tenant, send))
        request = router_pb2.WatchQueueStatsRequest(interval=Duration(seconds=1))
        try:
            while True:
                try:
                    async for snap in backends.router.WatchQueueStats(request):
                        agents = await call(
                            "ListAgents", backends.router.ListAgents(router_pb2.ListAgentsRequest())
                        )
                        total = wire.queue_stats(snap.total)
                        await send(
                            "stats",
                            {
                                "at": wire.ms(snap.at),
                                "total": total,
                                "queues": [wire.queue_stats(q) for q in snap.queues],
                                "surge_level": int(snap.surge_level),
                                "agents": self.board_agents(
                                    tenant, [wire.agent(a) for a in agents.agents]
                                ),
                                # The tenant's teams; those the viewer leads are its default.
                                "teams": self.board_teams(tenant),
                                "my_teams": self.directory.led_by(tenant, principal.subject),
                            },
                        )
                except grpc.aio.AioRpcError as exc:
                    logger.info("wallboard stream ended: %s", exc.code().name)
                    await send("stats", {"error": exc.details() or exc.code().name})
                except DomainError as exc:
                    await send("stats", {"error": str(exc)})
                await asyncio.sleep(1.0)
        finally:
            await tasks.cancel_and_wait(report_task)
            await backends.close()

    async def _report_loop(
        self,
        backends: Backends,
        tenant: str,
        send: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        while True:
            try:
                await send("day", await self.day_report(backends, tenant))
            except DomainError as exc:  # the report is a nicety: the live figures go on
                logger.info("wallboard day report: %s", exc)
            await asyncio.sleep(REPORT_SECONDS)
