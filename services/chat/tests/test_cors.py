"""CORS over the real uvicorn: only the chat's own origin and the configured origins are told they
may read the chat's answers (Access-Control-Allow-Origin), on the HTTP API and on Socket.IO's
handshake; any other origin is not reflected back."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

ALLOWED_ORIGIN = "https://shop.example.com"  # the demo tenant's, in the tests' configuration
EVIL = "https://evil.example"

ACAO = "Access-Control-Allow-Origin"


async def _request(method: str, url: str, origin: str | None, **kw: Any) -> aiohttp.ClientResponse:
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, headers=headers, **kw) as response:
            body = await response.read()
    if b'"sid"' in body:  # an engine.io session was opened: close it (packet 1), as a client would
        sid = json.loads(body[1:])["sid"]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}&sid={sid}", data=b"1", headers=headers) as closed:
                await closed.read()
    return response


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("OPTIONS", "/api/visitor-token", None),
        ("POST", "/api/visitor-token", {"tenant": "demo"}),
        ("GET", "/api/availability?tenant=demo&language=en", None),
        ("POST", "/api/offline", {}),
    ],
)
async def test_the_http_api_tells_only_allowed_origins_they_may_read_it(
    connect: Any, method: str, path: str, body: Any
) -> None:
    url = connect.url + path
    evil = await _request(method, url, EVIL, json=body)
    assert ACAO not in evil.headers, (path, dict(evil.headers))
    allowed = await _request(method, url, ALLOWED_ORIGIN, json=body)
    assert allowed.headers.get(ACAO) == ALLOWED_ORIGIN
    own = await _request(method, url, connect.url, json=body)
    assert own.headers.get(ACAO) == connect.url


async def test_the_socket_io_handshake_tells_only_allowed_origins_they_may_read_it(
    connect: Any,
) -> None:
    url = connect.url + "/socket.io/?EIO=4&transport=polling"
    evil = await _request("GET", url, EVIL)
    assert ACAO not in evil.headers
    assert evil.status == 400
    preflight = await _request("OPTIONS", url, EVIL)
    assert ACAO not in preflight.headers
    allowed = await _request("GET", url, ALLOWED_ORIGIN)
    assert allowed.status == 200 and allowed.headers.get(ACAO) == ALLOWED_ORIGIN
    own = await _request("GET", url, connect.url)
    assert own.status == 200
