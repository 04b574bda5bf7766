"""The gateway's SIP user agent: answers requests (REGISTER, OPTIONS, INVITE, BYE, CANCEL,
INFO, REFER), limits concurrent calls, and runs each call's steps (see calls.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import grpc
import phonenumbers

from switchboard.v1 import events_pb2
from switchboard.voice_gateway.adapters import RouterClient
from switchboard.voice_gateway.calls import Call, Leg, State
from switchboard.voice_gateway.config import VoiceConfig
from switchboard.voice_gateway.media import sdp
from switchboard.voice_gateway.media.prompts import Prompts
from switchboard.voice_gateway.media.rtp import MediaEngine, RtpSession
from switchboard.voice_gateway.notifier import VoiceNotifier, now
from switchboard.voice_gateway.sip.dialog import Dialog
from switchboard.voice_gateway.sip.message import NameAddr, SipMessage, SipSyntaxError, Uri
from switchboard.voice_gateway.sip.registrar import Binding, Registrar
from switchboard.voice_gateway.sip.transactions import (
    TIMEOUT,
    ServerTransaction,
    TransactionLayer,
    new_branch,
    new_tag,
)
from switchboard.voice_gateway.sip.transport import Peer

logger = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, REFER, NOTIFY"
MAX_MISSED_PINGS = 2  # unanswered OPTIONS keepalives in a row before a phone is unregistered
KNOWN = frozenset(ALLOW.replace(" ", "").split(",")) | {"UPDATE", "PRACK", "SUBSCRIBE", "MESSAGE"}


def e164(user: str) -> str:
    """The caller's number in E.164 when it parses as one, else as given."""
    try:
        number = phonenumbers.parse(user if user.startswith("+") else "+" + user)
    except phonenumbers.NumberParseException:
        return user
    if phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return user


class Gateway:
    def __init__(
        self,
        config: VoiceConfig,
        sip: TransactionLayer,
        media: MediaEngine,
        prompts: Prompts,
        notifier: VoiceNotifier,
        router: RouterClient,
        max_calls: int,
        retry_after: int,
        ring_timeout: float,
        position_poll: float,
        options_ping: float = 30.0,
    ) -> None:
        self.config = config
        self.sip = sip
        self.media = media
        self.prompts = prompts
        self.notifier = notifier
        self.router = router
        self.max_calls = max_calls
        self.retry_after = retry_after
        self.ring_timeout = ring_timeout
        self.position_poll = position_poll
        self.options_ping = options_ping
        self._keepalive: asyncio.Task[None] | None = None
        self.registrar = Registrar(config.realm, config.phones)
        self.calls: dict[str, Call] = {}  # contact id -> call
        self.by_dialog: dict[str, Call] = {}  # SIP Call-ID of either leg -> call
        self.rejected_busy = 0
        sip.on_request = self.on_request

    # ---- OPTIONS keepalives to registered phones ------------------------------------------------

    def start(self) -> None:
        self._keepalive = asyncio.create_task(self._ping_phones())

    async def _ping_phones(self) -> None:
        """Every `options_ping` seconds, OPTIONS to each registered phone; one that does not
        answer twice in a row is unregistered, so an offer never rings a dead phone."""
        while True:
            await asyncio.sleep(self.options_ping)
            bindings = list(self.registrar.bindings.values())
            await asyncio.gather(*(self._ping(b) for b in bindings), return_exceptions=True)

    async def _ping(self, binding: Binding) -> None:
        ping = SipMessage(method="OPTIONS", uri=binding.contact)
        ping.add("From", f"<sip:gateway@{self.sip.advertised}>;tag={new_tag()}")
        ping.add("To", f"<sip:{binding.agent_id}@{self.sip.advertised}>")
        ping.add("Call-ID", uuid.uuid4().hex)
        ping.add("CSeq", "1 OPTIONS")
        ping.add("Max-Forwards", "70")
        ping.add("Contact", self.contact_header(binding.peer))
        ping.add("Accept", "application/sdp")
        tx = self.sip.request(ping, binding.peer, timeout=min(TIMEOUT, self.options_ping))
        await tx.future
        if not tx.timed_out:  # any response, even an error, shows the phone is there
            binding.missed_pings = 0
            return
        binding.missed_pings += 1
        logger.info("%s's phone missed keepalive %d", binding.agent_id, binding.missed_pings)
        if binding.missed_pings >= MAX_MISSED_PINGS and self.registrar.unregister(binding):
            logger.warning("%s's phone does not answer: unregistered", binding.agent_id)

    # ---- helpers ------------------------------------------------------------------------------

    def contact_header(self, peer: Peer) -> str:
        t = "" if peer.transport == "udp" else f";transport={peer.transport}"
        return f"<sip:gateway@{self.sip.advertised}:{self.sip.port}{t}>"

    def live_calls(self) -> int:
        # Counted from the INVITE on (not from the media port), so a burst cannot overshoot.
        return sum(1 for c in self.calls.values() if c.state is not State.CALLBACK)

    def _respond(self, tx: ServerTransaction, status: int, reason: str, tag: str = "") -> None:
        self.sip.respond(tx, tx.request.response(status, reason, tag))

    # ---- requests -----------------------------------------------------------------------------

    def on_request(self, msg: SipMessage, peer: Peer, tx: ServerTransaction) -> None:
        method = msg.method
        if method == "REGISTER":
            self.sip.respond(tx, self.registrar.register(msg, peer))
        elif method == "OPTIONS":
            resp = msg.response(200, "OK", new_tag())
            resp.add("Allow", ALLOW)
            resp.add("Accept", "application/sdp, application/dtmf-relay, application/dtmf")
            self.sip.respond(tx, resp)
        elif method == "INVITE":
            if NameAddr.parse(msg.get("To")).tag:
                self._reinvite(msg, tx)
            else:
                self._new_call(msg, peer, tx)
        elif method == "CANCEL":
            self._cancel(msg, tx)
        elif method == "BYE":
            self._bye(msg, tx)
        elif method == "INFO":
            self._info(msg, tx)
        elif method == "REFER":
            self._refer(msg, peer, tx)
        elif method == "NOTIFY":
            self._respond(tx, 200, "OK")
        elif method in KNOWN:
            resp = msg.response(405, "Method Not Allowed")
            resp.add("Allow", ALLOW)
            self.sip.respond(tx, resp)
        else:
            self._respond(tx, 501, "Not Implemented")

    def _find(self, msg: SipMessage) -> tuple[Call, Leg] | None:
        call = self.by_dialog.get(msg.call_id)
        if call is None:
            return None
        for leg in (call.caller, call.agent):
            if leg is not None and leg.dialog.matches(msg):
                return call, leg
        return None

    # ---- a new call from the trunk ------------------------------------------------------------

    def _new_call(self, msg: SipMessage, peer: Peer, tx: ServerTransaction) -> None:
        if msg.call_id in self.by_dialog:
            self._respond(tx, 482, "Loop Detected")
            return
        if self.live_calls() >= self.max_calls:
            self.rejected_busy += 1
            resp = msg.response(503, "Service Unavailable: call limit reached")
            resp.add("Retry-After", str(self.retry_after))
            self.sip.respond(tx, resp)
            return
        dialled = Uri.parse(msg.uri).user or Uri.parse(NameAddr.parse(msg.get("To")).uri).user
        plan = self.config.plan_for(dialled)
        if plan is None:
            self._respond(tx, 404, "Number Not Configured")
            return
        try:
            offer = sdp.parse(msg.body) if msg.body else None
        except sdp.SdpError as exc:
            self._respond(tx, 488, f"Not Acceptable Here: {exc}")
            return
        pt = sdp.choose(offer) if offer else None
        if offer is None or pt is None:
            self._respond(tx, 488, "Not Acceptable Here: offer PCMU or PCMA")
            return
        frm = Uri.parse(NameAddr.parse(msg.get("From")).uri)
        call = Call(
            contact_id=uuid.uuid4().hex,
            plan=plan,
            caller_number=e164(frm.user) if frm.user else "",
            dialled=plan.number,
            caller=None,
            payload_type=pt,
            language=plan.language,
            queue=plan.queue,
        )
        self.calls[call.contact_id] = call
        self.by_dialog[msg.call_id] = call
        call.spawn(self._answer(call, msg, peer, tx, offer))

    async def _answer(
        self, call: Call, msg: SipMessage, peer: Peer, tx: ServerTransaction, offer: sdp.Sdp
    ) -> None:
        try:
            rtp = await self.media.open()
        except OSError:
            self._respond(tx, 503, "Service Unavailable: no media port")
            self._forget(call)
            return
        self._setup_rtp(rtp, call.payload_type, offer)
        rtp.on_dtmf = call.digits.put_nowait
        tag = new_tag()
        call.caller = Leg(Dialog.as_uas(msg, peer, tag), rtp)
        resp = msg.response(200, "OK", tag)
        resp.add("Contact", self.contact_header(peer))
        resp.add("Allow", ALLOW)
        resp.add("Content-Type", "application/sdp")
        resp.body = sdp.build(
            self.media.host,
            rtp.port,
            call.payload_type,
            "sendrecv",
            101 if offer.telephone_event else None,
        )

        def on_ack_timeout() -> None:
            call.spawn(self._hangup_caller(call, "no ACK"))

        tx.on_ack_timeout = on_ack_timeout
        self.sip.respond(tx, resp)
        logger.info("call %s to %s answered", call.contact_id, call.dialled)
        await self._ivr(call)

    def _setup_rtp(self, rtp: RtpSession, pt: int, remote: sdp.Sdp) -> None:
        rtp.payload_type = pt
        rtp.telephone_event = remote.telephone_event or 101
        rtp.set_remote(remote.host, remote.port)

    # ---- IVR and queue ------------------------------------------------------------------------

    async def _play(self, call: Call, names: list[str], loop: bool = False) -> None:
        if call.caller is None:
            return
        audio = self.prompts.sequence(names, call.payload_type)
        with contextlib.suppress(asyncio.CancelledError):
            await call.caller.rtp.play(audio, loop)

    async def _menu(self, call: Call, prompt: str, options: dict[str, str]) -> str | None:
        """Play the menu and return the chosen option (None on timeout)."""
        for attempt in range(2):
            # Keys pressed during the previous prompt count (type-ahead), except after an error.
            while attempt and not call.digits.empty():
                call.digits.get_nowait()
            if call.caller is None:
                return None
            done = call.caller.rtp.play(self.prompts.get(prompt, call.payload_type))
            try:
                digit = await asyncio.wait_for(
                    call.digits.get(), call.plan.menu_timeout + self._duration(prompt)
                )
            except TimeoutError:
                return None
            finally:
                if not done.done():
                    call.caller.rtp.stop_playing()
            if digit in options:
                return options[digit]
            await self._play(call, ["invalid"])
        return None

    def _duration(self, prompt: str) -> float:
        return len(self.prompts.get(prompt, 0)) / 8000

    async def _ivr(self, call: Call) -> None:
        plan = call.plan
        await self._play(call, ["welcome"])
        if plan.language_menu:
            choice = await self._menu(call, plan.language_menu.prompt, plan.language_menu.options)
            call.language = choice or plan.language
        if plan.topic_menu:
            choice = await self._menu(call, plan.topic_menu.prompt, plan.topic_menu.options)
            call.skills = [choice] if choice else []
        if call.state is not State.IVR:
            return
        call.state = State.QUEUED
        call.queued_at = time.monotonic()
        self._hold_music(call)
        await self.notifier.contact_created(
            call.tenant,
            call.contact_id,
            call.caller_number,
            call.language,
            call.skills,
            call.queue,
            call.dialled,
            now(),
        )
        logger.info("call %s queued in %s (%s)", call.contact_id, call.queue, call.language)
        call.spawn(self._announcements(call))
        call.spawn(self._queue_keys(call))

    def _hold_music(self, call: Call) -> None:
        if call.caller is not None:
            call.caller.rtp.bridge = None
            call.caller.rtp.play(self.prompts.get("music-on-hold", call.payload_type), loop=True)

    async def _announcements(self, call: Call) -> None:
        """Every `announce_every`, tell a waiting caller their position and estimated wait."""
        first = True
        while call.state is State.QUEUED:
            await asyncio.sleep(self.position_poll if first else call.plan.announce_every)
            first = False
            if call.state is not State.QUEUED:
                return
            names = ["please-hold"]
            pos = await self.router.position(call.tenant, call.contact_id)
            if pos is not None and pos.position > 0 and call.state is State.QUEUED:
                names += ["position", *(f"digit-{d}" for d in str(pos.position))]
                minutes = max(1, round(pos.estimated_wait / 60))
                names += ["wait-minutes", *(f"digit-{d}" for d in str(minutes))]
            if call.plan.callback_key:
                names.append("callback-offer")
            await self._play(call, names)
            if call.state is State.QUEUED:
                self._hold_music(call)

    async def _queue_keys(self, call: Call) -> None:
        # Lives until the call ends: a caller transferred back to a queue can still choose
        # the callback (keys pressed while connected are ignored).
        while call.state not in (State.ENDED, State.CALLBACK):
            digit = await call.digits.get()
            if digit == call.plan.callback_key and call.state is State.QUEUED:
                await self._choose_callback(call)
                return

    async def _choose_callback(self, call: Call) -> None:
        call.state = State.CALLBACK
        await self._play(call, ["callback-confirmed", "goodbye"])
        await self._bye_leg(call, call.caller)
        self._drop_caller(call)
        # The contact keeps its place in the router's queue; this marks it as a callback.
        await self.notifier.contact_created(
            call.tenant,
            call.contact_id,
            call.caller_number,
            call.language,
            call.skills,
            call.queue,
            call.dialled,
            now(),
            callback=True,
        )
        logger.info("call %s becomes a callback to %s", call.contact_id, call.caller_number)

    # ---- offers from the router -----------------------------------------------------------------

    async def on_offered(self, event: events_pb2.ContactOffered) -> None:
        call = self.calls.get(event.contact_id)
        if call is None or event.offer_id in call.handled_offers:
            return  # not a call of this replica, or a redelivery
        call.handled_offers.add(event.offer_id)
        if call.state not in (State.QUEUED, State.CALLBACK):
            await self.router.decline(call.tenant, event.agent_id, event.offer_id, "call busy")
            return
        expires = event.expires_at.ToNanoseconds() / 1e9 if event.HasField("expires_at") else 0
        timeout = self.ring_timeout
        if expires:
            timeout = max(0.5, min(timeout, expires - time.time() - 0.5))
        call.ring_task = call.spawn(self._ring(call, event.agent_id, event.offer_id, timeout))

    async def _ring(self, call: Call, agent_id: str, offer_id: str, timeout: float) -> None:
        binding = self.registrar.lookup(agent_id)
        if binding is None:
            logger.info("offer %s: %s has no registered phone", offer_id, agent_id)
            await self.router.decline(call.tenant, agent_id, offer_id, "phone not registered")
            return
        was_callback = call.state is State.CALLBACK
        if not was_callback:
            call.state = State.RINGING
        rtp = await self.media.open()
        rtp.payload_type = call.payload_type
        leg_call_id = uuid.uuid4().hex
        invite = SipMessage(method="INVITE", uri=binding.contact)
        caller = call.caller_number or "anonymous"
        invite.add("From", f'"{caller}" <sip:{caller}@{self.sip.advertised}>;tag={new_tag()}')
        invite.add("To", f"<sip:{agent_id}@{self.sip.advertised}>")
        invite.add("Call-ID", leg_call_id)
        invite.add("CSeq", "1 INVITE")
        invite.add("Max-Forwards", "70")
        invite.add("Contact", self.contact_header(binding.peer))
        invite.add("Subject", f"{call.queue} {call.language}".strip())
        invite.add("Content-Type", "application/sdp")
        invite.body = sdp.build(self.media.host, rtp.port, call.payload_type)
        self.by_dialog[leg_call_id] = call
        tx = self.sip.request(invite, binding.peer)
        call.ringing = tx
        answered: SipMessage | None = None
        try:
            try:
                resp = await asyncio.wait_for(asyncio.shield(tx.future), timeout)
            except TimeoutError:
                # A CANCEL may only follow a provisional response (section 9.1).
                ringing = asyncio.ensure_future(tx.provisional.wait())
                pending: list[asyncio.Future[Any]] = [ringing, tx.future]
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                ringing.cancel()
                if not tx.future.done():
                    self.sip.cancel(tx)
                resp = await tx.future
            if 200 <= resp.status < 300:
                answered = resp
                dialog = Dialog.as_uac(invite, resp, binding.peer)
                ack = dialog.request("ACK", self.contact_header(binding.peer))
                ack.set("CSeq", f"{invite.cseq[0]} ACK")
                tx.ack = self._send_ack(ack, binding.peer)
                call.agent = Leg(dialog, rtp)
        finally:
            call.ringing = None
        if answered is None or call.agent is None:
            self.by_dialog.pop(leg_call_id, None)
            rtp.close()
            reason = "no answer" if resp.status in (408, 487) else f"phone answered {resp.status}"
            logger.info("offer %s to %s: %s", offer_id, agent_id, reason)
            if call.state is State.RINGING:
                call.state = State.QUEUED
            await self.router.decline(call.tenant, agent_id, offer_id, reason)
            return
        if call.state not in (State.RINGING, State.CALLBACK):
            # The caller hung up while the phone rang and answered (the CANCEL race).
            await self._bye_leg(call, call.agent)
            call.agent = None
            return
        try:
            answer = sdp.parse(answered.body)
            rtp.set_remote(answer.host, answer.port)
        except sdp.SdpError:
            pass
        try:
            assignment = await self.router.accept(call.tenant, agent_id, offer_id)
        except grpc.aio.AioRpcError as exc:
            logger.info("offer %s could not be accepted: %s", offer_id, exc.details())
            await self._bye_leg(call, call.agent)
            call.agent = None
            if call.state is State.RINGING:
                call.state = State.QUEUED
            return
        if call.state is State.ENDED:
            # The caller hung up while the router took the answer: release the agent's phone.
            if call.agent is not None:
                agent, call.agent = call.agent, None
                await self._bye_leg(call, agent)
            return
        call.agent_id = agent_id
        call.offer_id = offer_id
        call.waited = assignment.waited.ToNanoseconds() / 1e9
        if was_callback:
            await self._call_back(call)
            return
        self._bridge(call)
        logger.info("call %s connected to %s", call.contact_id, agent_id)

    def _send_ack(self, ack: SipMessage, peer: Peer) -> bytes:
        ack.add("Via", self.sip.via(peer, new_branch()), first=True)
        data = ack.encode()
        self.sip.transport.send(data, peer)
        return data

    def _bridge(self, call: Call) -> None:
        assert call.caller is not None and call.agent is not None
        call.caller.rtp.stop_playing()
        call.caller.rtp.bridge = call.agent.rtp
        call.agent.rtp.bridge = call.caller.rtp
        if call.state is not State.CONNECTED:
            call.state = State.CONNECTED
            call.connected_at = time.monotonic()

    async def _call_back(self, call: Call) -> None:
        """The callback's turn: the agent's phone answered; now ring the customer."""
        trunk = self.config.trunk
        assert call.agent is not None
        if not trunk or not call.caller_number:
            logger.warning("callback %s: no trunk configured", call.contact_id)
            await self._end_connected(call, by_caller=False, reason=events_pb2.END_REASON_ERROR)
            return
        host, _, port = trunk.partition(":")
        peer = Peer("udp", host, int(port or 5060))
        rtp = await self.media.open()
        rtp.payload_type = call.payload_type
        leg_call_id = uuid.uuid4().hex
        invite = SipMessage(method="INVITE", uri=f"sip:{call.caller_number}@{trunk}")
        invite.add("From", f"<sip:{call.dialled}@{self.sip.advertised}>;tag={new_tag()}")
        invite.add("To", f"<sip:{call.caller_number}@{host}>")
        invite.add("Call-ID", leg_call_id)
        invite.add("CSeq", "1 INVITE")
        invite.add("Max-Forwards", "70")
        invite.add("Contact", self.contact_header(peer))
        invite.add("Content-Type", "application/sdp")
        invite.body = sdp.build(self.media.host, rtp.port, call.payload_type)
        self.by_dialog[leg_call_id] = call
        tx = self.sip.request(invite, peer)
        try:
            resp = await asyncio.wait_for(asyncio.shield(tx.future), self.ring_timeout * 2)
        except TimeoutError:
            self.sip.cancel(tx)
            resp = await tx.future
        if not 200 <= resp.status < 300:
            rtp.close()
            logger.info("callback %s: customer did not answer (%d)", call.contact_id, resp.status)
            await self._end_connected(
                call, by_caller=True, reason=events_pb2.END_REASON_CUSTOMER_LEFT
            )
            return
        dialog = Dialog.as_uac(invite, resp, peer)
        ack = dialog.request("ACK", self.contact_header(peer))
        ack.set("CSeq", "1 ACK")
        tx.ack = self._send_ack(ack, peer)
        with contextlib.suppress(sdp.SdpError):
            answer = sdp.parse(resp.body)
            rtp.set_remote(answer.host, answer.port)
        call.caller = Leg(dialog, rtp)
        self._bridge(call)
        logger.info("callback %s connected", call.contact_id)

    # ---- in-dialog requests -------------------------------------------------------------------

    def _reinvite(self, msg: SipMessage, tx: ServerTransaction) -> None:
        found = self._find(msg)
        if found is None:
            self._respond(tx, 481, "Call/Transaction Does Not Exist")
            return
        call, leg = found
        try:
            offer = sdp.parse(msg.body) if msg.body else None
        except sdp.SdpError as exc:
            self._respond(tx, 488, f"Not Acceptable Here: {exc}")
            return
        direction = "sendrecv"
        if offer is not None:
            leg.rtp.set_remote(offer.host, offer.port) if not offer.on_hold else None
            direction = sdp.answer_direction(offer.direction)
            if offer.host == "0.0.0.0":
                direction = "inactive"
        resp = msg.response(200, "OK", leg.dialog.local_tag)
        resp.add("Contact", self.contact_header(leg.dialog.peer))
        resp.add("Content-Type", "application/sdp")
        resp.body = sdp.build(self.media.host, leg.rtp.port, call.payload_type, direction)
        self.sip.respond(tx, resp)
        if leg is call.agent and offer is not None and call.state is State.CONNECTED:
            call.spawn(self._set_hold(call, offer.on_hold))

    async def _set_hold(self, call: Call, held: bool) -> None:
        if held and call.start_hold():
            assert call.agent is not None
            call.agent.rtp.bridge = None
            self._hold_music(call)
            n = call.holds
        elif not held and call.end_hold():
            self._bridge(call)
            n = call.holds
        else:
            return
        # The router publishes ContactHeld when it takes the hold; until it can, we do.
        if not await self.router.set_hold(call.tenant, call.agent_id, call.contact_id, held):
            await self.notifier.held(call.tenant, call.contact_id, call.agent_id, held, n)
        logger.info("call %s %s", call.contact_id, "on hold" if held else "resumed")

    def _info(self, msg: SipMessage, tx: ServerTransaction) -> None:
        found = self._find(msg)
        if found is None:
            self._respond(tx, 481, "Call/Transaction Does Not Exist")
            return
        call, leg = found
        kind = msg.get("Content-Type").split(";")[0].strip().lower()
        text = msg.body.decode(errors="replace")
        digit = ""
        if kind == "application/dtmf-relay":
            for line in text.splitlines():
                key, _, value = line.partition("=")
                if key.strip().lower() == "signal":
                    digit = value.strip()[:1]
        elif kind == "application/dtmf":
            digit = text.strip()[:1]
        else:
            self._respond(tx, 415, "Unsupported Media Type")
            return
        if digit not in set("0123456789*#ABCD"):
            self._respond(tx, 400, "Malformed DTMF Signal")
            return
        self._respond(tx, 200, "OK")
        if leg is call.caller:
            call.digits.put_nowait(digit)

    def _refer(self, msg: SipMessage, peer: Peer, tx: ServerTransaction) -> None:
        """Blind transfer by the agent's phone: Refer-To names a queue or a dialled number."""
        found = self._find(msg)
        if found is None:
            self._respond(tx, 481, "Call/Transaction Does Not Exist")
            return
        call, leg = found
        refer_to = msg.get("Refer-To")
        if leg is not call.agent or call.state is not State.CONNECTED or not refer_to:
            self._respond(tx, 403, "Forbidden: only the agent may transfer a connected call")
            return
        try:
            target = Uri.parse(NameAddr.parse(refer_to).uri).user
        except SipSyntaxError:
            self._respond(tx, 400, "Malformed Refer-To header")
            return
        plan = self.config.plan_for(target)
        queue = self.config.transfer_codes.get(target, "")
        if not queue:
            queue = plan.queue if plan is not None and plan.tenant == call.tenant else target
        if not queue:
            self._respond(tx, 400, "Refer-To names no queue")
            return
        self._respond(tx, 202, "Accepted")
        call.spawn(self._transfer(call, queue))

    def _refer_result(self, agent: Leg, status: str) -> None:
        """NOTIFY the REFER's outcome (RFC 3515 section 2.4.5) as a sipfrag status line."""
        notify = agent.dialog.request(
            "NOTIFY",
            self.contact_header(agent.dialog.peer),
            f"SIP/2.0 {status}\r\n".encode(),
            "message/sipfrag",
        )
        notify.add("Event", "refer")
        notify.add("Subscription-State", "terminated;reason=noresource")
        self.sip.request(notify, agent.dialog.peer)

    async def _transfer(self, call: Call, queue: str) -> None:
        agent, agent_id = call.agent, call.agent_id
        assert agent is not None
        # The caller waits on music from now: the router may offer the transferred contact
        # before its answer to TransferContact reaches us.
        call.state = State.QUEUED
        agent.rtp.bridge = None
        self._hold_music(call)
        try:
            taken = await self.router.transfer(call.tenant, call.contact_id, queue, agent_id)
        except grpc.aio.AioRpcError as exc:
            logger.info("transfer of %s to %s refused: %s", call.contact_id, queue, exc.details())
            unknown = exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
            self._refer_result(agent, "404 Not Found" if unknown else "503 Service Unavailable")
            if call.state is State.QUEUED and call.agent is agent:
                call.state = State.CONNECTED  # the agent keeps the caller
                self._bridge(call)
            return
        self._refer_result(agent, "200 OK")
        call.end_hold()
        if call.agent is agent:
            call.agent = None
        call.agent_id, call.offer_id = "", ""
        agent.rtp.close()
        call.queue = queue
        call.queued_at = time.monotonic()
        call.connected_at = 0.0
        call.transfers += 1
        if not taken:
            await self.notifier.transferred(
                call.tenant, call.contact_id, agent_id, queue, call.transfers
            )
        call.spawn(self._announcements(call))
        logger.info("call %s transferred to queue %s", call.contact_id, queue)
        await self._bye_leg(call, agent, close=False)

    def _cancel(self, msg: SipMessage, tx: ServerTransaction) -> None:
        invite = self.sip.find_invite(msg)
        if invite is None:
            self._respond(tx, 481, "Call/Transaction Does Not Exist")
            return
        self._respond(tx, 200, "OK")
        if not invite.final:
            self.sip.respond(invite, invite.request.response(487, "Request Terminated", new_tag()))
            call = self.by_dialog.get(msg.call_id)
            if call is not None:
                call.spawn(self._hangup_caller(call, "cancelled"))

    def _bye(self, msg: SipMessage, tx: ServerTransaction) -> None:
        found = self._find(msg)
        if found is None:
            self._respond(tx, 481, "Call/Transaction Does Not Exist")
            return
        self._respond(tx, 200, "OK")
        call, leg = found
        if leg is call.caller:
            call.spawn(self._hangup_caller(call, "caller hung up", bye=False))
        else:
            call.spawn(self._agent_hung_up(call))

    # ---- endings ------------------------------------------------------------------------------

    async def _bye_leg(self, call: Call, leg: Leg | None, close: bool = True) -> None:
        if leg is None:
            return
        bye = leg.dialog.request("BYE", self.contact_header(leg.dialog.peer))
        tx = self.sip.request(bye, leg.dialog.peer)
        if close:
            leg.rtp.close()
        with contextlib.suppress(asyncio.CancelledError):
            await tx.future
        if leg is not call.caller:
            self.by_dialog.pop(leg.dialog.call_id, None)

    def _drop_caller(self, call: Call) -> None:
        if call.caller is not None:
            call.caller.rtp.close()
            self.by_dialog.pop(call.caller.dialog.call_id, None)
            call.caller = None

    async def _hangup_caller(self, call: Call, why: str, bye: bool = True) -> None:
        state = call.state
        if state in (State.ENDED, State.CALLBACK):
            return
        call.state = State.ENDED
        call.cancel_tasks(keep=asyncio.current_task())  # type: ignore[arg-type]
        if bye:
            await self._bye_leg(call, call.caller)
        self._drop_caller(call)
        logger.info("call %s: %s while %s", call.contact_id, why, state.value)
        if state in (State.QUEUED, State.RINGING):
            if call.ringing is not None and not call.ringing.future.done():
                self.sip.cancel(call.ringing)
            if call.agent is not None:  # answered, or being transferred: hang up the phone
                agent, call.agent = call.agent, None
                await self._bye_leg(call, agent)
            await self.notifier.abandoned(
                call.tenant, call.contact_id, call.queue, call.waited_so_far()
            )
        elif state is State.CONNECTED:
            await self._finish(call, by_caller=True, reason=events_pb2.END_REASON_CUSTOMER_LEFT)
        self._forget(call)

    async def _agent_hung_up(self, call: Call) -> None:
        if call.state is not State.CONNECTED:
            return
        await self._end_connected(call, by_caller=False, reason=events_pb2.END_REASON_COMPLETED)

    async def _end_connected(self, call: Call, by_caller: bool, reason: int) -> None:
        call.state = State.ENDED
        call.cancel_tasks(keep=asyncio.current_task())  # type: ignore[arg-type]
        await self._finish(call, by_caller, reason)
        await self._bye_leg(call, call.caller)
        self._drop_caller(call)
        self._forget(call)

    async def _finish(self, call: Call, by_caller: bool, reason: int) -> None:
        call.end_hold()
        talk = call.talk()
        agent, call.agent = call.agent, None
        if by_caller and agent is not None:
            await self._bye_leg(call, agent)
        elif agent is not None:
            agent.rtp.close()
            self.by_dialog.pop(agent.dialog.call_id, None)
        await self.notifier.ended(
            call.tenant,
            call.contact_id,
            call.agent_id,
            reason,
            call.queue,
            call.waited,
            talk,
            call.hold_total,
        )
        logger.info(
            "call %s ended (talk %.1fs, hold %.1fs)", call.contact_id, talk, call.hold_total
        )

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.contact_id, None)
        for key in [k for k, v in self.by_dialog.items() if v is call]:
            del self.by_dialog[key]

    async def stop(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        for call in list(self.calls.values()):
            for leg in (call.caller, call.agent):
                if leg is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._bye_leg(call, leg), 1)
            call.cancel_tasks()

    def stats(self) -> dict[str, Any]:
        return {"calls": self.live_calls(), "rejected_busy": self.rejected_busy}
