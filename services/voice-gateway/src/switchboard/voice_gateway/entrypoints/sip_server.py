"""The gateway's SIP requests, dispatched by method: REGISTER to the registrar, an INVITE to the
call flow (a new call) or to its leg (a re-INVITE), and in-dialog requests to the call and leg
they belong to. Only SIP is handled here: what a request means for a call is the handlers'."""

from __future__ import annotations

from switchboard.voice_gateway.calls import Call, Leg
from switchboard.voice_gateway.domain import dtmf
from switchboard.voice_gateway.domain.refused import Refused
from switchboard.voice_gateway.handlers.agent_leg import AgentLeg
from switchboard.voice_gateway.handlers.call_flow import CallFlow
from switchboard.voice_gateway.handlers.gateway import ALLOW, Gateway
from switchboard.voice_gateway.handlers.supervision import Supervision
from switchboard.voice_gateway.sip.message import NameAddr, SipMessage, split_list
from switchboard.voice_gateway.sip.transactions import ServerTransaction, new_tag
from switchboard.voice_gateway.sip.transport import Peer

KNOWN = frozenset(ALLOW.replace(" ", "").split(",")) | {"UPDATE", "PRACK", "SUBSCRIBE", "MESSAGE"}
SUPPORTED: frozenset[str] = frozenset()  # SIP extensions (option tags) the gateway implements
SDP = "application/sdp"


class SipServer:
    def __init__(
        self, gateway: Gateway, flow: CallFlow, agent_leg: AgentLeg, supervision: Supervision
    ) -> None:
        self.gw = gateway
        self.flow = flow
        self.agent_leg = agent_leg
        self.supervision = supervision

    def serve(self) -> None:
        """Take the requests the transaction layer receives."""
        self.gw.sip.on_request = self.on_request

    def on_request(self, msg: SipMessage, peer: Peer, tx: ServerTransaction) -> None:
        method = msg.method
        if method not in KNOWN:
            self.gw.respond(tx, 501, "Not Implemented")
            return
        if method != "CANCEL" and self._refused_extension(msg, tx):
            return
        if method == "INVITE" and self._refused_content(msg, tx):
            return
        if method == "REGISTER":
            self.gw.sip.respond(tx, self.gw.registrar.register(msg, peer))
        elif method == "OPTIONS":
            resp = msg.response(200, "OK", new_tag())
            resp.add("Allow", ALLOW)
            resp.add("Accept", "application/sdp, application/dtmf-relay, application/dtmf")
            self.gw.sip.respond(tx, resp)
        elif method == "INVITE" and not NameAddr.parse(msg.get("To")).tag:
            agent_id = self.supervision.dialled_agent(msg)
            if agent_id is not None:
                self.supervision.dialled(msg, peer, tx, agent_id)
            else:
                self.flow.new_call(msg, peer, tx)
        elif method == "CANCEL":
            self._cancel(msg, tx)
        elif method == "NOTIFY":
            self.gw.respond(tx, 200, "OK")
        elif method in ("INVITE", "BYE", "INFO", "REFER"):
            self._in_dialog(msg, tx)
        else:
            resp = msg.response(405, "Method Not Allowed")
            resp.add("Allow", ALLOW)
            self.gw.sip.respond(tx, resp)

    def _refused_extension(self, msg: SipMessage, tx: ServerTransaction) -> bool:
        """Section 8.2.2.3: 420 naming the `Require` option tags the gateway does not support."""
        tags = [t for v in msg.get_all("Require") for t in split_list(v)]
        unsupported = [t for t in tags if t.lower() not in SUPPORTED]
        if not unsupported:
            return False
        resp = msg.response(420, "Bad Extension", new_tag())
        resp.add("Unsupported", ", ".join(unsupported))
        self.gw.sip.respond(tx, resp)
        return True

    def _refused_content(self, msg: SipMessage, tx: ServerTransaction) -> bool:
        """Section 8.2.3 and 21.4.7: an offer the gateway cannot read is 415 (with Accept); an
        INVITE that accepts no SDP in the answer is 406."""
        kind = msg.get("Content-Type").split(";", 1)[0].strip().lower()
        if msg.body and kind != SDP:
            resp = msg.response(415, "Unsupported Media Type", new_tag())
            resp.add("Accept", SDP)
            self.gw.sip.respond(tx, resp)
            return True
        accepts = [
            a.split(";", 1)[0].strip().lower() for v in msg.get_all("Accept") for a in split_list(v)
        ]
        if msg.get_all("Accept") and not {SDP, "application/*", "*/*"} & set(accepts):
            self.gw.respond(tx, 406, "Not Acceptable", new_tag())
            return True
        return False

    def _in_dialog(self, msg: SipMessage, tx: ServerTransaction) -> None:
        found = self.gw.find(msg)
        if found is None:
            self.gw.respond(tx, 481, "Call/Transaction Does Not Exist")
            return
        call, leg = found
        if msg.method == "INVITE":
            self.agent_leg.reinvite(call, leg, msg, tx)
        elif msg.method == "BYE":
            self._bye(call, leg, tx)
        elif msg.method == "INFO":
            self._info(call, leg, msg, tx)
        else:
            self.agent_leg.refer(call, leg, msg, tx)

    def _cancel(self, msg: SipMessage, tx: ServerTransaction) -> None:
        invite = self.gw.sip.find_invite(msg)
        if invite is None:
            self.gw.respond(tx, 481, "Call/Transaction Does Not Exist")
            return
        self.gw.respond(tx, 200, "OK")
        if not invite.final:
            self.gw.respond(invite, 487, "Request Terminated", new_tag())
            call = self.gw.by_dialog.get(msg.call_id)
            if call is not None:
                call.spawn(self.flow.caller_gone(call, "cancelled"))

    def _bye(self, call: Call, leg: Leg, tx: ServerTransaction) -> None:
        self.gw.respond(tx, 200, "OK")
        sup = self.gw.supervisor_of(call, leg)
        if sup is not None:
            call.spawn(self.supervision.hung_up(call, sup))
        elif leg is call.caller:
            call.spawn(self.flow.caller_gone(call, "caller hung up", bye=False))
        else:
            call.spawn(self.agent_leg.agent_gone(call))

    def _info(self, call: Call, leg: Leg, msg: SipMessage, tx: ServerTransaction) -> None:
        digit = dtmf.info_digit(msg.get("Content-Type"), msg.body)
        if isinstance(digit, Refused):
            self.gw.respond(tx, digit.status, digit.reason)
            return
        self.gw.respond(tx, 200, "OK")
        sup = self.gw.supervisor_of(call, leg)
        if sup is not None:
            self.supervision.pressed(call, sup, digit)
        else:
            self.flow.pressed(call, leg, digit)
