"""HTTPS: with CHAT_TLS_CERT_FILE and CHAT_TLS_KEY_FILE the chat's page, API, Socket.IO and
inbox answer over TLS only."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import socketio

from switchboard.chat.bootstrap import ChatApp
from switchboard.testing.tls import self_signed

from .conftest import TENANT, chat_settings, config_for_tests, customer_auth


@pytest.fixture
async def https_chat(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[ChatApp, Path]]:
    key, cert = self_signed(tmp_path)
    settings = chat_settings(nats_url, CHAT_TLS_CERT_FILE=str(cert), CHAT_TLS_KEY_FILE=str(key))
    app = ChatApp(settings, config=config_for_tests())
    await app.start()
    try:
        yield app, cert
    finally:
        await app.stop()


def trusting(cert: Path) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=str(cert))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


async def test_page_api_and_socket_io_over_https(https_chat: tuple[ChatApp, Path]) -> None:
    app, cert = https_chat
    url = f"https://127.0.0.1:{app.http_port}"
    async with trusting(cert) as http:
        async with http.get(f"{url}/healthz") as response:
            assert (response.status, await response.read()) == (200, b"ok")
        async with http.get(f"{url}/inbox") as response:
            assert response.status == 200
        async with http.post(f"{url}/api/visitor-token", json={"tenant": TENANT}) as response:
            assert response.status == 200
            token = (await response.json())["token"]
        sio = socketio.AsyncClient(reconnection=False, http_session=http)
        await sio.connect(
            url,
            namespaces=["/customer"],
            auth={"token": token, **customer_auth()},
            transports=["websocket"],
            wait_timeout=10,
        )
        try:
            assert sio.connected
        finally:
            await sio.disconnect()


async def test_plain_http_and_an_untrusted_certificate_are_refused(
    https_chat: tuple[ChatApp, Path],
) -> None:
    app, _ = https_chat
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{app.http_port}/healthz") as response:
                await response.read()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with http.get(f"https://127.0.0.1:{app.http_port}/healthz") as response:
                await response.read()
