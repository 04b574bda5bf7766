"""The agent's side of a call: an offer rings the agent's registered phone; an answer is
accepted with the router and bridged to the caller; then hold and resume, blind transfer, and
the agent hanging up."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import grpc

from switchboard.v1 import events_pb2
from switchboard.voice_gateway.calls import Call, Leg, State
from switchboard.voice_gateway.domain import hold, ringing, transfer
from switchboard.voice_gateway.domain.refused import Refused
from switchboard.voice_gateway.handlers.call_flow import CallFlow
from switchboard.voice_gateway.handlers.gateway import Gateway
from switchboard.voice_gateway.media import sdp
from switchboard.voice_gateway.sip.dialog import Dialog
from switchboard.voice_gateway.sip.message import NameAddr, SipMessage, SipSyntaxError, Uri
from switchboard.voice_gateway.sip.transactions import ServerTransaction, new_tag

logger = logging.getLogger(__name__)


class AgentLeg:
    def __init__(self, gateway: Gateway, flow: CallFlow) -> None:
        self.gw = gateway
        self.flow = flow

    # ---- offers from the router ---------------------------------------------------------------

    async def on_offered(self, event: events_pb2.ContactOffered) -> None:
        """Ring the offered agent's phone for one of this replica's calls."""
        call = self.gw.calls.get(event.contact_id)
        if call is None or event.offer_id in call.handled_offers:
            return  # not a call of this replica, or a redelivery
        call.handled_offers.add(event.offer_id)
        # A phone still ringing for an offer the router withdrew (its CANCEL on the way) rings no
        # more: the next offer rings once it has stopped.
        previous = call.ring_task
        stopping = (
            call.state is State.RINGING
            and previous is not None
            and not previous.done()
            and all(w.done() for w in call.withdrawals.values())
        )
        if not ringing.can_ring(call.state) and not stopping:
            await self.gw.router.decline(call.tenant, event.agent_id, event.offer_id, "call busy")
            return
        expires = event.expires_at.ToNanoseconds() / 1e9 if event.HasField("expires_at") else 0
        timeout = ringing.ring_timeout(self.gw.ring_timeout, expires, time.time())
        offer_id = event.offer_id
        withdrawn = call.withdrawals[offer_id] = asyncio.get_running_loop().create_future()
        call.ring_task = call.spawn(
            self._ring(
                call, event.agent_id, offer_id, timeout, withdrawn, previous if stopping else None
            )
        )
        call.ring_task.add_done_callback(lambda _: call.withdrawals.pop(offer_id, None))

    async def on_withdrawn(self, event: events_pb2.ContactOfferWithdrawn) -> None:
        """The router withdrew an offer this replica rings a phone for (the agent went on a
        break or signed out, the accept timed out): the phone stops ringing now."""
        call = self.gw.calls.get(event.contact_id)
        if call is None:
            return  # not a call of this replica
        withdrawn = call.withdrawals.get(event.offer_id)
        if withdrawn is not None and not withdrawn.done():
            withdrawn.set_result(event.reason)
        # Handled: an offer withdrawn before it came here (its ContactOffered redelivered after
        # the withdrawal) never rings; the router has the contact back already.
        call.handled_offers.add(event.offer_id)

    async def _ring(
        self,
        call: Call,
        agent_id: str,
        offer_id: str,
        timeout: float,
        withdrawn: asyncio.Future[str],
        after: asyncio.Task[None] | None = None,
    ) -> None:
        gw = self.gw
        if after is not None:  # the withdrawn offer's ring, stopping
            await asyncio.wait({after}, timeout=timeout)
            if not ringing.can_ring(call.state):
                await gw.router.decline(call.tenant, agent_id, offer_id, "call busy")
                return
        binding = gw.registrar.lookup(call.tenant, agent_id)
        if binding is None:
            logger.info(
                "offer %s: %s of %s has no registered phone", offer_id, agent_id, call.tenant
            )
            await gw.router.decline(call.tenant, agent_id, offer_id, "phone not registered")
            return
        was_callback = call.state is State.CALLBACK
        call.state = ringing.ringing(call.state)
        rtp = await gw.media.open()
        if withdrawn.done():  # before the phone rang
            rtp.close()
            call.state = ringing.unanswered(call.state)
            return
        rtp.payload_type = call.payload_type
        leg_call_id = uuid.uuid4().hex
        invite = SipMessage(method="INVITE", uri=binding.contact)
        caller = call.caller_number or "anonymous"
        invite.add("From", f'"{caller}" <sip:{caller}@{gw.sip.advertised}>;tag={new_tag()}')
        invite.add("To", f"<sip:{agent_id}@{gw.sip.advertised}>")
        invite.add("Call-ID", leg_call_id)
        invite.add("CSeq", "1 INVITE")
        invite.add("Max-Forwards", "70")
        invite.add("Contact", gw.sip.contact(binding.peer))
        invite.add("Subject", f"{call.queue} {call.language}".strip())
        invite.add("Content-Type", "application/sdp")
        invite.body = sdp.build(gw.media.host, rtp.port, call.payload_type)
        gw.by_dialog[leg_call_id] = call
        tx = gw.sip.request(invite, binding.peer)
        call.ringing = tx
        answered: SipMessage | None = None
        try:
            either: set[asyncio.Future[Any]] = {tx.future, withdrawn}
            await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if tx.future.done():
                resp = tx.future.result()
            else:
                # Not answered in time, or the offer withdrawn: CANCEL, which may only follow a
                # provisional response (section 9.1).
                provisional = asyncio.ensure_future(tx.provisional.wait())
                pending: list[asyncio.Future[Any]] = [provisional, tx.future]
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                provisional.cancel()
                if not tx.future.done():
                    gw.sip.cancel(tx)
                resp = await tx.future
            if 200 <= resp.status < 300:
                answered = resp
                dialog = Dialog.as_uac(invite, resp, binding.peer)
                ack = dialog.request("ACK", gw.sip.contact(binding.peer))
                ack.set("CSeq", f"{invite.cseq[0]} ACK")
                tx.ack = gw.send_ack(ack, binding.peer)
                call.agent = Leg(dialog, rtp)
        finally:
            call.ringing = None
        if answered is None or call.agent is None:
            gw.by_dialog.pop(leg_call_id, None)
            rtp.close()
            call.state = ringing.unanswered(call.state)
            if withdrawn.done():
                logger.info("offer %s to %s withdrawn: %s", offer_id, agent_id, withdrawn.result())
                return  # the router has it back already
            reason = ringing.decline_reason(resp.status)
            logger.info("offer %s to %s: %s", offer_id, agent_id, reason)
            await gw.router.decline(call.tenant, agent_id, offer_id, reason)
            return
        if call.state not in (State.RINGING, State.CALLBACK):
            # The caller hung up while the phone rang and answered (the CANCEL race).
            await gw.bye_leg(call, call.agent)
            call.agent = None
            return
        try:
            answer = sdp.parse(answered.body)
            rtp.set_remote(answer.host, answer.port)
        except sdp.SdpError:
            pass
        try:
            assignment = await gw.router.accept(call.tenant, agent_id, offer_id)
        except grpc.aio.AioRpcError as exc:
            logger.info("offer %s could not be accepted: %s", offer_id, exc.details())
            await gw.bye_leg(call, call.agent)
            call.agent = None
            call.state = ringing.unanswered(call.state)
            return
        if call.state is State.ENDED:
            # The caller hung up while the router took the answer: release the agent's phone.
            if call.agent is not None:
                agent, call.agent = call.agent, None
                await gw.bye_leg(call, agent)
            return
        call.agent_id = agent_id
        call.offer_id = offer_id
        call.waited = assignment.waited.ToNanoseconds() / 1e9
        if was_callback:
            await self.flow.call_back(call)
            return
        gw.bridge(call)
        logger.info("call %s connected to %s", call.contact_id, agent_id)

    # ---- hold and resume ----------------------------------------------------------------------

    def reinvite(self, call: Call, leg: Leg, msg: SipMessage, tx: ServerTransaction) -> None:
        """A re-INVITE on either leg: answer its SDP; the agent's offer holds or resumes."""
        gw = self.gw
        try:
            offer = sdp.parse(msg.body) if msg.body else None
        except sdp.SdpError as exc:
            gw.respond(tx, 488, f"Not Acceptable Here: {exc}")
            return
        if offer is not None and not offer.on_hold:
            leg.rtp.set_remote(offer.host, offer.port)
        resp = msg.response(200, "OK", leg.dialog.local_tag)
        resp.add("Contact", gw.sip.contact(leg.dialog.peer))
        resp.add("Content-Type", "application/sdp")
        resp.body = sdp.build(
            gw.media.host, leg.rtp.port, call.payload_type, hold.answer_direction(offer)
        )
        gw.sip.respond(tx, resp)
        if leg is call.agent and offer is not None and call.state is State.CONNECTED:
            call.spawn(self._set_hold(call, offer.on_hold))

    async def _set_hold(self, call: Call, held: bool) -> None:
        gw = self.gw
        if held and call.start_hold():
            assert call.agent is not None
            call.agent.rtp.bridge = None
            gw.hold_music(call)
            n = call.holds
        elif not held and call.end_hold():
            gw.bridge(call)
            n = call.holds
        else:
            return
        # The router publishes ContactHeld when it takes the hold; until it can, we do.
        if not await gw.router.set_hold(call.tenant, call.agent_id, call.contact_id, held):
            await gw.notifier.held(call.tenant, call.contact_id, call.agent_id, held, n)
        logger.info("call %s %s", call.contact_id, "on hold" if held else "resumed")

    # ---- blind transfer -----------------------------------------------------------------------

    def refer(self, call: Call, leg: Leg, msg: SipMessage, tx: ServerTransaction) -> None:
        """Blind transfer by the agent's phone: Refer-To names a queue or a dialled number."""
        refer_to = msg.get("Refer-To")
        refused = transfer.refer_refusal(leg is call.agent, call.state, refer_to)
        if refused is None:
            try:
                target = Uri.parse(NameAddr.parse(refer_to).uri).user
            except SipSyntaxError:
                refused = Refused(400, "Malformed Refer-To header")
            else:
                queue = transfer.target_queue(self.gw.config, target, call.tenant)
                if not queue:
                    refused = Refused(400, "Refer-To names no queue")
        if refused is not None:
            self.gw.respond(tx, refused.status, refused.reason)
            return
        self.gw.respond(tx, 202, "Accepted")
        call.spawn(self._transfer(call, queue))

    def _refer_result(self, agent: Leg, status: str) -> None:
        """NOTIFY the REFER's outcome (RFC 3515 section 2.4.5) as a sipfrag status line."""
        notify = agent.dialog.request(
            "NOTIFY",
            self.gw.sip.contact(agent.dialog.peer),
            f"SIP/2.0 {status}\r\n".encode(),
            "message/sipfrag",
        )
        notify.add("Event", "refer")
        notify.add("Subscription-State", "terminated;reason=noresource")
        self.gw.sip.request(notify, agent.dialog.peer)

    async def _transfer(self, call: Call, queue: str) -> None:
        gw = self.gw
        agent, agent_id = call.agent, call.agent_id
        assert agent is not None
        # The caller waits on music from now: the router may offer the transferred contact
        # before its answer to TransferContact reaches us.
        call.state = State.QUEUED
        agent.rtp.bridge = None
        gw.hold_music(call)
        try:
            taken = await gw.router.transfer(call.tenant, call.contact_id, queue, agent_id)
        except grpc.aio.AioRpcError as exc:
            logger.info("transfer of %s to %s refused: %s", call.contact_id, queue, exc.details())
            unknown = exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
            self._refer_result(agent, transfer.refused_status(unknown))
            if call.state is State.QUEUED and call.agent is agent:
                call.state = State.CONNECTED  # the agent keeps the caller
                gw.bridge(call)
            return
        self._refer_result(agent, "200 OK")
        gw.release_supervisors(call)  # they listened in on this agent's conversation
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
            await gw.notifier.transferred(
                call.tenant, call.contact_id, agent_id, queue, call.transfers
            )
        self.flow.wait_in_queue(call)
        logger.info("call %s transferred to queue %s", call.contact_id, queue)
        await gw.bye_leg(call, agent, close=False)

    # ---- the agent hangs up -------------------------------------------------------------------

    async def agent_gone(self, call: Call) -> None:
        """The agent's phone sent BYE: a connected call is completed; the caller of a tenant
        that surveys its callers stays for the survey."""
        if call.state is not State.CONNECTED:
            return
        if call.tenant in self.gw.config.survey_tenants and call.caller is not None:
            await self.flow.survey(call)
            return
        await self.gw.end_connected(call, by_caller=False, reason=events_pb2.END_REASON_COMPLETED)
