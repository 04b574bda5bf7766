"""The RFC 4475 torture messages sent over real UDP to the gateway's SIP stack (transport,
transactions, registrar and request dispatch; the router and the bus are small fakes): each
valid message is parsed and answered as an endpoint would, each invalid one gets the answer the
RFC describes, and a response is never answered. The messages are the RFC's own bytes
(tests/fixtures/rfc4475/NAME.dat)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from switchboard.testing.fakes import FakePublisher
from switchboard.voice_gateway.config import NumberPlan, VoiceConfig
from switchboard.voice_gateway.entrypoints.sip_server import SipServer
from switchboard.voice_gateway.handlers.agent_leg import AgentLeg
from switchboard.voice_gateway.handlers.call_flow import CallFlow
from switchboard.voice_gateway.handlers.gateway import Gateway
from switchboard.voice_gateway.handlers.supervision import Supervision
from switchboard.voice_gateway.media.prompts import Prompts
from switchboard.voice_gateway.media.rtp import MediaEngine
from switchboard.voice_gateway.notifier import VoiceNotifier
from switchboard.voice_gateway.sip.message import NameAddr, Uri, Via, parse_datagram
from switchboard.voice_gateway.sip.registrar import Registrar
from switchboard.voice_gateway.sip.transactions import TransactionLayer

FIXTURES = Path(__file__).parent / "fixtures" / "rfc4475"
PLAN = NumberPlan(number="+8215880001", tenant="demo", queue="general", language="en")

# What the gateway (a user agent server and registrar) answers, per RFC 4475 and RFC 3261:
# (status, reason) for requests, None where nothing may be sent back (responses).
ANSWERS: dict[str, tuple[int, str] | None] = {
    # 3.1.1 valid messages
    "wsinv": (481, "Call/Transaction Does Not Exist"),  # To has a tag: no such dialog here
    "intmeth": (501, "Not Implemented"),
    "esc01": (404, "Number Not Configured"),
    "escnull": (401, "Unauthorized"),
    "esc02": (501, "Not Implemented"),  # RE%47IST%45R is not REGISTER
    "lwsdisp": (200, "OK"),
    "longreq": (404, "Number Not Configured"),
    "dblreq": (401, "Unauthorized"),  # the REGISTER only; the INVITE after it is ignored
    "semiuri": (200, "OK"),
    "transports": (200, "OK"),
    "mpart01": (405, "Method Not Allowed"),
    "unreason": None,
    "noreason": None,
    # 3.1.2 invalid messages
    "badinv01": (400, "Malformed Via header"),
    "clerr": (400, "Content-Length exceeds the datagram"),
    "ncl": (400, "Invalid Content-Length"),
    "scalar02": (400, "Malformed CSeq header"),
    "scalarlg": None,
    "quotbal": (400, "Malformed To header"),
    "ltgtruri": (400, "Malformed Request-URI"),
    "lwsruri": (400, "Malformed Request-Line"),
    "lwsstart": (400, "Malformed Request-Line"),
    "trws": (400, "Malformed Request-Line"),
    "escruri": (400, "Malformed Request-URI"),
    "baddate": (400, "Malformed Date header"),
    "regbadct": (400, "Malformed Contact header"),
    "badaspec": (400, "Malformed To header"),
    "baddn": (400, "Malformed From header"),
    "badvers": (505, "Version Not Supported"),
    "mismatch01": (400, "CSeq method does not match the request"),
    "mismatch02": (400, "CSeq method does not match the request"),
    "bigcode": None,
    # 3.2 transaction layer
    "badbranch": (200, "OK"),
    # 3.3 application layer
    "insuf": (400, "Missing To header"),
    "unkscm": (416, "Unsupported URI Scheme"),
    "novelsc": (416, "Unsupported URI Scheme"),
    "unksm2": (400, "To is not a SIP or SIPS address of record"),
    "bext01": (420, "Bad Extension"),
    "invut": (415, "Unsupported Media Type"),
    "regaut01": (401, "Unauthorized"),
    "multi01": (400, "Repeated To header"),
    "mcl01": (400, "Repeated Content-Length header"),
    "bcast": None,
    "zeromf": (200, "OK"),  # an endpoint handles Max-Forwards 0 as any other value
    "cparam01": (401, "Unauthorized"),
    "cparam02": (401, "Unauthorized"),
    "regescrt": (401, "Unauthorized"),
    "sdp01": (406, "Not Acceptable"),
    # 3.4 backward compatibility
    "inv2543": (404, "Number Not Configured"),
}
# The responses among them that are valid (dropped without counting as malformed).
VALID_RESPONSES = {"unreason", "noreason", "bcast"}
INVALID_RESPONSES = {"scalarlg", "bigcode"}

OPTIONS = (
    "OPTIONS sip:gateway@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKfollowup{n}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:probe@127.0.0.1>;tag=p\r\n"
    "To: <sip:gateway@127.0.0.1>\r\n"
    "Call-ID: followup-{n}\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)


@dataclass
class Running:
    gateway: Gateway
    port: int


class FakeRouter:
    async def decline(self, tenant: str, agent_id: str, offer_id: str, reason: str) -> None:
        return None


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    config = VoiceConfig(
        realm="switchboard", phones={("demo", "agent-ko"): "pw"}, numbers={PLAN.number: PLAN}
    )
    gw = Gateway(
        config,
        TransactionLayer("127.0.0.1", "127.0.0.1"),
        MediaEngine("127.0.0.1"),
        Prompts(tmp_path),
        VoiceNotifier(FakePublisher()),
        FakeRouter(),  # type: ignore[arg-type]
        Registrar(config.realm, config.phones),
        max_calls=10,
        retry_after=30,
        ring_timeout=3.0,
        position_poll=1.0,
    )
    flow = CallFlow(gw)
    SipServer(gw, flow, AgentLeg(gw, flow), Supervision(gw)).serve()
    await gw.sip.transport.start(0)
    try:
        yield Running(gw, gw.sip.port)
    finally:
        await gw.stop()
        await gw.sip.transport.stop()


def exchange(port: int, data: bytes, follow_up: int) -> list[str]:
    """Send `data`, then a valid OPTIONS; every final response received up to the OPTIONS's
    200 (which ends the list). Provisional responses are skipped."""
    finals: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(data, ("127.0.0.1", port))
        s.sendto(OPTIONS.format(n=follow_up).encode(), ("127.0.0.1", port))
        while True:
            text = s.recv(65536).decode("utf-8", "replace")
            if text.startswith("SIP/2.0 1"):
                continue
            finals.append(text)
            if f"Call-ID: followup-{follow_up}\r\n" in text:
                return finals


def status(text: str) -> tuple[int, str]:
    line = text.split("\r\n", 1)[0]
    _, code, reason = line.split(" ", 2)
    return int(code), reason


def header(text: str, name: str) -> str:
    for line in text.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def test_every_torture_message_has_an_answer_and_vice_versa() -> None:
    assert {p.stem for p in FIXTURES.glob("*.dat")} == set(ANSWERS)


@pytest.mark.parametrize("name", sorted(ANSWERS))
async def test_torture_message_gets_the_rfc_answer(running: Running, name: str) -> None:
    data = (FIXTURES / f"{name}.dat").read_bytes()
    rejected = running.gateway.sip.transport.rejected
    finals = await asyncio.to_thread(exchange, running.port, data, 1)
    *answers, follow_up = finals
    assert status(follow_up) == (200, "OK"), "the gateway stopped serving"
    expected = ANSWERS[name]
    if expected is None:
        assert answers == [], f"{name} is a response: it must not be answered"
        counted = running.gateway.sip.transport.rejected - rejected
        assert counted == (1 if name in INVALID_RESPONSES else 0)
        return
    assert len(answers) == 1, f"{name}: expected one answer, got {answers}"
    answer = answers[0]
    assert status(answer) == expected, answer
    call_id = header(answer, "Call-ID")
    if call_id:  # the answer is addressed to the request (section 8.2.6.2)
        assert call_id.encode() in data
    if name == "bext01":
        assert header(answer, "Unsupported") == "nothingSupportsThis, nothingSupportsThisEither"
    if name == "invut":
        assert header(answer, "Accept") == "application/sdp"
    if expected[0] >= 400 and name not in ("insuf",):
        assert re.search(r";\s*tag\s*=", header(answer, "To"))


async def test_a_garbage_datagram_does_not_stop_the_transport(running: Running) -> None:
    for n, garbage in enumerate(
        [b"\x00\xff\xfe garbage \r\n\r\n", b"SIP/2.0\r\n", b"INVITE\r\n\r\n\x00", b"\xc3(" * 500]
    ):
        finals = await asyncio.to_thread(exchange, running.port, garbage, n + 10)
        assert [status(f) for f in finals] == [(200, "OK")]


async def test_an_ack_is_never_answered_even_when_malformed(running: Running) -> None:
    acks = [
        b"ACK sip:user@example.com SIP/7.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa1\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: ack1\r\n"
        b"CSeq: 1 ACK\r\n\r\n",
        b"ACK  sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa2\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: ack2\r\n"
        b"CSeq: 1 ACK\r\n\r\n",
        b"ACK urn:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa3\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: ack3\r\n"
        b"CSeq: 1 ACK\r\nRequire: foo\r\n\r\n",
    ]
    for n, ack in enumerate(acks):
        finals = await asyncio.to_thread(exchange, running.port, ack, n + 20)
        assert [status(f) for f in finals] == [(200, "OK")]


async def test_a_malformed_request_line_over_tcp_keeps_the_framing(running: Running) -> None:
    """Over a stream the body of a request with a malformed Request-Line is still read (by its
    Content-Length), so the next request on the connection is served."""
    bad = (
        OPTIONS.format(n=30)
        .replace("OPTIONS sip:", "OPTIONS  sip:")
        .replace("Content-Length: 0\r\n\r\n", "Content-Length: 5\r\n\r\nhello")
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    try:
        writer.write(bad.encode() + OPTIONS.format(n=31).encode())
        first = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
        second = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    finally:
        writer.close()
    assert status(first) == (400, "Malformed Request-Line")
    assert "Call-ID: followup-30\r\n" in first
    assert status(second) == (200, "OK")
    assert "Call-ID: followup-31\r\n" in second


def test_the_valid_messages_parse_as_the_rfc_reads_them() -> None:
    wsinv = parse_datagram((FIXTURES / "wsinv.dat").read_bytes())
    assert NameAddr.parse(wsinv.get("To")).tag == "1918181833n"
    assert NameAddr.parse(wsinv.get("From")).tag == "98asjd8"
    assert NameAddr.parse(wsinv.get("From")).display == 'J Rosenberg \\"'
    assert [(v.transport, v.host, v.branch) for v in map(Via.parse, wsinv.get_all("Via"))] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    contact = NameAddr.parse(wsinv.get("Contact"))
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert wsinv.cseq == (9, "INVITE") and len(wsinv.body) == 150
    intmeth = parse_datagram((FIXTURES / "intmeth.dat").read_bytes())
    assert intmeth.method == "!interesting-Method0123456789_*+`.%indeed'~"  # case kept
    assert Uri.parse(intmeth.uri).host == "example.com"
    assert parse_datagram((FIXTURES / "esc02.dat").read_bytes()).method == "RE%47IST%45R"
    dblreq = parse_datagram((FIXTURES / "dblreq.dat").read_bytes())
    assert dblreq.method == "REGISTER" and dblreq.body == b""
    semiuri = Uri.parse(parse_datagram((FIXTURES / "semiuri.dat").read_bytes()).uri)
    assert (semiuri.user, semiuri.host, semiuri.params) == (
        "user;par=u%40example.net",
        "example.com",
        {},
    )
    longreq = parse_datagram((FIXTURES / "longreq.dat").read_bytes())
    assert len(longreq.get_all("Via")) == 34 and len(longreq.body) == 150
    noreason = parse_datagram((FIXTURES / "noreason.dat").read_bytes())
    assert (noreason.status, noreason.reason) == (100, "")
