"""The chat's HTTP side: the customer page, its assets, /healthz, and gRPC health."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from switchboard.chat.bootstrap import ChatApp
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc

from .conftest import chat_settings, config_for_tests


async def _get(app: ChatApp, path: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{app.http_port}{path}"
        async with session.get(url) as response:
            return response.status, dict(response.headers), await response.read()


async def test_page_assets_and_health(chat: ChatApp) -> None:
    status, headers, body = await _get(chat, "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    page = body.decode()
    assert 'data-tenant="demo"' in page and 'data-max-message-bytes="4000"' in page
    assert "static/vendor/socket.io.min.js" in page
    assert "http://" not in page and "https://" not in page  # no external resources

    status, headers, body = await _get(chat, "/static/chat.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"innerHTML" not in body
    status, _, body = await _get(chat, "/static/vendor/socket.io.min.js")
    assert status == 200 and b"Socket.IO v4" in body
    assert (await _get(chat, "/static/vendor/LICENSE"))[0] == 200
    assert (await _get(chat, "/static/chat.css"))[0] == 200

    status, _, body = await _get(chat, "/healthz")
    assert (status, body) == (200, b"ok")
    assert (await _get(chat, "/static/../settings.py"))[0] == 404
    assert (await _get(chat, "/static/%2e%2e/settings.py"))[0] == 404
    assert (await _get(chat, "/nope"))[0] == 404

    assert await sb_grpc.check_health(f"127.0.0.1:{chat.grpc_port}") == "SERVING"


async def test_stop_closes_connected_clients_promptly(chat: ChatApp, connect: Any) -> None:
    customer = await connect.customer()
    await customer.next("session")
    polling = await connect.raw(
        "/customer", {"token": customer.token, "language": "en"}, transports=("polling",)
    )
    await polling.next("session")

    await asyncio.wait_for(chat.stop(), 10)

    # The websocket client is told at once (a polling client notices on its next poll).
    await asyncio.wait_for(customer.sio.wait(), 10)
    assert not customer.sio.connected


async def _post(
    app: ChatApp, path: str, body: Any, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{app.http_port}{path}"
        async with session.post(url, json=body, headers=headers) as response:
            return response.status, await response.json()


async def test_the_qa_screen_and_its_api_need_an_inbox_token(chat: ChatApp) -> None:
    status, headers, body = await _get(chat, "/qa")
    assert status == 200 and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert b"static/qa.js" in body
    status, _, script = await _get(chat, "/static/qa.js")
    assert status == 200 and b"innerHTML" not in script

    assert (await _post(chat, "/api/qa/samples", {}))[0] == 401
    forged = auth.mint("another-secret", "demo", "qa-1", ["qa"])
    assert (await _post(chat, "/api/qa/samples", {}, forged))[0] == 401
    token = auth.mint("chat-test-secret", "demo", "qa-1", ["qa"])
    status, answer = await _post(chat, "/api/qa/nope", {}, token)
    assert status == 404 and "nope" in answer["error"]
    status, answer = await _post(chat, "/api/qa/samples", {"from": "yesterday", "to": 1}, token)
    assert status == 400 and "from" in answer["error"]
    status, answer = await _post(chat, "/api/qa/decide", {"evaluation_id": "e"}, token)
    assert status == 400 and "uphold" in answer["error"]
    assert (await _get(chat, "/api/qa/samples"))[0] == 405


async def test_the_kb_screen_and_its_api_need_an_inbox_token(chat: ChatApp) -> None:
    status, headers, body = await _get(chat, "/kb")
    assert status == 200 and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert b"static/kb.js" in body
    status, _, script = await _get(chat, "/static/kb.js")
    assert status == 200 and b"innerHTML" not in script

    assert (await _post(chat, "/api/kb/list", {}))[0] == 401
    forged = auth.mint("another-secret", "demo", "ko-1", ["agent"])
    assert (await _post(chat, "/api/kb/list", {}, forged))[0] == 401
    token = auth.mint("chat-test-secret", "demo", "ko-1", ["agent"])
    status, answer = await _post(chat, "/api/kb/nope", {}, token)
    assert status == 404 and "nope" in answer["error"]
    status, answer = await _post(chat, "/api/kb/list", {"state": "lost"}, token)
    assert status == 400 and "state" in answer["error"]
    status, answer = await _post(chat, "/api/kb/attach", {"data": "not base64!"}, token)
    assert status == 400 and "base64" in answer["error"]
    assert (await _get(chat, "/api/kb/list"))[0] == 405


async def test_websockets_are_served_by_the_websockets_library(chat: ChatApp, connect: Any) -> None:
    """uvicorn speaks WebSocket through `websockets` (its C-accelerated framing), keeps the
    size limit, and sends no pings of its own (Engine.IO's heartbeat does that job)."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    customer = await connect.customer()
    await customer.next("session")
    assert chat.http is not None
    [socket] = chat.http.websocket_connections()
    assert isinstance(socket, WebSocketsSansIOProtocol)
    assert socket.ping_interval is None and socket.ping_timer is None
    ack = await customer.call("message", {"text": "안녕하세요"})
    assert ack["ok"], ack


async def _offered_deflate(port: int) -> str:
    """The Sec-WebSocket-Extensions the chat answers a client offering permessage-deflate with
    (as every browser does)."""
    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, compress=15) as ws:
        assert (await ws.receive_str()).startswith("0{")  # Engine.IO OPEN
        extensions = ws._response.headers.get("Sec-WebSocket-Extensions", "")
        await ws.send_str("1")  # Engine.IO CLOSE
        return extensions


async def test_websocket_compression_is_off_unless_configured(chat: ChatApp, nats_url: str) -> None:
    """A browser's offer of permessage-deflate is declined by default (small JSON frames: the
    CPU per frame and a zlib context per socket buy nothing) and accepted with
    CHAT_WS_COMPRESSION."""
    assert chat.http_port is not None
    assert "permessage-deflate" not in await _offered_deflate(chat.http_port)
    compressed = ChatApp(
        chat_settings(nats_url, CHAT_WS_COMPRESSION=True, CHAT_CONSUMER="chat-deflate"),
        config=config_for_tests(),
    )
    await compressed.start()
    try:
        assert compressed.http_port is not None
        assert "permessage-deflate" in await _offered_deflate(compressed.http_port)
    finally:
        await compressed.stop()


async def test_a_websocket_frame_over_the_size_limit_closes_the_socket(chat: ChatApp) -> None:
    url = f"ws://127.0.0.1:{chat.http_port}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        opened = await ws.receive_str()
        assert opened.startswith("0{")  # Engine.IO OPEN
        await ws.send_str("4" + "x" * (1024 * 1024))
        closed = await asyncio.wait_for(ws.receive(), 10)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009  # message too big
