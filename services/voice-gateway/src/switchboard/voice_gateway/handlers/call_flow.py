"""The caller's side of a call: admission and answer, the IVR menus, waiting in queue with
music and announcements, the callback (hang up, keep the place, be called back) and the
caller hanging up."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from switchboard.v1 import events_pb2
from switchboard.voice_gateway.calls import Call, Leg, State
from switchboard.voice_gateway.config import Menu
from switchboard.voice_gateway.domain import admission, ivr
from switchboard.voice_gateway.domain import state as call_state
from switchboard.voice_gateway.domain.numbers import e164
from switchboard.voice_gateway.domain.refused import Refused
from switchboard.voice_gateway.handlers.gateway import Gateway
from switchboard.voice_gateway.media import sdp
from switchboard.voice_gateway.notifier import now
from switchboard.voice_gateway.sip.dialog import Dialog
from switchboard.voice_gateway.sip.message import NameAddr, SipMessage, Uri
from switchboard.voice_gateway.sip.transactions import ServerTransaction, new_tag
from switchboard.voice_gateway.sip.transport import Peer

logger = logging.getLogger(__name__)


class CallFlow:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    # ---- a new call from the trunk ------------------------------------------------------------

    def new_call(self, msg: SipMessage, peer: Peer, tx: ServerTransaction) -> None:
        """An INVITE outside any dialog: refuse it, or answer it and start the IVR."""
        gw = self.gw
        refused = admission.capacity(
            msg.call_id in gw.by_dialog, gw.live_calls(), gw.max_calls, gw.retry_after
        )
        if refused is None:
            to = Uri.parse(NameAddr.parse(msg.get("To")).uri)
            dialled = Uri.parse(msg.uri).user or to.user
            decision = admission.offer(gw.config.plan_for(dialled), msg.body)
        else:
            decision = refused
        if isinstance(decision, Refused):
            self._refuse(msg, tx, decision)
            return
        frm = Uri.parse(NameAddr.parse(msg.get("From")).uri)
        call = Call(
            contact_id=uuid.uuid4().hex,
            plan=decision.plan,
            caller_number=e164(frm.user) if frm.user else "",
            dialled=decision.plan.number,
            caller=None,
            payload_type=decision.payload_type,
            language=decision.plan.language,
            queue=decision.plan.queue,
        )
        gw.calls[call.contact_id] = call
        gw.by_dialog[msg.call_id] = call
        call.spawn(self._answer(call, msg, peer, tx, decision.offer))

    def _refuse(self, msg: SipMessage, tx: ServerTransaction, refused: Refused) -> None:
        resp = msg.response(refused.status, refused.reason)
        if refused.retry_after:  # only the call limit says when to retry
            self.gw.rejected_busy += 1
            resp.add("Retry-After", str(refused.retry_after))
        self.gw.sip.respond(tx, resp)

    async def _answer(
        self, call: Call, msg: SipMessage, peer: Peer, tx: ServerTransaction, offer: sdp.Sdp
    ) -> None:
        gw = self.gw
        try:
            rtp = await gw.media.open()
        except OSError:
            gw.respond(tx, 503, "Service Unavailable: no media port")
            gw.forget(call)
            return
        rtp.payload_type = call.payload_type
        rtp.telephone_event = offer.telephone_event or 101
        rtp.set_remote(offer.host, offer.port)
        rtp.on_dtmf = call.digits.put_nowait
        tag = new_tag()
        call.caller = Leg(Dialog.as_uas(msg, peer, tag), rtp)
        resp = gw.answer(msg, peer, tag, rtp, call.payload_type, bool(offer.telephone_event))

        def on_ack_timeout() -> None:
            call.spawn(self.caller_gone(call, "no ACK"))

        tx.on_ack_timeout = on_ack_timeout
        gw.sip.respond(tx, resp)
        logger.info("call %s to %s answered", call.contact_id, call.dialled)
        await self._ivr(call)

    # ---- IVR ----------------------------------------------------------------------------------

    async def _ivr(self, call: Call) -> None:
        plan = call.plan
        await self.gw.play(call, ["welcome"])
        if plan.language_menu:
            call.language = ivr.language(plan, await self._menu(call, plan.language_menu))
        if plan.topic_menu:
            call.skills = ivr.skills(await self._menu(call, plan.topic_menu))
        if call.state is not State.IVR:
            return
        call.state = State.QUEUED
        call.queued_at = time.monotonic()
        self.gw.hold_music(call)
        await self._contact_created(call)
        logger.info("call %s queued in %s (%s)", call.contact_id, call.queue, call.language)
        self.wait_in_queue(call)
        call.spawn(self._queue_keys(call))

    async def _menu(self, call: Call, menu: Menu) -> str | None:
        """Play the menu and return the chosen option (None on timeout)."""
        menu_round = ivr.MenuRound(menu)
        while True:
            while not menu_round.type_ahead and not call.digits.empty():
                call.digits.get_nowait()
            if call.caller is None:
                return None
            audio = self.gw.prompts.menu(menu, call.payload_type, call.language)
            done = call.caller.rtp.play(audio)
            try:
                digit = await asyncio.wait_for(
                    call.digits.get(), call.plan.menu_timeout + len(audio) / 8000
                )
            except TimeoutError:
                return None
            finally:
                if not done.done():
                    call.caller.rtp.stop_playing()
            pressed = menu_round.pressed(digit)
            if isinstance(pressed, ivr.Chosen):
                return pressed.value
            await self.gw.play(call, ["invalid"])
            if not pressed.again:
                return None

    def pressed(self, call: Call, leg: Leg, digit: str) -> None:
        """A key sent in SIP INFO: the caller's keys drive the menus and the queue."""
        if leg is call.caller:
            call.digits.put_nowait(digit)

    # ---- waiting in queue ---------------------------------------------------------------------

    async def _contact_created(self, call: Call, callback: bool = False) -> None:
        await self.gw.notifier.contact_created(
            call.tenant,
            call.contact_id,
            call.caller_number,
            call.language,
            call.skills,
            call.queue,
            call.dialled,
            now(),
            callback=callback,
        )

    def wait_in_queue(self, call: Call) -> None:
        """Announce the queued caller's position until an agent takes the call."""
        call.spawn(self._announcements(call))

    async def _announcements(self, call: Call) -> None:
        """Every `announce_every`, tell a waiting caller their position and estimated wait."""
        first = True
        while call.state is State.QUEUED:
            delay = ivr.next_announcement(first, self.gw.position_poll, call.plan.announce_every)
            await asyncio.sleep(delay)
            first = False
            if call.state is not State.QUEUED:
                return
            pos = await self.gw.router.position(call.tenant, call.contact_id)
            still_queued = call.state is State.QUEUED
            names = ivr.announcement(
                pos.position if pos is not None and still_queued else None,
                pos.estimated_wait if pos is not None else 0.0,
                call.plan.callback_key,
            )
            await self.gw.play(call, names)
            if call.state is State.QUEUED:
                self.gw.hold_music(call)

    async def _queue_keys(self, call: Call) -> None:
        # Lives until the call ends: a caller transferred back to a queue can still choose
        # the callback (keys pressed while connected are ignored).
        while not call_state.is_over(call.state):
            digit = await call.digits.get()
            if ivr.wants_callback(digit, call.plan.callback_key, call.state):
                await self._choose_callback(call)
                return

    # ---- callback -----------------------------------------------------------------------------

    async def _choose_callback(self, call: Call) -> None:
        call.state = State.CALLBACK
        try:
            await self.gw.play(call, ["callback-confirmed", "goodbye"])
            await self.gw.bye_leg(call, call.caller)
        finally:
            # The caller chose it: the callback is kept also when the confirmation is cut short
            # (the gateway stopping hangs up on them and cancels the call's tasks).
            self.gw.drop_caller(call)
            # The contact keeps its place in the router's queue; this marks it as a callback.
            await self._contact_created(call, callback=True)
            logger.info("call %s becomes a callback to %s", call.contact_id, call.caller_number)

    async def call_back(self, call: Call) -> None:
        """The callback's turn: the agent's phone answered; now ring the customer."""
        gw = self.gw
        trunk = gw.config.trunk
        assert call.agent is not None
        if not trunk or not call.caller_number:
            logger.warning("callback %s: no trunk configured", call.contact_id)
            await gw.end_connected(call, by_caller=False, reason=events_pb2.END_REASON_ERROR)
            return
        host, _, port = trunk.partition(":")
        peer = Peer("udp", host, int(port or 5060))
        rtp = await gw.media.open()
        rtp.payload_type = call.payload_type
        leg_call_id = uuid.uuid4().hex
        invite = SipMessage(method="INVITE", uri=f"sip:{call.caller_number}@{trunk}")
        invite.add("From", f"<sip:{call.dialled}@{gw.sip.advertised}>;tag={new_tag()}")
        invite.add("To", f"<sip:{call.caller_number}@{host}>")
        invite.add("Call-ID", leg_call_id)
        invite.add("CSeq", "1 INVITE")
        invite.add("Max-Forwards", "70")
        invite.add("Contact", gw.sip.contact(peer))
        invite.add("Content-Type", "application/sdp")
        invite.body = sdp.build(gw.media.host, rtp.port, call.payload_type)
        gw.by_dialog[leg_call_id] = call
        tx = gw.sip.request(invite, peer)
        try:
            resp = await asyncio.wait_for(asyncio.shield(tx.future), gw.ring_timeout * 2)
        except TimeoutError:
            gw.sip.cancel(tx)
            resp = await tx.future
        if not 200 <= resp.status < 300:
            rtp.close()
            logger.info("callback %s: customer did not answer (%d)", call.contact_id, resp.status)
            await gw.end_connected(call, by_caller=True, reason=events_pb2.END_REASON_CUSTOMER_LEFT)
            return
        dialog = Dialog.as_uac(invite, resp, peer)
        ack = dialog.request("ACK", gw.sip.contact(peer))
        ack.set("CSeq", "1 ACK")
        tx.ack = gw.send_ack(ack, peer)
        try:
            answer = sdp.parse(resp.body)
            rtp.set_remote(answer.host, answer.port)
        except sdp.SdpError:
            pass
        call.caller = Leg(dialog, rtp)
        gw.bridge(call)
        logger.info("callback %s connected", call.contact_id)

    # ---- the survey after the agent hung up ----------------------------------------------------

    async def survey(self, call: Call) -> None:
        """The agent hung up: the contact ends (ContactEnded, completed), and the caller hears
        the survey prompt and rates the call with a key from 1 to 5 (SatisfactionRated). Another
        key plays "invalid" and the prompt once more; no key, or a hang-up, gives no rating."""
        gw = self.gw
        call.state = State.SURVEY
        call.cancel_tasks(keep=asyncio.current_task())  # type: ignore[arg-type]
        assert call.caller is not None
        call.caller.rtp.bridge = None
        while not call.digits.empty():  # keys pressed while talking are no answer
            call.digits.get_nowait()
        await gw.finish(call, by_caller=False, reason=events_pb2.END_REASON_COMPLETED)
        call.spawn(self._survey(call))

    async def _survey(self, call: Call) -> None:
        gw = self.gw
        choice = await self._menu(call, ivr.SURVEY_MENU)
        if call.state is not State.SURVEY:
            return  # the caller hung up
        if choice is not None:
            await gw.notifier.rated(call.tenant, call.contact_id, int(choice))
            logger.info("call %s rated %s", call.contact_id, choice)
        await gw.play(call, ["survey-thanks", "goodbye"] if choice is not None else ["goodbye"])
        if call.state is not State.SURVEY:
            return
        call.state = State.ENDED
        await gw.bye_leg(call, call.caller)
        gw.drop_caller(call)
        gw.forget(call)

    # ---- the caller hangs up ------------------------------------------------------------------

    async def caller_gone(self, call: Call, why: str, bye: bool = True) -> None:
        """The caller hung up, cancelled or never ACKed (`bye`: send them a BYE): an abandoned
        contact while waiting or ringing, an ended one once connected."""
        gw = self.gw
        state = call.state
        if call_state.is_over(call.state):
            return
        call.state = State.ENDED
        call.cancel_tasks(keep=asyncio.current_task())  # type: ignore[arg-type]
        if bye:
            await gw.bye_leg(call, call.caller)
        gw.drop_caller(call)
        logger.info("call %s: %s while %s", call.contact_id, why, state.value)
        if state in (State.QUEUED, State.RINGING):
            if call.ringing is not None and not call.ringing.future.done():
                gw.sip.cancel(call.ringing)
            if call.agent is not None:  # answered, or being transferred: hang up the phone
                agent, call.agent = call.agent, None
                await gw.bye_leg(call, agent)
            await gw.notifier.abandoned(
                call.tenant, call.contact_id, call.queue, call.waited_so_far()
            )
        elif state is State.CONNECTED:
            await gw.finish(call, by_caller=True, reason=events_pb2.END_REASON_CUSTOMER_LEFT)
        gw.forget(call)
