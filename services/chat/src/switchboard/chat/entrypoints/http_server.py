"""uvicorn, run inside the service's own event loop on a socket we bind (so port 0 works)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from ssl import SSLContext
from typing import Any

import uvicorn

from switchboard.core import tasks

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 10.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The service's runtime owns SIGTERM/SIGINT and stops us in order; uvicorn must not.
        yield


class HttpServer:
    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        grace_seconds: float = 5.0,
        ws_max_size: int = 1024 * 1024,
        ws_compression: bool = False,
        ssl: SSLContext | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.port = 0
        self._config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, int(grace_seconds)),
            # The `websockets` library's sans-I/O protocol: its frame parsing and masking are
            # C-accelerated, where wsproto (uvicorn's other choice) is pure Python per frame.
            ws="websockets-sansio",
            ws_max_size=ws_max_size,
            # permessage-deflate (RFC 7692), which browsers always offer, only where asked for:
            # a chat frame is a few hundred bytes of JSON that deflate barely shrinks, while each
            # socket would keep a zlib context both ways and every frame pay to compress and
            # decompress (Socket.IO's own server has it off by default for the same reason).
            ws_per_message_deflate=ws_compression,
            # Engine.IO's own heartbeat (ping_interval/ping_timeout) already closes a socket
            # whose peer went away; uvicorn's WebSocket pings on top would cost each held socket
            # a timer and a frame every 20 s for nothing.
            ws_ping_interval=None,
            ws_ping_timeout=None,
            # HTTPS with the context we are given (uvicorn would build its own from files).
            ssl_context_factory=(lambda _config, _default: ssl) if ssl is not None else None,
        )
        self._server = _Server(self._config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind, start serving, and return once uvicorn listens."""
        sock = socket.create_server((self.host, self.requested_port))
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="chat-http")
        async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
            while not self._server.started:
                if self._task.done():
                    sock.close()
                    self._task.result()  # raises what stopped it
                    raise RuntimeError("the HTTP server stopped while starting")
                # uvicorn offers no start-up event to await; its own loop ticks every 0.1 s.
                await asyncio.sleep(0.01)
        scheme = "HTTPS" if self._config.ssl_context_factory else "HTTP"
        logger.info("chat %s on %s:%d", scheme, self.host, self.port)

    def websocket_connections(self) -> list[asyncio.Protocol]:
        """The open WebSocket connections, each as uvicorn's protocol object."""
        protocol = getattr(self._config, "ws_protocol_class", None)  # set once serving
        if protocol is None:
            return []
        return [c for c in self._server.server_state.connections if isinstance(c, protocol)]

    async def stop(self) -> None:
        """Stop accepting, close connections, wait for uvicorn to finish."""
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            grace = self._config.timeout_graceful_shutdown or 5
            await asyncio.wait_for(asyncio.shield(self._task), grace + 2)
        except TimeoutError:
            self._server.force_exit = True
            await tasks.cancel_and_wait(self._task)
        self._task = None
