"""Malformed and abusive SIP from raw UDP and TCP sockets: precise 400s, 503 under flood, and
the gateway keeps serving."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

HOTLINE = "+8215880001"


def request(
    port: int,
    method: str = "OPTIONS",
    drop: str = "",
    extra: str = "",
    body: str = "",
    length: str | None = None,
    call_id: str = "",
) -> bytes:
    call_id = call_id or uuid.uuid4().hex
    headers = [
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{uuid.uuid4().hex[:10]};rport",
        "Max-Forwards: 70",
        "From: <sip:+821099990000@127.0.0.1>;tag=abc",
        f"To: <sip:{HOTLINE}@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        "Contact: <sip:+821099990000@127.0.0.1:9>",
    ]
    headers = [h for h in headers if not drop or not h.startswith(drop + ":")]
    if extra:
        headers.append(extra)
    if body:
        headers.append("Content-Type: application/sdp")
    headers.append(f"Content-Length: {len(body.encode()) if length is None else length}")
    return (
        f"{method} sip:{HOTLINE}@127.0.0.1:{port} SIP/2.0\r\n"
        + "\r\n".join(headers)
        + "\r\n\r\n"
        + body
    ).encode()


def udp_exchange(port: int, data: bytes, timeout: float = 2.0) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        return s.recv(65536).decode()


def status_line(text: str) -> str:
    return text.split("\r\n", 1)[0]


async def udp(port: int, data: bytes) -> str:
    return await asyncio.to_thread(udp_exchange, port, data)


async def test_malformed_requests_get_400_naming_the_fault(voice: Any) -> None:
    port = voice.sip_port
    cases = {
        "Missing Call-ID header": request(port, drop="Call-ID"),
        "Missing CSeq header": request(port, drop="CSeq"),
        "Repeated Call-ID header": request(port, extra="Call-ID: second"),
        "Repeated To header": request(port, extra="To: <sip:x@127.0.0.1>"),
        "Invalid Content-Length": request(port, length="-5"),
        "Content-Length exceeds the datagram": request(port, length="500"),
        "CSeq method does not match the request": request(port).replace(
            b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"
        ),
        "Malformed Request-URI": request(port).replace(
            f"OPTIONS sip:{HOTLINE}@127.0.0.1:{port}".encode(), b"OPTIONS nonsense"
        ),
        "Malformed Max-Forwards header": request(port).replace(
            b"Max-Forwards: 70", b"Max-Forwards: many"
        ),
    }
    for reason, data in cases.items():
        assert status_line(await udp(port, data)) == f"SIP/2.0 400 {reason}", reason
    # Still serving: a well-formed OPTIONS keep-alive is answered.
    assert status_line(await udp(port, request(port))) == "SIP/2.0 200 OK"


async def test_protocol_faults_get_the_rfc_3261_status(voice: Any) -> None:
    port = voice.sip_port
    line = f"OPTIONS sip:{HOTLINE}@127.0.0.1:{port} SIP/2.0".encode()
    cases = {
        "SIP/2.0 400 Malformed Request-Line": request(port).replace(line, line + b" "),
        "SIP/2.0 400 Malformed Request-URI": request(port).replace(
            line, line.replace(b"OPTIONS sip:", b"OPTIONS <sip:").replace(b" SIP/", b"> SIP/")
        ),
        "SIP/2.0 505 Version Not Supported": request(port).replace(line, line[:-3] + b"3.0"),
        "SIP/2.0 416 Unsupported URI Scheme": request(port).replace(
            line, b"OPTIONS mailto:agent@example.com SIP/2.0"
        ),
        "SIP/2.0 420 Bad Extension": request(port, extra="Require: 100rel"),
        "SIP/2.0 400 Malformed Via header": request(port).replace(b";rport", b";;rport"),
    }
    for expected, data in cases.items():
        assert status_line(await udp(port, data)) == expected, data
    assert status_line(await udp(port, request(port))) == "SIP/2.0 200 OK"


async def test_tcp_framing_faults_are_rejected(voice: Any) -> None:
    port = voice.sip_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(port, drop="From"))
    line = (await asyncio.wait_for(reader.readuntil(b"\r\n"), 3)).decode().strip()
    assert line == "SIP/2.0 400 Missing From header"
    await reader.readuntil(b"\r\n\r\n")
    writer.write(request(port, length="99999999"))  # cannot be framed: rejected and closed
    line = (await asyncio.wait_for(reader.readuntil(b"\r\n"), 3)).decode().strip()
    assert line == "SIP/2.0 413 Content-Length too large"
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(port))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 3)).strip() == b"SIP/2.0 200 OK"
    writer.close()


SDP = (
    "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


async def test_invite_flood_gets_503_with_retry_after_and_gateway_survives(voice: Any) -> None:
    gw = voice.gateway.gateway
    gw.max_calls = 5
    port = voice.sip_port
    statuses = await asyncio.to_thread(flood, port)
    busy = [st for st in statuses if st.startswith("SIP/2.0 503")]
    assert len(busy) >= 250 and all(st.endswith("|RA") for st in busy)
    assert gw.live_calls() <= 5
    assert status_line(await udp(port, request(port))) == "SIP/2.0 200 OK"


def flood(port: int) -> list[str]:
    statuses: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for _ in range(300):
            s.sendto(request(port, "INVITE", body=SDP), ("127.0.0.1", port))
        try:
            while True:
                text = s.recv(65536).decode()
                if "Retry-After" in text or not text.startswith("SIP/2.0 1"):
                    statuses.append(status_line(text) + ("|RA" if "Retry-After: " in text else ""))
        except TimeoutError:
            pass
    return statuses


async def test_dtmf_by_sip_info_chooses_the_language(voice: Any) -> None:
    await asyncio.to_thread(call_with_info, voice.sip_port)
    created = (await voice.events.wait("ContactCreated"))[0].contact
    assert created.language == "zh"
    assert list(created.skills) == []  # 9 is not a topic; the menu times out with none


def call_with_info(port: int) -> None:
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(request(port, "INVITE", body=SDP, call_id=call_id), ("127.0.0.1", port))
        while True:
            ok = s.recv(65536).decode()
            if ok.startswith("SIP/2.0 200"):
                break
        to = next(line for line in ok.split("\r\n") if line.startswith("To:"))
        ack = request(port, "ACK", call_id=call_id).replace(
            f"To: <sip:{HOTLINE}@127.0.0.1>".encode(), to.encode()
        )
        s.sendto(ack, ("127.0.0.1", port))
        for n, digit in ((2, "2"), (3, "9")):
            info = (
                request(port, "INFO", call_id=call_id)
                .replace(f"To: <sip:{HOTLINE}@127.0.0.1>".encode(), to.encode())
                .replace(b"CSeq: 1 INFO", f"CSeq: {n} INFO".encode())
            )
            body = f"Signal={digit}\r\nDuration=160\r\n"
            info = info.replace(
                b"Content-Length: 0\r\n\r\n",
                f"Content-Type: application/dtmf-relay\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode(),
            )
            s.sendto(info, ("127.0.0.1", port))
            while True:
                reply = s.recv(65536).decode()
                if "INFO" in reply.split("CSeq:", 1)[1].split("\r\n", 1)[0]:
                    break
            assert status_line(reply) == "SIP/2.0 200 OK"
