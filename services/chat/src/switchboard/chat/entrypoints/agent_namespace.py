"""The /agent Socket.IO namespace: the agents' unified inbox and the supervisors' wallboard.

Connect with ``auth = {token}``: a token from ``POST /api/agent/login`` (or any token with the
agent, team_lead or supervisor role). A missing, forged or expired token, a token without one of
those roles, or a disallowed origin is refused at connect with the reason (``connect_error``).

Events from the page, each acked ``{ok: true, ...}`` or ``{ok: false, error, kind}`` (kind: the
refusal's class, NotFound, FailedPrecondition, ... or Internal, for the page's own wording):

- ``sign_in`` {} -> the desk: {agent, presence, surge, offers, contacts, wrap_up_codes,
  break_reasons}. Signs the agent in to the router and opens its AgentSession stream (offers
  down; accepts, declines and wrap-ups up), kept for a grace period after the last socket goes,
  so a reload resumes. The socket joins its chats' rooms.
- ``presence`` {presence: available|break|offline, reason} -> {presence}; a break the surge
  protocol refuses is ``{ok: false, error: <the router's reason>, locked: true}``.
- ``accept`` {offer_id} -> {contact}; ``decline`` {offer_id, reason}.
- ``join`` {contact_id} -> a chat's history (and its live room); ``open`` {contact_id} -> any
  other contact as arrived, with the case's recorded messages.
- ``reply`` {contact_id, text}: on the contact's own channel (chat message, OutboundEmail,
  OutboundFax); {contact_id, retry_of: <reply id>} sends a reply whose delivery failed again. ``message`` {contact_id, text}: a chat message (the CLI agent uses it).
- ``typing`` {contact_id, typing}; ``read`` {contact_id, message_id}.
- ``hold`` {contact_id, held}; ``wrap_up`` {contact_id, code}.
- ``case`` {contact_id} -> {case, history}; ``note`` {case_id, text}; ``case_status``
  {case_id, status, reason}; ``kb_search`` {query, language, prefer} -> {available, hits}
  (language: only that language, empty for all; prefer: listed first, the contact's language).
- ``watch`` {} (supervisors) -> {time_zone}; then ``stats`` every second and ``day``
  {time_zone, date, quarters: [...], hours: [...]} every minute: today in the tenant's time
  zone from the case service's service-level report, per 15 minutes and per local hour.
- ``live_chats`` {} (supervisors) -> {chats: [{contact_id, customer_name, language, agent_id,
  agent_name, started_at, waiting_since}]}: the tenant's chats in progress.
- ``supervise`` {contact_id} (supervisors) -> {contact_id, customer_name, agent_id, agent_name,
  messages}: watch a live chat of the tenant read-only; the socket joins its room (``message``,
  ``status``...). ``unsupervise`` {contact_id} stops (so does disconnecting).
- ``whisper`` {contact_id, text} (supervisors, on a chat they watch) -> {note}: a private note
  to the chat's agent, emitted as ``supervisor_note`` {note_id, contact_id, text, supervisor_id,
  supervisor_name, at} to the agent's room only, never to the customer.
- ``live_calls`` {} (supervisors) -> {calls: [{contact_id, agent_id, agent_name, started_at}]}:
  the tenant's calls in progress.
- ``listen`` {contact_id, mode: monitor|whisper|barge} (supervisors) -> {supervision_id,
  contact_id, mode}: the voice gateway rings the supervisor's own phone; acked once it is
  answered (or with the gateway's refusal). ``listen_mode`` {supervision_id, mode} -> {mode}
  changes the mode without redialling; ``leave_call`` {supervision_id} hangs up the
  supervisor's phone (so does disconnecting).

Events to the page: ``offer``, ``offer_gone``, ``contact``, ``contact_gone``, ``presence``,
``surge``, ``desk_error``, ``supervisor_note``, ``profile`` {agent, wrap_up_codes} (an administrator
changed the agent or the tenant's wrap-up codes) (to the agent's room: every tab of the agent;
``contact`` again when an email or fax reply's delivery state changes), and from the chat:
``message``, ``typing``, ``receipt``, ``status``, ``rated`` (to the contact's room).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from opentelemetry.trace import SpanKind, Status, StatusCode

from switchboard.chat.config import ChatConfig
from switchboard.chat.domain.model import MessageTooLarge
from switchboard.chat.entrypoints import payloads
from switchboard.chat.entrypoints.rooms import AGENT, agent_room, contact_room
from switchboard.chat.entrypoints.socket_common import (
    INTERNAL_ERROR,
    ChatLimits,
    acked,
    check_origin,
    refusal,
    tag,
    tracer,
)
from switchboard.chat.handlers import Chat
from switchboard.chat.inbox.calls import Listening
from switchboard.chat.inbox.service import Inbox
from switchboard.core import auth as sb_auth
from switchboard.core import roles
from switchboard.core.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

logger = logging.getLogger(__name__)


class AgentNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(
        self,
        chat: Chat,
        secret: str,
        known_tenants: frozenset[str] | None,
        config: ChatConfig | None = None,
        inbox: Inbox | None = None,
        token_max_lifetime: int | None = None,
        revocations: sb_auth.Revoked | None = None,
        limits: ChatLimits | None = None,
    ) -> None:
        super().__init__(AGENT)
        self.chat = chat
        self.verify = sb_auth.Verifier(secret, known_tenants, token_max_lifetime, revocations)
        self.config = config or ChatConfig()
        self.limits = limits or ChatLimits(self.config.limits)
        self.inbox = inbox
        if inbox is not None:
            inbox.set_emitter(self._to_agent)

    async def _to_agent(self, tenant: str, agent_id: str, event: str, data: dict[str, Any]) -> None:
        await self.emit(event, data, room=agent_room(tenant, agent_id))

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        with tracer.start_as_current_span("chat.agent_connect", kind=SpanKind.SERVER) as span:
            try:
                token = auth.get("token") if isinstance(auth, dict) else None
                if not token or not isinstance(token, str):
                    raise InvalidArgument("token", "is required (sign in at /inbox)")
                principal = verify_agent(self.verify, token)
                check_origin(environ, principal.tenant, self.config)  # connection plumbing (part 1)
            except DomainError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise refusal(exc) from None
            except Exception as exc:
                span.record_exception(exc)
                logger.exception("agent connect failed")
                raise socketio.exceptions.ConnectionRefusedError(INTERNAL_ERROR) from None
            span.set_attribute("switchboard.tenant", principal.tenant)
            await self.save_session(sid, {"principal": principal, "token": token})
            await self.enter_room(sid, agent_room(principal.tenant, principal.subject))

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        if self.inbox is None:
            return
        try:
            session = await self.get_session(sid)
        except KeyError:
            return
        self.inbox.disconnected(session["principal"], sid)
        for listening in list(session.get("listening", {}).values()):
            try:
                await self.inbox.calls.leave(session["token"], listening)
            except Exception:
                logger.warning("leaving call %s failed", listening.contact_id)
        for contact_id in list(session.get("supervising", ())):
            try:
                await self.inbox.supervision.stop(session["principal"], contact_id)
            except Exception:
                logger.warning("the end of watching chat %s went unrecorded", contact_id)

    async def _principal(self, sid: str) -> sb_auth.Principal:
        """The agent of `sid`, once they have paid for the event (one budget for them all)."""
        principal: sb_auth.Principal = (await self.get_session(sid))["principal"]
        tag(principal.tenant)
        self.limits.agent(principal.tenant, principal.subject)
        return principal

    def _inbox(self) -> Inbox:
        if self.inbox is None:
            raise Unavailable("the inbox is not configured on this chat server")
        return self.inbox

    async def _run(
        self, name: str, sid: str, work: Callable[[sb_auth.Principal], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            return {"ok": True, **await work(await self._principal(sid))}

        result = await acked(f"chat.agent_{name}", run, kind=True)
        if not result.get("ok") and name == "presence" and "surge" in str(result.get("error")):
            result["locked"] = True
        return result

    # ---- desk ----------------------------------------------------------------------------------

    async def on_sign_in(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def sign_in(p: sb_auth.Principal) -> dict[str, Any]:
            token: str = (await self.get_session(sid))["token"]
            state = await self._inbox().sign_in(p, token, sid)
            for c in state["contacts"]:
                if c["channel"] == "chat":
                    await self.enter_room(sid, contact_room(c["contact_id"]))
            return state

        return await self._run("sign_in", sid, sign_in)

    async def on_presence(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def presence(p: sb_auth.Principal) -> dict[str, Any]:
            d = data if isinstance(data, dict) else {}
            got = await self._inbox().desk(p).set_presence(d.get("presence"), d.get("reason", ""))
            return {"presence": got}

        return await self._run("presence", sid, presence)

    async def on_accept(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def accept(p: sb_auth.Principal) -> dict[str, Any]:
            offer_id = data.get("offer_id") if isinstance(data, dict) else None
            contact = await self._inbox().desk(p).accept(offer_id)
            if contact.channel == "chat":
                await self.enter_room(sid, contact_room(contact.contact_id))
            return {"contact": contact.to_wire()}

        return await self._run("accept", sid, accept)

    async def on_decline(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def decline(p: sb_auth.Principal) -> dict[str, Any]:
            d = data if isinstance(data, dict) else {}
            await self._inbox().desk(p).decline(d.get("offer_id"), d.get("reason", ""))
            return {}

        return await self._run("decline", sid, decline)

    async def on_open(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def open_(p: sb_auth.Principal) -> dict[str, Any]:
            contact_id = data.get("contact_id") if isinstance(data, dict) else None
            return await self._inbox().conversation(p, contact_id)

        return await self._run("open", sid, open_)

    async def on_reply(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def reply(p: sb_auth.Principal) -> dict[str, Any]:
            return {"reply": await self._inbox().reply(p, data)}

        return await self._run("reply", sid, reply)

    async def on_hold(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def hold(p: sb_auth.Principal) -> dict[str, Any]:
            d = data if isinstance(data, dict) else {}
            c = await self._inbox().desk(p).hold(d.get("contact_id"), bool(d.get("held")))
            return {"contact": c.to_wire()}

        return await self._run("hold", sid, hold)

    async def on_wrap_up(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def wrap_up(p: sb_auth.Principal) -> dict[str, Any]:
            d = data if isinstance(data, dict) else {}
            inbox = self._inbox()
            contact_id = d.get("contact_id")
            await inbox.desk(p).wrap_up(contact_id, d.get("code"), inbox.directory.codes(p.tenant))
            if isinstance(contact_id, str):
                await self.leave_room(sid, contact_room(contact_id))
            return {}

        return await self._run("wrap_up", sid, wrap_up)

    async def on_typing(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def typing(p: sb_auth.Principal) -> dict[str, Any]:
            d = data if isinstance(data, dict) else {}
            contact_id = d.get("contact_id")
            if not isinstance(contact_id, str) or not contact_id:
                raise InvalidArgument("contact_id")
            await self.chat.agent_typing(p.tenant, contact_id, p.subject, bool(d.get("typing")))
            return {}

        return await self._run("typing", sid, typing)

    async def on_read(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def read(p: sb_auth.Principal) -> dict[str, Any]:
            d = data if isinstance(data, dict) else {}
            contact_id, message_id = d.get("contact_id"), d.get("message_id")
            if not isinstance(contact_id, str) or not isinstance(message_id, str):
                raise InvalidArgument("contact_id", "and message_id are required")
            await self.chat.agent_receipt(p.tenant, contact_id, p.subject, message_id, "read")
            return {}

        return await self._run("read", sid, read)

    # ---- case side panel -----------------------------------------------------------------------

    async def on_case(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def case(p: sb_auth.Principal) -> dict[str, Any]:
            contact_id = data.get("contact_id") if isinstance(data, dict) else None
            return await self._inbox().case_panel(p, contact_id)

        return await self._run("case", sid, case)

    async def on_note(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def note(p: sb_auth.Principal) -> dict[str, Any]:
            return {"note": await self._inbox().add_note(p, data)}

        return await self._run("note", sid, note)

    async def on_case_status(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def status(p: sb_auth.Principal) -> dict[str, Any]:
            return {"case": await self._inbox().set_case_status(p, data)}

        return await self._run("case_status", sid, status)

    async def on_kb_search(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def search(p: sb_auth.Principal) -> dict[str, Any]:
            return await self._inbox().search_knowledge(p, data)

        return await self._run("kb_search", sid, search)

    # ---- wallboard -----------------------------------------------------------------------------

    async def on_watch(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def watch(p: sb_auth.Principal) -> dict[str, Any]:
            token: str = (await self.get_session(sid))["token"]

            async def send(event: str, data: dict[str, Any]) -> None:
                await self.emit(event, data, to=sid)

            return self._inbox().watch(p, token, sid, send)

        return await self._run("watch", sid, watch)

    async def on_agent_presence(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def set_presence(p: sb_auth.Principal) -> dict[str, Any]:
            token: str = (await self.get_session(sid))["token"]
            return {"agent": await self._inbox().supervision.set_agent_presence(p, token, data)}

        return await self._run("agent_presence", sid, set_presence)

    # ---- supervision of live chats --------------------------------------------------------------

    async def _supervising(self, sid: str) -> set[str]:
        session = await self.get_session(sid)
        watched: set[str] = session.setdefault("supervising", set())
        await self.save_session(sid, session)
        return watched

    async def on_live_chats(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def live(p: sb_auth.Principal) -> dict[str, Any]:
            token: str = (await self.get_session(sid))["token"]
            return {"chats": await self._inbox().supervision.live_chats(p, token)}

        return await self._run("live_chats", sid, live)

    async def on_supervise(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def supervise(p: sb_auth.Principal) -> dict[str, Any]:
            supervision = self._inbox().supervision
            contact_id = data.get("contact_id") if isinstance(data, dict) else None
            # Checked before the room is joined; joined before the history is read, so that no
            # message falls between them (the page drops one it has twice).
            await supervision.check(p, contact_id)
            room = contact_room(str(contact_id))
            await self.enter_room(sid, room)
            try:
                watched = await supervision.start(p, contact_id)
            except BaseException:
                await self.leave_room(sid, room)
                raise
            (await self._supervising(sid)).add(watched["contact_id"])
            return watched

        return await self._run("supervise", sid, supervise)

    async def on_unsupervise(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def unsupervise(p: sb_auth.Principal) -> dict[str, Any]:
            contact_id = data.get("contact_id") if isinstance(data, dict) else None
            watched = await self._supervising(sid)
            if not isinstance(contact_id, str) or contact_id not in watched:
                raise FailedPrecondition("this chat is not being watched here")
            watched.discard(contact_id)
            await self.leave_room(sid, contact_room(contact_id))
            await self._inbox().supervision.stop(p, contact_id)
            return {}

        return await self._run("unsupervise", sid, unsupervise)

    async def on_whisper(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def whisper(p: sb_auth.Principal) -> dict[str, Any]:
            contact_id = data.get("contact_id") if isinstance(data, dict) else None
            if not isinstance(contact_id, str) or contact_id not in await self._supervising(sid):
                raise FailedPrecondition("watch the chat before sending its agent a note")
            return {"note": await self._inbox().supervision.note(p, data)}

        return await self._run("whisper", sid, whisper)

    # ---- supervision of live calls --------------------------------------------------------------

    async def _listening(self, sid: str) -> dict[str, Listening]:
        session = await self.get_session(sid)
        listening: dict[str, Listening] = session.setdefault("listening", {})
        await self.save_session(sid, session)
        return listening

    async def _held(self, sid: str, data: Any) -> Listening:
        supervision_id = data.get("supervision_id") if isinstance(data, dict) else None
        listening = (await self._listening(sid)).get(str(supervision_id))
        if listening is None:
            raise FailedPrecondition("this call is not being listened to here")
        return listening

    async def on_live_calls(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def live(p: sb_auth.Principal) -> dict[str, Any]:
            token: str = (await self.get_session(sid))["token"]
            return {"calls": await self._inbox().calls.live_calls(p, token)}

        return await self._run("live_calls", sid, live)

    async def on_listen(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def listen(p: sb_auth.Principal) -> dict[str, Any]:
            token: str = (await self.get_session(sid))["token"]
            data_ = data if isinstance(data, dict) else {}
            # Blocks until the supervisor answers their phone (each event runs on its own).
            listening = await self._inbox().calls.listen(
                p, token, data_.get("contact_id"), data_.get("mode")
            )
            if not self.server.manager.is_connected(sid, self.namespace):
                # The page went away while the phone rang: hang the phone up again.
                await self._inbox().calls.leave(token, listening)
                raise FailedPrecondition("the wallboard closed before the phone was answered")
            (await self._listening(sid))[listening.supervision_id] = listening
            return {
                "supervision_id": listening.supervision_id,
                "contact_id": listening.contact_id,
                "mode": listening.mode,
            }

        return await self._run("listen", sid, listen)

    async def on_listen_mode(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def mode(p: sb_auth.Principal) -> dict[str, Any]:
            token: str = (await self.get_session(sid))["token"]
            listening = await self._held(sid, data)
            new = await self._inbox().calls.set_mode(token, listening, data.get("mode"))
            return {"mode": new}

        return await self._run("listen_mode", sid, mode)

    async def on_leave_call(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def leave(p: sb_auth.Principal) -> dict[str, Any]:
            token: str = (await self.get_session(sid))["token"]
            listening = await self._held(sid, data)
            (await self._listening(sid)).pop(listening.supervision_id, None)
            try:
                await self._inbox().calls.leave(token, listening)
            except NotFound:
                pass  # the call or the supervisor's phone already ended it
            return {}

        return await self._run("leave_call", sid, leave)

    # ---- chat (also used by the CLI agent) -----------------------------------------------------

    async def on_join(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def join() -> dict[str, Any]:
            principal = await self._principal(sid)
            conversation = await self.chat.agent_join(principal, payloads.contact_id(data))
            await self.enter_room(sid, contact_room(conversation.contact_id))
            return {
                "ok": True,
                "contact_id": conversation.contact_id,
                "customer_name": conversation.customer_name,
                "language": conversation.language,
                "ended": conversation.ended,
                "rated": conversation.rated,
                "rating": conversation.rating,
                "messages": conversation.history(),
            }

        return await acked("chat.agent_join", join, kind=True)

    async def on_message(self, sid: str, data: Any = None) -> dict[str, Any]:
        async def send() -> dict[str, Any]:
            message = payloads.agent_message(data, self.chat.max_message_bytes)
            sent = await self.chat.agent_message(await self._principal(sid), message)
            return {"ok": True, "message_id": sent.message_id}

        async def tell(exc: DomainError) -> None:
            if isinstance(exc, MessageTooLarge):
                await self.emit("error", {"code": exc.code, "message": str(exc)}, to=sid)

        return await acked("chat.agent_message", send, tell, kind=True)


def verify_agent(verify: sb_auth.Verifier, token: str) -> sb_auth.Principal:
    """Verify an agent's token; only the people who take contacts at a desk use the inbox."""
    principal = verify(token)
    if not principal.has_any(*roles.DESK):
        raise PermissionDenied("the agent inbox needs the agent, team_lead or supervisor role")
    return principal
