"""A SIP dialog (RFC 3261 section 12): one leg of a call, as the UAS (the caller's leg) or the
UAC (the gateway calling a phone). Builds in-dialog requests with the route set."""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.voice_gateway.sip.message import NameAddr, SipMessage
from switchboard.voice_gateway.sip.transport import Peer


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # From of our requests (with our tag)
    remote_uri: str
    remote_target: str  # the peer's Contact URI
    peer: Peer  # where in-dialog requests go (the phone, or the edge proxy it came through)
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int = 0

    @classmethod
    def as_uas(cls, invite: SipMessage, peer: Peer, local_tag: str) -> Dialog:
        frm, to = NameAddr.parse(invite.get("From")), NameAddr.parse(invite.get("To"))
        contact = invite.get("Contact")
        target = NameAddr.parse(contact).uri if contact else frm.uri
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=frm.tag,
            local_uri=to.uri,
            remote_uri=frm.uri,
            remote_target=target,
            peer=peer,
            route_set=invite.get_all("Record-Route"),
            remote_cseq=invite.cseq[0],
        )

    @classmethod
    def as_uac(cls, invite: SipMessage, resp: SipMessage, peer: Peer) -> Dialog:
        frm, to = NameAddr.parse(invite.get("From")), NameAddr.parse(resp.get("To"))
        contact = resp.get("Contact")
        return cls(
            call_id=invite.call_id,
            local_tag=frm.tag,
            remote_tag=to.tag,
            local_uri=frm.uri,
            remote_uri=to.uri,
            remote_target=NameAddr.parse(contact).uri if contact else invite.uri,
            peer=peer,
            route_set=list(reversed(resp.get_all("Record-Route"))),
            local_cseq=invite.cseq[0],
        )

    def request(
        self, method: str, contact: str, body: bytes = b"", content_type: str = ""
    ) -> SipMessage:
        """A new in-dialog request (its Via is added by the transaction layer)."""
        if method != "ACK":
            self.local_cseq += 1
        msg = SipMessage(method=method, uri=self.remote_target)
        for route in self.route_set:
            msg.add("Route", route)
        msg.add("From", f"<{self.local_uri}>;tag={self.local_tag}")
        msg.add(
            "To", f"<{self.remote_uri}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        )
        msg.add("Call-ID", self.call_id)
        msg.add("CSeq", f"{self.local_cseq} {method}")
        msg.add("Max-Forwards", "70")
        msg.add("Contact", contact)
        if body:
            msg.add("Content-Type", content_type)
            msg.body = body
        return msg

    def matches(self, msg: SipMessage) -> bool:
        frm, to = NameAddr.parse(msg.get("From")), NameAddr.parse(msg.get("To"))
        return msg.call_id == self.call_id and {frm.tag, to.tag} == {
            self.local_tag,
            self.remote_tag,
        }
