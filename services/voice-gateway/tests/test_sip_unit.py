"""Unit tests of the SIP stack: message parsing (compact forms, folding, Via lists,
Content-Length) and RFC 3261 section 17 transactions on a virtual clock with a fake transport,
so the retransmission timers are checked exactly, without waiting for them."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from switchboard.voice_gateway.sip import transactions
from switchboard.voice_gateway.sip.message import (
    SipMessage,
    SipSyntaxError,
    Via,
    parse_datagram,
)
from switchboard.voice_gateway.sip.transactions import T1, T2, TIMEOUT, TransactionLayer
from switchboard.voice_gateway.sip.transport import Peer


def raw(*lines: str, body: str = "") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


BASE = (
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc",
    "Max-Forwards: 70",
    "From: <sip:alice@example.com>;tag=1",
    "To: <sip:bob@example.com>",
    "Call-ID: c1@10.0.0.1",
    "CSeq: 1 OPTIONS",
)


# ---- parsing ---------------------------------------------------------------------------------


def test_compact_header_forms_are_canonical() -> None:
    msg = parse_datagram(
        raw(
            "INVITE sip:bob@example.com SIP/2.0",
            "v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
            "Max-Forwards: 70",
            "f: <sip:alice@example.com>;tag=9",
            "t: <sip:bob@example.com>",
            "i: compact@10.0.0.1",
            "CSeq: 7 INVITE",
            "m: <sip:alice@10.0.0.1>",
            "c: application/sdp",
            "l: 4",
            body="v=0\r\n",
        )
    )
    assert msg.method == "INVITE"
    assert msg.call_id == "compact@10.0.0.1"
    assert msg.get("From") == "<sip:alice@example.com>;tag=9"
    assert msg.get("to") == "<sip:bob@example.com>"
    assert msg.get("Contact") == "<sip:alice@10.0.0.1>"
    assert msg.get("Content-Type") == "application/sdp"
    assert msg.top_via.branch == "z9hG4bK1" and msg.top_via.port == 5060
    assert msg.cseq == (7, "INVITE")
    assert msg.body == b"v=0\r"  # l: 4 bytes of the 5 in the datagram
    # Compact and long forms of one header count as the same header.
    with pytest.raises(SipSyntaxError) as err:
        parse_datagram(raw("OPTIONS sip:bob@example.com SIP/2.0", *BASE, "i: second"))
    assert err.value.reason == "Repeated Call-ID header"


def test_folded_headers_are_unfolded() -> None:
    msg = parse_datagram(
        raw(
            "OPTIONS sip:bob@example.com SIP/2.0",
            *BASE,
            "Subject: I know you're there,",
            "   pick up the phone",
            "\tand talk to me!",
            "Via: SIP/2.0/UDP 10.0.0.2:5070",
            " ;branch=z9hG4bKfold",
        )
    )
    assert msg.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert msg.get_all("Via")[1] == "SIP/2.0/UDP 10.0.0.2:5070 ;branch=z9hG4bKfold"


def test_multiple_via_in_separate_and_comma_separated_headers() -> None:
    msg = parse_datagram(
        raw(
            "SIP/2.0 180 Ringing",
            "Via: SIP/2.0/UDP gw.example.com;branch=z9hG4bKtop;received=1.2.3.4",
            "v: SIP/2.0/TCP proxy.example.com:5061;branch=z9hG4bKmid, SIP/2.0/UDP [::1]:5062"
            ";branch=z9hG4bKlast",
            "From: <sip:alice@example.com>;tag=1",
            "To: <sip:bob@example.com>;tag=2",
            "Call-ID: c1",
            "CSeq: 1 INVITE",
        )
    )
    vias = msg.get_all("Via")
    assert len(vias) == 3
    assert msg.top_via.host == "gw.example.com" and msg.top_via.port is None
    assert msg.top_via.params["received"] == "1.2.3.4"
    mid, last = Via.parse(vias[1]), Via.parse(vias[2])
    assert (mid.transport, mid.host, mid.port, mid.branch) == (
        "TCP",
        "proxy.example.com",
        5061,
        "z9hG4bKmid",
    )
    assert (last.host, last.port) == ("::1", 5062)
    # A response to a request with several Vias copies them all, in order (section 8.2.6.2).
    req = parse_datagram(
        raw(
            "OPTIONS sip:bob@example.com SIP/2.0",
            *BASE,
            "Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKsecond",
        )
    )
    assert req.response(200, "OK").get_all("Via") == req.get_all("Via")


@pytest.mark.parametrize(
    ("length", "body", "expected"),
    [
        ("0", "", b""),
        ("5", "hello", b"hello"),
        ("3", "hello", b"hel"),  # extra bytes after Content-Length are discarded
        (None, "hello", b"hello"),  # over UDP the datagram ends the body (section 18.3)
    ],
)
def test_content_length_frames_the_body(length: str | None, body: str, expected: bytes) -> None:
    lines = ["OPTIONS sip:bob@example.com SIP/2.0", *BASE]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    assert parse_datagram(raw(*lines, body=body)).body == expected


@pytest.mark.parametrize(
    ("headers", "reason", "status"),
    [
        (["Content-Length: 6"], "Content-Length exceeds the datagram", 400),
        (["Content-Length: -1"], "Invalid Content-Length", 400),
        (["Content-Length: ten"], "Invalid Content-Length", 400),
        (["Content-Length: 2", "l: 2"], "Repeated Content-Length header", 400),
        (["Content-Length: 9999999"], "Content-Length too large", 413),
    ],
)
def test_impossible_content_length_is_a_precise_fault(
    headers: list[str], reason: str, status: int
) -> None:
    with pytest.raises(SipSyntaxError) as err:
        parse_datagram(raw("OPTIONS sip:bob@example.com SIP/2.0", *BASE, *headers, body="hi"))
    assert (err.value.reason, err.value.status) == (reason, status)
    assert err.value.partial is not None  # so the transport can address the 4xx


def test_encode_writes_the_real_content_length() -> None:
    msg = parse_datagram(raw("OPTIONS sip:bob@example.com SIP/2.0", *BASE, "l: 2", body="hi"))
    msg.body = b"longer body"
    again = parse_datagram(msg.encode())
    assert again.get("Content-Length") == "11" and again.body == b"longer body"


# ---- transactions on a virtual clock --------------------------------------------------------


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """Replaces the transaction layer's timers: `advance` runs what falls due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._seq = itertools.count()
        self._queue: list[tuple[float, int, _Handle, Callable[[], None]]] = []

    def later(self, delay: float, fn: Callable[[], None]) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), handle, fn))
        return handle

    def advance(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            when, _, handle, fn = heapq.heappop(self._queue)
            self.now = when
            if not handle.cancelled:
                fn()
        self.now = until


class FakeTransport:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ports = {"udp": 5060, "tcp": 5060}
        self.sent: list[tuple[float, SipMessage, Peer]] = []

    def send(self, data: bytes, peer: Peer) -> None:
        self.sent.append((self.clock.now, parse_datagram(data), peer))


PHONE = Peer("udp", "10.0.0.7", 5062)


@pytest.fixture
def layer() -> tuple[TransactionLayer, Clock, FakeTransport]:
    clock = Clock()
    sip = TransactionLayer("127.0.0.1", "gw.example.com")
    fake = FakeTransport(clock)
    sip.transport = fake  # type: ignore[assignment]
    sip._later = clock.later  # type: ignore[assignment,method-assign]
    return sip, clock, fake


def invite() -> SipMessage:
    msg = SipMessage(method="INVITE", uri="sip:agent@10.0.0.7:5062")
    msg.add("From", "<sip:gw@gw.example.com>;tag=g1")
    msg.add("To", "<sip:agent@gw.example.com>")
    msg.add("Call-ID", "leg1")
    msg.add("CSeq", "1 INVITE")
    msg.add("Max-Forwards", "70")
    return msg


def reply(req: SipMessage, status: int, reason: str) -> SipMessage:
    return parse_datagram(req.response(status, reason, "phone-tag").encode())


async def test_client_invite_timer_a_doubles_until_timer_b_times_out(layer: Any) -> None:
    sip, clock, fake = layer
    tx = sip.request(invite(), PHONE)
    clock.advance(TIMEOUT - 0.01)
    times = [t for t, m, _ in fake.sent if m.method == "INVITE"]
    # Timer A starts at T1 and doubles with no cap: 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5.
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(m.top_via.branch == tx.request.top_via.branch for _, m, _ in fake.sent)
    assert not tx.future.done()
    clock.advance(TIMEOUT)  # Timer B = 64*T1
    assert tx.future.done() and tx.future.result().status == 408
    assert tx.key not in sip.client
    clock.advance(TIMEOUT * 10)
    assert len(fake.sent) == 7  # nothing more after the timeout


async def test_client_invite_stops_retransmitting_after_a_provisional(layer: Any) -> None:
    sip, clock, fake = layer
    seen: list[int] = []
    tx = sip.request(invite(), PHONE, on_provisional=lambda m: seen.append(m.status))
    clock.advance(0.7)  # the first retransmission went out
    sip._received(reply(tx.request, 180, "Ringing"), PHONE)
    clock.advance(TIMEOUT * 2)
    assert [t for t, _, _ in fake.sent] == [0.0, 0.5]  # proceeding: no retransmissions
    assert seen == [180] and tx.provisional.is_set() and not tx.future.done()
    # A final non-2xx is ACKed by the transaction itself (section 17.1.1.3), with its To tag.
    busy = reply(tx.request, 486, "Busy Here")
    sip._received(busy, PHONE)
    assert tx.future.result().status == 486
    ack = fake.sent[-1][1]
    assert ack.method == "ACK" and ack.cseq == (1, "ACK")
    assert ack.top_via.branch == tx.request.top_via.branch and "tag=phone-tag" in ack.get("To")
    # The 486 retransmitted by the phone is ACKed again and not passed up a second time.
    sip._received(busy, PHONE)
    assert [m.method for _, m, _ in fake.sent].count("ACK") == 2


async def test_client_non_invite_timer_e_is_capped_at_t2(layer: Any) -> None:
    sip, clock, fake = layer
    options = invite()
    options.method = "OPTIONS"
    options.set("CSeq", "1 OPTIONS")
    tx = sip.request(options, PHONE)
    clock.advance(TIMEOUT + 1)
    times = [t for t, _, _ in fake.sent]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[:4] == [T1, 2 * T1, 4 * T1, T2] and set(gaps[4:]) == {T2}
    assert tx.future.result().status == 408


def incoming_invite(branch: str = "z9hG4bKcaller1") -> SipMessage:
    return parse_datagram(
        raw(
            "INVITE sip:+8215880001@gw.example.com SIP/2.0",
            f"Via: SIP/2.0/UDP 10.0.0.7:5062;branch={branch};rport",
            "Max-Forwards: 70",
            "From: <sip:+821012345678@carrier>;tag=c1",
            "To: <sip:+8215880001@gw.example.com>",
            "Call-ID: incoming-1",
            "CSeq: 1 INVITE",
        )
    )


async def test_server_transaction_absorbs_a_retransmitted_invite(layer: Any) -> None:
    sip, clock, fake = layer
    seen: list[SipMessage] = []
    acks: list[SipMessage] = []
    txs: list[Any] = []
    sip.on_request = lambda m, p, tx: (seen.append(m), txs.append(tx))
    sip.on_ack = lambda m, p: acks.append(m)
    sip._received(incoming_invite(), PHONE)
    assert len(seen) == 1 and fake.sent[-1][1].status == 100
    sip._received(incoming_invite(), PHONE)  # retransmission: not passed up, 100 sent again
    assert len(seen) == 1 and [m.status for _, m, _ in fake.sent] == [100, 100]
    # The response goes back where the request came from (rport, section 18.2.2).
    assert fake.sent[0][1].top_via.params["rport"] == "5062"

    tx = txs[0]
    sip.respond(tx, tx.request.response(486, "Busy Here", "gw-tag"))
    sip._received(incoming_invite(), PHONE)  # a late retransmission gets the final again
    assert [m.status for _, m, _ in fake.sent] == [100, 100, 486, 486]
    clock.advance(1.6)  # Timer G: the 486 is retransmitted at .5 and 1.5 until the ACK
    assert [m.status for _, m, _ in fake.sent][4:] == [486, 486]
    ack = parse_datagram(
        incoming_invite()
        .encode()
        .replace(b"INVITE sip", b"ACK sip")
        .replace(b"CSeq: 1 INVITE", b"CSeq: 1 ACK")
        .replace(b"To: <sip:+8215880001@gw.example.com>", b"To: <sip:x@gw>;tag=gw-tag")
    )
    sip._received(ack, PHONE)
    assert acks == []  # the ACK of a non-2xx belongs to the transaction, not the call layer
    before = len(fake.sent)
    clock.advance(TIMEOUT * 2)
    assert len(fake.sent) == before  # retransmissions stopped
    assert tx.key not in sip.server  # Timer I: forgotten after T4


async def test_server_invite_without_ack_times_out(layer: Any) -> None:
    sip, clock, fake = layer
    txs: list[Any] = []
    sip.on_request = lambda m, p, tx: txs.append(tx)
    sip._received(incoming_invite(), PHONE)
    timed_out: list[bool] = []
    txs[0].on_ack_timeout = lambda: timed_out.append(True)
    sip.respond(txs[0], txs[0].request.response(200, "OK", "gw-tag"))
    clock.advance(TIMEOUT + 1)
    oks = [t for t, m, _ in fake.sent if m.status == 200]
    gaps = [b - a for a, b in itertools.pairwise(oks)]
    assert gaps[:4] == [T1, 2 * T1, 4 * T1, T2]  # the 2xx is resent, capped at T2 (13.3.1.4)
    assert timed_out == [True] and txs[0].key not in sip.server


def test_timers_are_the_rfc_values() -> None:
    assert (transactions.T1, transactions.T2, transactions.T4) == (0.5, 4.0, 5.0)
    assert TIMEOUT == 64 * T1


# ---- Record-Route and the route set (RFC 3261 sections 12.1 and 16.12) ------------------------


def test_record_route_is_echoed_and_becomes_the_route_set_of_both_sides() -> None:
    from switchboard.voice_gateway.sip.dialog import Dialog

    invite = parse_datagram(
        raw(
            "INVITE sip:+8215880001@gw.example SIP/2.0",
            "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKedge",
            "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKcarrier",
            "Record-Route: <sip:10.0.0.9;lr>",
            "Record-Route: <sip:192.0.2.7;lr>",
            "Max-Forwards: 69",
            "From: <sip:+821012345678@carrier.example>;tag=caller",
            "To: <sip:+8215880001@gw.example>",
            "Call-ID: rr-1",
            "CSeq: 1 INVITE",
            "Contact: <sip:+821012345678@192.0.2.50:5060>",
            "Content-Length: 0",
        )
    )
    # The gateway's responses carry the Record-Route set as received, in order.
    ok = invite.response(200, "OK", to_tag="gw")
    assert ok.get_all("Record-Route") == ["<sip:10.0.0.9;lr>", "<sip:192.0.2.7;lr>"]
    # As the callee (UAS) its in-dialog requests follow that route set in the same order, to the
    # caller's Contact, sent to where the INVITE came from (the edge proxy).
    edge = Peer("udp", "10.0.0.9", 5060)
    uas = Dialog.as_uas(invite, edge, "gw")
    bye = uas.request("BYE", "<sip:gw@10.0.0.1:5060>")
    assert bye.uri == "sip:+821012345678@192.0.2.50:5060"
    assert bye.get_all("Route") == ["<sip:10.0.0.9;lr>", "<sip:192.0.2.7;lr>"]
    assert bye.get("CSeq") == "2 BYE" and uas.peer == edge
    # As the caller (UAC) the route set is the response's Record-Route reversed.
    answer = parse_datagram(
        raw(
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKgw",
            "Record-Route: <sip:10.0.0.9;lr>",
            "Record-Route: <sip:10.0.0.8;lr>",
            "From: <sip:gw@gw.example>;tag=gwtag",
            "To: <sip:agent-ko@gw.example>;tag=phone",
            "Call-ID: rr-2",
            "CSeq: 1 INVITE",
            "Contact: <sip:agent-ko@10.0.0.77:5062>",
            "Content-Length: 0",
        )
    )
    out = parse_datagram(
        raw(
            "INVITE sip:agent-ko@10.0.0.77:5062 SIP/2.0",
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKgw",
            "Max-Forwards: 70",
            "From: <sip:gw@gw.example>;tag=gwtag",
            "To: <sip:agent-ko@gw.example>",
            "Call-ID: rr-2",
            "CSeq: 1 INVITE",
            "Content-Length: 0",
        )
    )
    uac = Dialog.as_uac(out, answer, Peer("udp", "10.0.0.8", 5060))
    ack = uac.request("ACK", "<sip:gw@10.0.0.1:5060>")
    assert ack.get_all("Route") == ["<sip:10.0.0.8;lr>", "<sip:10.0.0.9;lr>"]
    assert ack.uri == "sip:agent-ko@10.0.0.77:5062" and ack.get("CSeq") == "1 ACK"
