"""What the call handlers share: the adapters, the limits, the live calls (by contact id and by
the SIP Call-ID of either leg), and the steps both sides take on a call's legs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from switchboard.core import tasks
from switchboard.voice_gateway.adapters import RouterClient
from switchboard.voice_gateway.calls import Call, Leg, State, Supervisor
from switchboard.voice_gateway.config import VoiceConfig
from switchboard.voice_gateway.domain import state as call_state
from switchboard.voice_gateway.domain import supervision
from switchboard.voice_gateway.media import sdp
from switchboard.voice_gateway.media.mixer import Mixer
from switchboard.voice_gateway.media.prompts import Prompts
from switchboard.voice_gateway.media.rtp import MediaEngine, RtpSession
from switchboard.voice_gateway.notifier import VoiceNotifier
from switchboard.voice_gateway.recording.calls import CallRecordings
from switchboard.voice_gateway.sip.message import SipMessage
from switchboard.voice_gateway.sip.registrar import Registrar
from switchboard.voice_gateway.sip.transactions import (
    ServerTransaction,
    TransactionLayer,
    new_branch,
)
from switchboard.voice_gateway.sip.transport import Peer

logger = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, REFER, NOTIFY"


class Gateway:
    def __init__(
        self,
        config: VoiceConfig,
        sip: TransactionLayer,
        media: MediaEngine,
        prompts: Prompts,
        notifier: VoiceNotifier,
        router: RouterClient,
        registrar: Registrar,
        *,
        max_calls: int,
        retry_after: int,
        ring_timeout: float,
        position_poll: float,
        recordings: CallRecordings | None = None,
    ) -> None:
        self.config = config
        self.sip = sip
        self.media = media
        self.prompts = prompts
        self.notifier = notifier
        self.router = router
        self.registrar = registrar
        self.max_calls = max_calls
        self.retry_after = retry_after
        self.ring_timeout = ring_timeout
        self.position_poll = position_poll
        self.recordings = recordings
        self.calls: dict[str, Call] = {}  # contact id -> call
        self.by_dialog: dict[str, Call] = {}  # SIP Call-ID of either leg -> call
        self.rejected_busy = 0

    # ---- the live calls -----------------------------------------------------------------------

    def live_calls(self) -> int:
        # Counted from the INVITE on (not from the media port), so a burst cannot overshoot.
        return sum(1 for c in self.calls.values() if call_state.is_live(c.state))

    def find(self, msg: SipMessage) -> tuple[Call, Leg] | None:
        """The call and leg an in-dialog request belongs to."""
        call = self.by_dialog.get(msg.call_id)
        if call is None:
            return None
        for leg in (call.caller, call.agent, *(s.leg for s in call.supervisors.values())):
            if leg is not None and leg.dialog.matches(msg):
                return call, leg
        return None

    def supervisor_of(self, call: Call, leg: Leg) -> Supervisor | None:
        return next((s for s in call.supervisors.values() if s.leg is leg), None)

    def forget(self, call: Call) -> None:
        # Every ending forgets the call: also a recorded call transferred back to a queue whose
        # caller then hangs up. Its recording is closed and stored.
        if self.recordings is not None:
            self.recordings.ended(call)
        self.release_supervisors(call)
        self.calls.pop(call.contact_id, None)
        for key in [k for k, v in self.by_dialog.items() if v is call]:
            del self.by_dialog[key]

    def stats(self) -> dict[str, Any]:
        return {"calls": self.live_calls(), "rejected_busy": self.rejected_busy}

    # ---- SIP on a call's legs -----------------------------------------------------------------

    def respond(self, tx: ServerTransaction, status: int, reason: str, tag: str = "") -> None:
        self.sip.respond(tx, tx.request.response(status, reason, tag))

    def answer(
        self,
        msg: SipMessage,
        peer: Peer,
        tag: str,
        rtp: RtpSession,
        payload_type: int,
        dtmf: bool,
    ) -> SipMessage:
        """The 200 OK answering an INVITE on `rtp`'s port, in the call's codec (and RFC 4733
        events when the offer had them)."""
        resp = msg.response(200, "OK", tag)
        resp.add("Contact", self.sip.contact(peer))
        resp.add("Allow", ALLOW)
        resp.add("Content-Type", "application/sdp")
        resp.body = sdp.build(
            self.media.host, rtp.port, payload_type, "sendrecv", 101 if dtmf else None
        )
        return resp

    def send_ack(self, ack: SipMessage, peer: Peer) -> bytes:
        """Send the ACK of a 2xx (a transaction of its own) and return it for retransmissions."""
        ack.add("Via", self.sip.via(peer, new_branch()), first=True)
        data = ack.encode()
        self.sip.transport.send(data, peer)
        return data

    async def bye_leg(self, call: Call, leg: Leg | None, close: bool = True) -> None:
        if leg is None:
            return
        bye = leg.dialog.request("BYE", self.sip.contact(leg.dialog.peer))
        tx = self.sip.request(bye, leg.dialog.peer)
        if close:
            leg.rtp.close()
        with tasks.suppress_foreign_cancel():  # given up; a call task cancelled stops here
            await tx.future
        if leg is not call.caller:
            self.by_dialog.pop(leg.dialog.call_id, None)

    def drop_caller(self, call: Call) -> None:
        if call.caller is not None:
            call.caller.rtp.close()
            self.by_dialog.pop(call.caller.dialog.call_id, None)
            call.caller = None

    def release_supervisors(self, call: Call) -> None:
        """The conversation is over (or the agent left it): hang up every supervisor's phone."""
        for sup in list(call.supervisors.values()):
            self.unjoin(call, sup)
            call.spawn(self.bye_leg(call, sup.leg))
            call.spawn(self.supervised(call, sup, "left"))

    async def supervised(self, call: Call, sup: Supervisor, action: str, by: str = "") -> None:
        """Publish (for the audit) that `sup` joined, changed mode or left."""
        sup.events += 1
        logger.info(
            "call %s: supervisor %s %s (%s)",
            call.contact_id,
            sup.supervisor_id,
            action,
            sup.mode.value,
        )
        await self.notifier.supervised(
            call.tenant,
            call.contact_id,
            call.agent_id,
            sup.supervision_id,
            sup.supervisor_id,
            sup.mode.value,
            action,
            sup.events,
            by,
        )

    def unjoin(self, call: Call, sup: Supervisor) -> None:
        """Take `sup` out of the call's media (its leg stays open until its BYE)."""
        call.supervisors.pop(sup.supervision_id, None)
        for leg, feed in sup.feeds:
            if feed in leg.rtp.listeners:
                leg.rtp.listeners.remove(feed)
        sup.feeds.clear()
        sup.leg.rtp.listeners = []
        sup.record = None
        for other in call.supervisors.values():  # what it said last is not heard after it left
            if other.leg.rtp.mixer is not None:
                other.leg.rtp.mixer.remove(sup)
        self.mix(call)

    def mix(self, call: Call) -> None:
        """Give the agent's leg, and the caller's, a mix while a supervisor talks to them; else
        the relay sends them the other party's packets as they come."""
        modes = [s.mode for s in call.supervisors.values()]
        for leg, hears in (
            (call.agent, supervision.agent_hears),
            (call.caller, supervision.caller_hears),
        ):
            if leg is None:
                continue
            if any(hears(m) for m in modes):
                if leg.rtp.mixer is None:
                    leg.rtp.set_mixer(Mixer(call.payload_type))
            elif leg.rtp.mixer is not None:
                leg.rtp.set_mixer(None)

    # ---- media on a call's legs ---------------------------------------------------------------

    async def play(self, call: Call, names: list[str], loop: bool = False) -> None:
        """Play prompts to the caller in the call's language, in its codec."""
        if call.caller is None:
            return
        audio = self.prompts.sequence(names, call.payload_type, call.language)
        # A prompt stopped or replaced is over and the call goes on; the call's task cancelled
        # (the caller hung up, the gateway stops) stops here.
        with tasks.suppress_foreign_cancel():
            await call.caller.rtp.play(audio, loop)

    def hold_music(self, call: Call) -> None:
        if call.caller is not None:
            call.caller.rtp.bridge = None
            call.caller.rtp.play(self.prompts.get("music-on-hold", call.payload_type), loop=True)

    def bridge(self, call: Call) -> None:
        assert call.caller is not None and call.agent is not None
        call.caller.rtp.stop_playing()
        call.caller.rtp.bridge = call.agent.rtp
        call.agent.rtp.bridge = call.caller.rtp
        if self.recordings is not None:
            self.recordings.bridged(call)
        if call.state is not State.CONNECTED:
            call.state = State.CONNECTED
            call.connected_at = time.monotonic()

    # ---- endings ------------------------------------------------------------------------------

    async def end_connected(self, call: Call, by_caller: bool, reason: int) -> None:
        """End a connected call from the agent's side (or a callback that failed)."""
        call.state = State.ENDED
        call.cancel_tasks(keep=asyncio.current_task())  # type: ignore[arg-type]
        await self.finish(call, by_caller, reason)
        await self.bye_leg(call, call.caller)
        self.drop_caller(call)
        self.forget(call)

    async def finish(self, call: Call, by_caller: bool, reason: int) -> None:
        """Release the agent's leg (BYE when the caller ended) and publish ContactEnded."""
        call.end_hold()
        if self.recordings is not None:  # the conversation is over (a survey is not recorded)
            self.recordings.ended(call)
        self.release_supervisors(call)
        talk = call.talk()
        agent, call.agent = call.agent, None
        if by_caller and agent is not None:
            await self.bye_leg(call, agent)
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

    async def stop(self) -> None:
        """Hang up every leg of every live call."""
        for call in list(self.calls.values()):
            for leg in (call.caller, call.agent, *(s.leg for s in call.supervisors.values())):
                if leg is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self.bye_leg(call, leg), 1)
            call.cancel_tasks()
            if self.recordings is not None:  # what was recorded of it is stored all the same
                self.recordings.ended(call)
        if self.recordings is not None:
            await self.recordings.drain()
