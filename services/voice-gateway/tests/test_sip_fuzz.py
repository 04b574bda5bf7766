"""Fuzzing the SIP parser and the request path with mutated messages (the RFC 4475 torture
messages and a few of the gateway's own): parsing fails only with `SipSyntaxError`, the
gateway answers what it cannot parse with an error (never a 2xx) or not at all, and what it
sends is a well-formed status line. Bounded so it runs in `make test`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from switchboard.voice_gateway.sip.message import SipSyntaxError, parse_datagram
from switchboard.voice_gateway.sip.registrar import Registrar
from switchboard.voice_gateway.sip.transactions import TransactionLayer
from switchboard.voice_gateway.sip.transport import Peer

FIXTURES = Path(__file__).parent / "fixtures" / "rfc4475"
PLAN = NumberPlan(number="+8215880001", tenant="demo", queue="general", language="en")
OWN = [
    b"OPTIONS sip:gateway@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n"
    b"Call-ID: own1@10.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    b"BYE sip:gateway@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb;rport\r\n"
    b'f: "A" <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>;tag=2\r\ni: own2\r\n'
    b"CSeq: 2 BYE\r\nl: 0\r\n\r\n",
    b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKc\r\n"
    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\nCall-ID: own3\r\n"
    b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
]
SEEDS = [p.read_bytes() for p in sorted(FIXTURES.glob("*.dat"))] + OWN
STATUS_LINE = re.compile(rb"^SIP/2\.0 ([1-6]\d\d) [^\r\n]*\r\n")
SIP_BYTES = [*b' \t\r\n:;,=<>"@/.%\\?', 0, 0x7F, 0xC3, 0xFF]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed message with a few byte- and line-level mutations."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "line", "dup", "cut"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.sampled_from(SIP_BYTES) | st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(
                st.binary(min_size=1, max_size=8)
                | st.sampled_from(
                    [b"\r\n", b" ", b";", b";;", b",", b"\r\n\r\n", b"<", b">", b'"', b"SIP/2.0 "]
                )
            )
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind in ("line", "dup"):
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "line":
                del lines[i]
            else:
                lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        elif kind == "cut":
            del data[at:]
    return bytes(data)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, list[bytes]]]:
    """The gateway's request path with its transport's sending captured (no sockets)."""
    config = VoiceConfig(
        realm="switchboard", phones={("demo", "agent-ko"): "pw"}, numbers={PLAN.number: PLAN}
    )
    gw = Gateway(
        config,
        TransactionLayer("127.0.0.1", "127.0.0.1"),
        MediaEngine("127.0.0.1"),
        Prompts(tmp_path_factory.mktemp("prompts")),
        VoiceNotifier(FakePublisher()),
        None,  # type: ignore[arg-type]
        Registrar(config.realm, config.phones),
        max_calls=10,
        retry_after=30,
        ring_timeout=3.0,
        position_poll=1.0,
    )
    flow = CallFlow(gw)
    SipServer(gw, flow, AgentLeg(gw, flow), Supervision(gw)).serve()
    gw.sip.transport.ports["udp"] = 5060
    sent: list[bytes] = []
    gw.sip.transport.send = lambda data, peer: sent.append(data)  # type: ignore[method-assign]
    yield gw, sent


def test_the_seeds_include_every_torture_message() -> None:
    assert len(SEEDS) == 49 + len(OWN)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=mutated())
def test_mutated_messages_never_crash_the_parser_or_get_a_2xx(
    stack: tuple[Gateway, list[bytes]], data: bytes
) -> None:
    gw, sent = stack
    try:
        parse_datagram(data)
        malformed = False
    except SipSyntaxError:
        malformed = True
    # Any other exception escapes and fails the example.
    sent.clear()
    loop = asyncio.new_event_loop()
    try:

        async def deliver() -> None:
            gw.sip.transport.datagram(data, Peer("udp", "127.0.0.1", 5999))
            for call in list(gw.calls.values()):
                call.cancel_tasks()
            gw.calls.clear()
            gw.by_dialog.clear()

        loop.run_until_complete(deliver())
    finally:
        loop.close()
    for out in sent:
        m = STATUS_LINE.match(out)
        assert m is not None, out[:80]
        if malformed:
            assert not m.group(1).startswith(b"2"), (data, out)
    if data.lstrip(b"\r\n").startswith(b"ACK ") or data.startswith(b"SIP/"):
        assert sent == []  # never an answer to an ACK or a response


TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+~",
    min_size=1,
    max_size=12,
)
# One fault each (RFC 3261 section 25 and 20), and the status it must get.
FAULTS: dict[str, int] = {
    "empty Via parameter": 400,
    "unterminated quoted display name": 400,
    "LWS inside the Request-URI": 400,
    "two spaces in the Request-Line": 400,
    "space at the end of the Request-Line": 400,
    "Request-URI in angle brackets": 400,
    "CSeq method mismatch": 400,
    "CSeq number too large": 400,
    "negative Content-Length": 400,
    "Content-Length beyond the datagram": 400,
    "Max-Forwards not a number": 400,
    "Max-Forwards above 255": 400,
    "Call-ID with a space": 400,
    "missing mandatory header": 400,
    "repeated single-valued header": 400,
    "unquoted display name with a comma": 400,
    "bare address with a question mark": 400,
    "spaces inside angle brackets": 400,
    "Date not in GMT": 400,
    "SIP version 3.0": 505,
}


@st.composite
def invalid_request(draw: st.DrawFn) -> tuple[bytes, str]:
    """A request with exactly one fault from FAULTS, amid valid variation (header order and
    case, compact forms, LWS around the colon, unknown headers, random tokens)."""
    fault = draw(st.sampled_from(sorted(FAULTS)))
    method = draw(st.sampled_from(["OPTIONS", "REGISTER", "INFO", "BYE", "MESSAGE", "INVITE"]))
    tag, branch, call_id = draw(TOKEN), draw(TOKEN), draw(TOKEN)
    ruri = "sip:gateway@127.0.0.1"
    headers = {
        "Via": f"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{branch}",
        "Max-Forwards": "70",
        "From": f'"Caller" <sip:a@example.com>;tag={tag}',
        "To": "<sip:b@example.com>",
        "Call-ID": f"{call_id}@10.0.0.1",
        "CSeq": f"{draw(st.integers(0, 2**31 - 1))} {method}",
    }
    extra: list[tuple[str, str]] = []
    start = f"{method} {ruri} SIP/2.0"
    body = ""
    length: str | None = None
    if fault == "empty Via parameter":
        headers["Via"] += draw(st.sampled_from([";;", ";", "; ;rport", ";=x"]))
    elif fault == "unterminated quoted display name":
        headers[draw(st.sampled_from(["To", "From"]))] = '"Bob <sip:b@example.com>;tag=9'
    elif fault == "LWS inside the Request-URI":
        start = f"{method} {ruri}; lr SIP/2.0"
    elif fault == "two spaces in the Request-Line":
        start = f"{method}  {ruri} SIP/2.0"
    elif fault == "space at the end of the Request-Line":
        start += " "
    elif fault == "Request-URI in angle brackets":
        start = f"{method} <{ruri}> SIP/2.0"
    elif fault == "CSeq method mismatch":
        other = draw(st.sampled_from(["INVITE", "BYE", "OPTIONS", "ACKS", method.lower()]))
        headers["CSeq"] = f"1 {other if other != method else 'NOTIFY'}"
    elif fault == "CSeq number too large":
        headers["CSeq"] = f"{draw(st.integers(2**31, 2**70))} {method}"
    elif fault == "negative Content-Length":
        length = f"-{draw(st.integers(1, 999))}"
    elif fault == "Content-Length beyond the datagram":
        length = str(draw(st.integers(1, 900)))
    elif fault == "Max-Forwards not a number":
        headers["Max-Forwards"] = draw(st.sampled_from(["many", "7a", "-1", "1.5"]))
    elif fault == "Max-Forwards above 255":
        headers["Max-Forwards"] = str(draw(st.integers(256, 10**12)))
    elif fault == "Call-ID with a space":
        headers["Call-ID"] = f"{call_id} {draw(TOKEN)}"
    elif fault == "missing mandatory header":
        del headers[draw(st.sampled_from(["To", "From", "Call-ID", "CSeq"]))]
    elif fault == "repeated single-valued header":
        name = draw(st.sampled_from(["To", "From", "Call-ID", "CSeq", "Max-Forwards"]))
        extra.append((name, headers[name]))
    elif fault == "unquoted display name with a comma":
        headers["From"] = f"Bell, Alexander <sip:a@example.com>;tag={tag}"
    elif fault == "bare address with a question mark":
        headers["To"] = "sip:b@example.com?Route=%3Csip:x.example.com%3E"
    elif fault == "spaces inside angle brackets":
        headers["To"] = "< sip:b@example.com >"
    elif fault == "Date not in GMT":
        extra.append(
            (
                "Date",
                draw(
                    st.sampled_from(
                        ["Fri, 01 Jan 2010 16:00:00 EST", "01 Jan 2010 16:00:00 GMT", "yesterday"]
                    )
                ),
            )
        )
    elif fault == "SIP version 3.0":
        start = f"{method} {ruri} SIP/3.0"
    lines = [(k, v) for k, v in headers.items()] + extra
    lines += [
        (draw(TOKEN).replace(".", "x") + "-X", draw(TOKEN)) for _ in range(draw(st.integers(0, 2)))
    ]
    lines = draw(st.permutations(lines))
    out = [start]
    for name, value in lines:
        if draw(st.booleans()):
            name = {"Via": "v", "From": "f", "To": "t", "Call-ID": "i"}.get(name, name.upper())
        out.append(
            f"{name}{draw(st.sampled_from(['', ' ', '  ']))}:{draw(st.sampled_from([' ', '', '   ']))}{value}"
        )
    out.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(out) + "\r\n\r\n" + body).encode(), fault


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=invalid_request())
def test_an_invalid_request_gets_the_error_it_earns_never_a_2xx(
    stack: tuple[Gateway, list[bytes]], case: tuple[bytes, str]
) -> None:
    gw, sent = stack
    data, fault = case
    with pytest.raises(SipSyntaxError):
        parse_datagram(data)
    sent.clear()
    gw.sip.transport.datagram(data, Peer("udp", "127.0.0.1", 5999))
    assert len(sent) == 1, (fault, data)
    m = STATUS_LINE.match(sent[0])
    assert m is not None and int(m.group(1)) == FAULTS[fault], (fault, data, sent[0][:80])


@given(data=st.binary(max_size=2048))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_random_bytes_raise_only_the_parser_error(data: bytes) -> None:
    try:
        parse_datagram(data)
    except SipSyntaxError as exc:
        assert exc.reason and "\r" not in exc.reason and "\n" not in exc.reason
