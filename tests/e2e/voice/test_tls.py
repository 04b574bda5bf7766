"""SIP over TLS (RFC 3261 section 26): the gateway's TLS listener answers requests with the
certificate it was given, rejects malformed ones precisely, and shrugs off a client that does not
speak TLS."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path
from typing import Any

import pytest

from switchboard.testing.tls import self_signed

from .conftest import Voice

HOTLINE = "+8215880001"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), "gateway")


@pytest.fixture
def gateway_settings(certificate: tuple[Path, Path]) -> dict[str, Any]:
    key, cert = certificate
    return {"VOICE_SIP_TLS_PORT": 0, "VOICE_SIP_TLS_CERT": str(cert), "VOICE_SIP_TLS_KEY": str(key)}


def options(port: int, drop: str = "") -> bytes:
    headers = [
        f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK{uuid.uuid4().hex[:10]}",
        "Max-Forwards: 70",
        "From: <sip:+821099990000@127.0.0.1>;tag=tls1",
        f"To: <sip:{HOTLINE}@127.0.0.1>",
        f"Call-ID: {uuid.uuid4().hex}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    ]
    headers = [h for h in headers if not drop or not h.startswith(drop + ":")]
    return (
        f"OPTIONS sip:{HOTLINE}@127.0.0.1:{port};transport=tls SIP/2.0\r\n"
        + "\r\n".join(headers)
        + "\r\n\r\n"
    ).encode()


async def exchange(port: int, cert: Path, data: bytes) -> str:
    context = ssl.create_default_context(cafile=str(cert))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return head.decode()
    finally:
        writer.close()


async def test_options_and_a_malformed_request_over_tls(
    voice: Voice, certificate: tuple[Path, Path]
) -> None:
    _, cert = certificate
    port = voice.gateway.tls_port
    assert port > 0
    answer = await exchange(port, cert, options(port))
    assert answer.startswith("SIP/2.0 200"), answer
    assert "Via: SIP/2.0/TLS" in answer
    bad = await exchange(port, cert, options(port, drop="Call-ID"))
    assert bad.startswith("SIP/2.0 400 Missing Call-ID header"), bad
    # A client that does not speak TLS is dropped, and TLS clients are still served.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(options(port))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert (await exchange(port, cert, options(port))).startswith("SIP/2.0 200")
