"""Call supervision (as Asterisk's ChanSpy): the gateway rings a supervisor's own registered
phone and joins it to a connected call. The supervisor always hears both parties mixed; in
whisper mode the agent hears the supervisor too, in barge mode everyone hears everyone. The mode
changes without redialling: by RPC, or with the keys 4, 5 and 6 on the supervisor's phone.

A supervisor may also dial in from its own phone: the supervision extension and the agent id
(`*55agent-en`). That INVITE is authenticated with the phone's SIP credentials (the digest its
REGISTER uses, RFC 3261 section 22) and taken only from a phone configured as one of its
tenant's supervisors; it joins the call that agent is talking on, in monitor mode. A call lives
on one replica: a replica dialled for an agent whose call another replica holds finds that one
(over NATS) and answers `302 Moved Temporarily` with its SIP address, as a redirect server does
(RFC 3261 section 8.3); the phone dials it there, and that replica authenticates it again."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any

from switchboard.core.errors import FailedPrecondition, NotFound, Unavailable
from switchboard.voice_gateway.adapters.replicas import Replicas
from switchboard.voice_gateway.calls import Call, Leg, Supervisor
from switchboard.voice_gateway.domain import supervision
from switchboard.voice_gateway.domain.supervision import Mode, SipAddress
from switchboard.voice_gateway.handlers.gateway import Gateway
from switchboard.voice_gateway.media import sdp
from switchboard.voice_gateway.media.mixer import Mixer
from switchboard.voice_gateway.recording.recorder import AGENT, CALLER
from switchboard.voice_gateway.sip.dialog import Dialog
from switchboard.voice_gateway.sip.message import NameAddr, SipMessage, Uri
from switchboard.voice_gateway.sip.transactions import ServerTransaction, new_tag
from switchboard.voice_gateway.sip.transport import Peer

logger = logging.getLogger(__name__)

CHANNELS = {"caller": CALLER, "agent": AGENT}  # a party's channel in the call's recording


class Supervision:
    def __init__(self, gateway: Gateway, replicas: Replicas | None = None) -> None:
        """`replicas`: the other gateway replicas, asked for a call dialled in to that is not
        here (None: this is the only one)."""
        self.gw = gateway
        self.replicas = replicas
        self._redirecting: set[asyncio.Task[None]] = set()

    def _call(self, tenant: str, contact_id: str) -> Call:
        call = self.gw.calls.get(contact_id)
        # Another tenant's call is not found: its existence is not the caller's to know.
        if call is None or call.tenant != tenant:
            raise NotFound("voice contact", contact_id)
        return call

    def _session(self, tenant: str, supervision_id: str) -> tuple[Call, Supervisor]:
        for call in self.gw.calls.values():
            sup = call.supervisors.get(supervision_id)
            if sup is not None and call.tenant == tenant:
                return call, sup
        raise NotFound("supervision", supervision_id)

    async def start(self, tenant: str, supervisor_id: str, contact_id: str, mode: Mode) -> str:
        """Ring the supervisor's phone and, once it answers, join it to the call in `mode`;
        returns the supervision id."""
        gw = self.gw
        call = self._call(tenant, contact_id)
        if not supervision.can_supervise(call.state) or call.agent is None:
            raise FailedPrecondition(f"call {contact_id} is not connected to an agent")
        binding = gw.registrar.lookup(tenant, supervisor_id)
        if binding is None:
            raise FailedPrecondition(f"{supervisor_id} has no registered phone")
        rtp = await gw.media.open()
        rtp.payload_type = call.payload_type
        leg_call_id = uuid.uuid4().hex
        invite = SipMessage(method="INVITE", uri=binding.contact)
        invite.add("From", f'"{mode.value}" <sip:supervise@{gw.sip.advertised}>;tag={new_tag()}')
        invite.add("To", f"<sip:{supervisor_id}@{gw.sip.advertised}>")
        invite.add("Call-ID", leg_call_id)
        invite.add("CSeq", "1 INVITE")
        invite.add("Max-Forwards", "70")
        invite.add("Contact", gw.sip.contact(binding.peer))
        invite.add("Subject", f"supervise {contact_id}")
        invite.add("Content-Type", "application/sdp")
        invite.body = sdp.build(gw.media.host, rtp.port, call.payload_type)
        gw.by_dialog[leg_call_id] = call
        tx = gw.sip.request(invite, binding.peer)
        try:
            resp = await asyncio.wait_for(asyncio.shield(tx.future), gw.ring_timeout)
        except TimeoutError:
            provisional = asyncio.ensure_future(tx.provisional.wait())
            pending: list[asyncio.Future[Any]] = [provisional, tx.future]
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            provisional.cancel()
            if not tx.future.done():
                gw.sip.cancel(tx)
            resp = await tx.future
        if not 200 <= resp.status < 300:
            gw.by_dialog.pop(leg_call_id, None)
            rtp.close()
            raise Unavailable(f"{supervisor_id}'s phone did not answer ({resp.status})")
        dialog = Dialog.as_uac(invite, resp, binding.peer)
        ack = dialog.request("ACK", gw.sip.contact(binding.peer))
        ack.set("CSeq", f"{invite.cseq[0]} ACK")
        tx.ack = gw.send_ack(ack, binding.peer)
        leg = Leg(dialog, rtp)
        try:
            answer = sdp.parse(resp.body)
            rtp.set_remote(answer.host, answer.port)
        except sdp.SdpError:
            pass
        if not supervision.can_supervise(call.state) or call.agent is None:
            await gw.bye_leg(call, leg)  # the call ended while the phone rang
            raise FailedPrecondition(f"call {contact_id} ended")
        sup = Supervisor(uuid.uuid4().hex, supervisor_id, leg, mode)
        self._join(call, sup)
        await gw.supervised(call, sup, "joined")
        return sup.supervision_id

    # ---- dialling in: the supervision extension ----------------------------------------------

    def dialled_agent(self, msg: SipMessage) -> str | None:
        """The agent id an INVITE outside any dialog names after the supervision extension
        (None: not a call to the extension)."""
        extension = self.gw.config.supervision_extension
        user = Uri.parse(msg.uri).user or Uri.parse(NameAddr.parse(msg.get("To")).uri).user
        if not extension or not user.startswith(extension) or len(user) == len(extension):
            return None
        return user[len(extension) :]

    def dialled(self, msg: SipMessage, peer: Peer, tx: ServerTransaction, agent_id: str) -> None:
        """A phone dialled the supervision extension for `agent_id`: challenge it, and answer
        it only for a supervisor of the tenant whose agent is on a connected call."""
        gw = self.gw
        phone, refusal = gw.registrar.authenticate(msg)
        if refusal is not None:
            gw.sip.respond(tx, refusal)
            return
        assert phone is not None
        tenant, supervisor_id = phone
        if phone not in gw.config.supervisors:
            logger.info("%s of %s dialled %s: not a supervisor", supervisor_id, tenant, msg.uri)
            gw.respond(tx, 403, "Forbidden: not a supervisor")
            return
        call = self._agent_call(tenant, agent_id)
        if call is None and self.replicas is not None:
            task = asyncio.ensure_future(self._redirect(msg, peer, tx, tenant, agent_id))
            self._redirecting.add(task)
            task.add_done_callback(self._redirecting.discard)
            return
        if call is None:
            gw.respond(tx, 404, "Not Found: the agent is on no call here")
            return
        if msg.call_id in gw.by_dialog:
            gw.respond(tx, 482, "Loop Detected")
            return
        try:
            offer = sdp.parse(msg.body) if msg.body else None
        except sdp.SdpError as exc:
            gw.respond(tx, 488, f"Not Acceptable Here: {exc}")
            return
        if offer is None or sdp.choose(offer, (call.payload_type,)) is None:
            gw.respond(tx, 488, "Not Acceptable Here: offer the call's codec")
            return
        gw.by_dialog[msg.call_id] = call
        call.spawn(self._answer(call, supervisor_id, msg, peer, tx, offer))

    def _agent_call(self, tenant: str, agent_id: str) -> Call | None:
        """The connected call `tenant`'s agent is talking on here (another tenant's agent is not
        found: the supervisor's tenant has no such call)."""
        return next(
            (
                c
                for c in self.gw.calls.values()
                if c.tenant == tenant
                and c.agent_id == agent_id
                and c.agent is not None
                and supervision.can_supervise(c.state)
            ),
            None,
        )

    def held_here(self, tenant: str, agent_id: str) -> SipAddress | None:
        """This replica's SIP address when it holds the call of `tenant`'s agent (another
        replica asks, a supervisor having dialled in there)."""
        if self._agent_call(tenant, agent_id) is None:
            return None
        sip = self.gw.sip
        return SipAddress(sip.advertised, sip.port, sip.transport.ports.get("tls", 0))

    async def _redirect(
        self, msg: SipMessage, peer: Peer, tx: ServerTransaction, tenant: str, agent_id: str
    ) -> None:
        """The agent's call is not here: send the (authenticated) supervisor's phone to the
        replica that holds it, or answer 404 when none does."""
        gw = self.gw
        assert self.replicas is not None
        try:
            holder = await self.replicas.find(tenant, agent_id)
        except Exception as exc:  # NATS unreachable: as if no replica held it
            logger.warning("no replica asked for %s's call: %s", agent_id, exc)
            holder = None
        if tx.final:  # cancelled meanwhile
            return
        user = Uri.parse(msg.uri).user or Uri.parse(NameAddr.parse(msg.get("To")).uri).user
        target = supervision.redirect_uri(user, holder, peer.transport) if holder else None
        if target is None:
            gw.respond(tx, 404, "Not Found: the agent is on no call here")
            return
        logger.info("a supervisor of %s dialled %s: sent to %s", tenant, user, target)
        resp = msg.response(302, "Moved Temporarily", new_tag())
        resp.add("Contact", f"<{target}>")
        gw.sip.respond(tx, resp)

    async def _answer(
        self,
        call: Call,
        supervisor_id: str,
        msg: SipMessage,
        peer: Peer,
        tx: ServerTransaction,
        offer: sdp.Sdp,
    ) -> None:
        gw = self.gw
        try:
            rtp = await gw.media.open()
        except OSError:
            gw.by_dialog.pop(msg.call_id, None)
            gw.respond(tx, 503, "Service Unavailable: no media port")
            return
        if not supervision.can_supervise(call.state) or call.agent is None:
            gw.by_dialog.pop(msg.call_id, None)
            rtp.close()
            gw.respond(tx, 404, "Not Found: the call ended")
            return
        rtp.payload_type = call.payload_type
        rtp.telephone_event = offer.telephone_event or 101
        rtp.set_remote(offer.host, offer.port)
        tag = new_tag()
        sup = Supervisor(
            uuid.uuid4().hex, supervisor_id, Leg(Dialog.as_uas(msg, peer, tag), rtp), Mode.MONITOR
        )
        resp = gw.answer(msg, peer, tag, rtp, call.payload_type, bool(offer.telephone_event))

        def on_ack_timeout() -> None:  # the phone is gone: as if it hung up
            if sup.supervision_id in call.supervisors:
                call.spawn(self.hung_up(call, sup))

        tx.on_ack_timeout = on_ack_timeout
        gw.sip.respond(tx, resp)
        self._join(call, sup)
        await gw.supervised(call, sup, "joined", "dial")

    # ---- the supervisor in the call's media ---------------------------------------------------

    def _join(self, call: Call, sup: Supervisor) -> None:
        assert call.caller is not None and call.agent is not None
        call.supervisors[sup.supervision_id] = sup
        mix = Mixer(call.payload_type)
        sup.leg.rtp.set_mixer(mix)
        for leg in (call.caller, call.agent):
            feed = functools.partial(mix.push, leg.rtp)
            leg.rtp.listeners.append(feed)
            sup.feeds.append((leg, feed))
        sup.leg.rtp.listeners = [functools.partial(self._heard, call, sup)]
        sup.leg.rtp.on_dtmf = functools.partial(self.pressed, call, sup)
        self._record(call, sup)
        self.gw.mix(call)

    def _record(self, call: Call, sup: Supervisor) -> None:
        """Send the supervisor's voice into the recording's channels its mode reaches."""
        channels = supervision.recorded_in(sup.mode)
        recordings = self.gw.recordings
        recorder = recordings.recorder(call.contact_id) if recordings is not None else None
        sup.record = (
            recorder.extra_tap(
                (sup.supervision_id, sup.mode.value), tuple(CHANNELS[c] for c in channels)
            )
            if recorder is not None and channels
            else None
        )

    def _heard(self, call: Call, sup: Supervisor, packet: bytes) -> None:
        """The supervisor spoke: into the agent's mix (whisper, barge), the caller's (barge) and
        every other supervisor's."""
        for leg, hears in (
            (call.agent, supervision.agent_hears),
            (call.caller, supervision.caller_hears),
        ):
            if leg is not None and leg.rtp.mixer is not None and hears(sup.mode):
                leg.rtp.mixer.push(sup, packet)
        if sup.record is not None:
            sup.record(packet)
        if supervision.supervisor_hears(sup.mode):
            for other in call.supervisors.values():
                mixer = other.leg.rtp.mixer
                if other is not sup and mixer is not None:
                    mixer.push(sup, packet)

    def _set_mode(self, call: Call, sup: Supervisor, mode: Mode, by: str) -> None:
        if mode is sup.mode:
            return
        sup.mode = mode
        self._record(call, sup)
        for leg in (call.agent, call.caller):  # what it said in the old mode is not heard
            if leg is not None and leg.rtp.mixer is not None:
                leg.rtp.mixer.remove(sup)
        self.gw.mix(call)
        call.spawn(self.gw.supervised(call, sup, "mode_changed", by))

    async def set_mode(self, tenant: str, supervision_id: str, mode: Mode) -> Mode:
        call, sup = self._session(tenant, supervision_id)
        self._set_mode(call, sup, mode, "rpc")
        return sup.mode

    def pressed(self, call: Call, sup: Supervisor, digit: str) -> None:
        """A key on the supervisor's phone (RFC 4733 or SIP INFO): 4, 5 and 6 switch modes."""
        mode = supervision.mode_for_key(digit)
        if mode is not None and sup.supervision_id in call.supervisors:
            self._set_mode(call, sup, mode, "dtmf")

    async def end(self, tenant: str, supervision_id: str) -> None:
        """The supervisor leaves (by RPC): its phone is hung up."""
        call, sup = self._session(tenant, supervision_id)
        self.gw.unjoin(call, sup)
        await self.gw.supervised(call, sup, "left")
        await self.gw.bye_leg(call, sup.leg)

    async def hung_up(self, call: Call, sup: Supervisor) -> None:
        """The supervisor's phone sent BYE."""
        self.gw.unjoin(call, sup)
        sup.leg.rtp.close()
        self.gw.by_dialog.pop(sup.leg.dialog.call_id, None)
        await self.gw.supervised(call, sup, "left")
