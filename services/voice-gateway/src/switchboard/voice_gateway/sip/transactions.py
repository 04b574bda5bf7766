"""SIP transactions (RFC 3261 section 17): retransmissions over UDP, absorbing retransmitted
requests, ACK for non-2xx, CANCEL, and timeouts. The transaction user (the call layer) sees
each request once and gets one final response per client request."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from switchboard.voice_gateway.sip.message import SipMessage, SipSyntaxError, Via, has_tag
from switchboard.voice_gateway.sip.transport import Peer, TransportLayer

logger = logging.getLogger(__name__)

T1, T2, T4 = 0.5, 4.0, 5.0
TIMEOUT = 64 * T1  # timers B, F, H


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def _key(msg: SipMessage, method: str) -> tuple[str, ...]:
    via = msg.top_via
    if via.branch.startswith("z9hG4bK"):
        return (via.branch, f"{via.host}:{via.port}", method)
    # RFC 2543 peers: no magic cookie; match on the dialog-identifying fields.
    return (msg.call_id, msg.get("CSeq").split()[0], msg.get("From"), method)


@dataclass
class ServerTransaction:
    request: SipMessage
    peer: Peer
    key: tuple[str, ...]
    last: bytes | None = None
    final: int = 0
    acked: bool = False
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    on_ack_timeout: Callable[[], None] | None = None

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


@dataclass
class ClientTransaction:
    request: SipMessage
    peer: Peer
    key: tuple[str, str]
    future: asyncio.Future[SipMessage]
    on_provisional: Callable[[SipMessage], None] | None = None
    provisional: asyncio.Event = field(default_factory=asyncio.Event)
    ack: bytes | None = None  # the ACK sent for a 2xx, resent when the 2xx is retransmitted
    timed_out: bool = False  # the final response is the 408 synthesised by Timer B or F
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


RequestHandler = Callable[[SipMessage, Peer, ServerTransaction], None]


class TransactionLayer:
    def __init__(self, host: str, advertised: str) -> None:
        self.transport = TransportLayer(host, self._received)
        self.advertised = advertised
        self.server: dict[tuple[str, ...], ServerTransaction] = {}
        self.client: dict[tuple[str, str], ClientTransaction] = {}
        self.awaiting_ack: dict[tuple[str, int], ServerTransaction] = {}
        self.on_request: RequestHandler | None = None
        self.on_ack: Callable[[SipMessage, Peer], None] | None = None

    @property
    def port(self) -> int:
        return self.transport.ports["udp"]

    def via(self, peer: Peer, branch: str) -> str:
        proto = peer.transport.upper()
        return f"SIP/2.0/{proto} {self.advertised}:{self.port};branch={branch};rport"

    def contact(self, peer: Peer) -> str:
        """The gateway's Contact header value for a request or response sent to `peer`."""
        t = "" if peer.transport == "udp" else f";transport={peer.transport}"
        return f"<sip:gateway@{self.advertised}:{self.port}{t}>"

    # ---- incoming ----------------------------------------------------------------------------

    def _received(self, msg: SipMessage, peer: Peer) -> None:
        if msg.is_request:
            self._request(msg, peer)
        else:
            self._response(msg, peer)

    def _request(self, msg: SipMessage, peer: Peer) -> None:
        # Section 18.2.1: note where the request really came from, for the responses.
        via = msg.top_via
        if via.host != peer.host or "rport" in via.params:
            vias = msg.get_all("Via")
            top = vias[0].replace(";rport", "")
            top += f";received={peer.host}" if "received" not in via.params else ""
            top += f";rport={peer.port}"
            msg.headers = [(k, v) for k, v in msg.headers if k != "Via"]
            for i, value in enumerate([top, *vias[1:]]):
                msg.headers.insert(i, ("Via", value))
        if msg.method == "ACK":
            tx = self.server.get(_key(msg, "INVITE"))
            if tx is not None and tx.final >= 300:
                self._acked(tx)
                return
            pending = self.awaiting_ack.pop((msg.call_id, msg.cseq[0]), None)
            if pending is not None:
                self._acked(pending)
            if self.on_ack is not None:
                self.on_ack(msg, peer)
            return
        key = _key(msg, msg.method)
        tx = self.server.get(key)
        if tx is not None:
            if tx.last is not None:  # a retransmission: answer it again
                self.transport.send(tx.last, peer)
            return
        tx = ServerTransaction(msg, peer, key)
        self.server[key] = tx
        if msg.method == "INVITE":
            self.respond(tx, msg.response(100, "Trying"))
        if self.on_request is not None:
            self.on_request(msg, peer, tx)

    def _acked(self, tx: ServerTransaction) -> None:
        tx.acked = True
        tx.cancel_timers()
        self._forget_later(tx, T4 if tx.peer.transport == "udp" else 0)

    def find_invite(self, cancel: SipMessage) -> ServerTransaction | None:
        return self.server.get(_key(cancel, "INVITE"))

    def _response(self, msg: SipMessage, peer: Peer) -> None:
        try:
            branch = msg.top_via.branch
        except SipSyntaxError:
            return
        tx = self.client.get((branch, msg.cseq[1]))
        if tx is None:
            return
        if msg.status < 200:
            if tx.request.method == "INVITE":
                tx.cancel_timers()
                tx.timers.append(self._later(TIMEOUT * 6, lambda: self._timeout(tx)))
            tx.provisional.set()
            if tx.on_provisional is not None and not tx.future.done():
                tx.on_provisional(msg)
            return
        if tx.request.method == "INVITE":
            if msg.status >= 300:
                self.transport.send(self._ack_non2xx(tx, msg).encode(), tx.peer)
            elif tx.future.done() and tx.ack is not None:
                self.transport.send(tx.ack, tx.peer)  # a retransmitted 2xx
        if not tx.future.done():
            tx.cancel_timers()
            tx.future.set_result(msg)
            linger = TIMEOUT if tx.request.method == "INVITE" else T4
            tx.timers.append(self._later(linger, lambda: self._forget_client(tx.key)))

    def _forget_client(self, key: object) -> None:
        self.client.pop(key, None)  # type: ignore[call-overload]

    def _ack_non2xx(self, tx: ClientTransaction, resp: SipMessage) -> SipMessage:
        req = tx.request
        ack = SipMessage(method="ACK", uri=req.uri)
        ack.add("Via", req.get("Via"))
        for name in ("Route", "From", "Call-ID"):
            for value in req.get_all(name):
                ack.add(name, value)
        ack.add("To", resp.get("To"))
        ack.add("CSeq", f"{req.cseq[0]} ACK")
        ack.add("Max-Forwards", "70")
        return ack

    # ---- server side -------------------------------------------------------------------------

    def respond(self, tx: ServerTransaction, resp: SipMessage) -> None:
        if tx.final:
            return
        to = resp.get("To")
        if resp.status >= 300 and to and not has_tag(to):
            resp.set("To", f"{to};tag={new_tag()}")  # section 8.2.6.2
        data = resp.encode()
        tx.last = data
        self.transport.send(data, tx.peer)
        if resp.status < 200:
            return
        tx.final = resp.status
        udp = tx.peer.transport == "udp"
        if tx.request.method != "INVITE":
            self._forget_later(tx, TIMEOUT if udp else 0)
            return
        if resp.status < 300:
            self.awaiting_ack[(tx.request.call_id, tx.request.cseq[0])] = tx
        if udp:
            self._retransmit(tx, data, T1)
        tx.timers.append(self._later(TIMEOUT, lambda: self._no_ack(tx)))

    def _retransmit(self, tx: ServerTransaction, data: bytes, interval: float) -> None:
        def again() -> None:
            if not tx.acked:
                self.transport.send(data, tx.peer)
                self._retransmit(tx, data, min(interval * 2, T2))

        tx.timers.append(self._later(interval, again))

    def _no_ack(self, tx: ServerTransaction) -> None:
        tx.cancel_timers()
        self.awaiting_ack.pop((tx.request.call_id, tx.request.cseq[0]), None)
        self.server.pop(tx.key, None)
        if not tx.acked and tx.on_ack_timeout is not None:
            tx.on_ack_timeout()

    def _forget_later(self, tx: ServerTransaction, delay: float) -> None:
        def forget() -> None:
            if self.server.get(tx.key) is tx:
                del self.server[tx.key]

        if delay:
            tx.timers.append(self._later(delay, forget))
        else:
            forget()

    # ---- client side -------------------------------------------------------------------------

    def request(
        self,
        msg: SipMessage,
        peer: Peer,
        on_provisional: Callable[[SipMessage], None] | None = None,
        branch: str | None = None,
        timeout: float = TIMEOUT,
    ) -> ClientTransaction:
        """Send `msg` (without Via) in a new client transaction; await `.future` for the final
        response (a synthesised 408 after `timeout`, Timer B or F by default)."""
        branch = branch or new_branch()
        msg.add("Via", self.via(peer, branch), first=True)
        loop = asyncio.get_running_loop()
        key = (branch, msg.method)
        tx = ClientTransaction(msg, peer, key, loop.create_future(), on_provisional)
        self.client[key] = tx
        data = msg.encode()
        self.transport.send(data, peer)
        if peer.transport == "udp":
            cap = None if msg.method == "INVITE" else T2
            self._resend(tx, data, T1, cap)
        tx.timers.append(self._later(timeout, lambda: self._timeout(tx)))
        return tx

    def _resend(
        self, tx: ClientTransaction, data: bytes, interval: float, cap: float | None
    ) -> None:
        def again() -> None:
            if tx.future.done():
                return
            self.transport.send(data, tx.peer)
            nxt = interval * 2 if cap is None else min(interval * 2, cap)
            self._resend(tx, data, nxt, cap)

        tx.timers.append(self._later(interval, again))

    def _timeout(self, tx: ClientTransaction) -> None:
        tx.cancel_timers()
        self.client.pop(tx.key, None)
        if not tx.future.done():
            tx.timed_out = True
            tx.future.set_result(tx.request.response(408, "Request Timeout"))

    def cancel(self, invite: ClientTransaction) -> ClientTransaction:
        """CANCEL a pending INVITE (section 9.1): same branch, Request-URI, Call-ID, From, To."""
        req = invite.request
        cancel = SipMessage(method="CANCEL", uri=req.uri)
        for name in ("Route", "From", "To", "Call-ID"):
            for value in req.get_all(name):
                cancel.add(name, value)
        cancel.add("CSeq", f"{req.cseq[0]} CANCEL")
        cancel.add("Max-Forwards", "70")
        return self.request(cancel, invite.peer, branch=Via.parse(req.get("Via")).branch)

    def _later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, fn)
