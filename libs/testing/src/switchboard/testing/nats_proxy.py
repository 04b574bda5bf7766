"""A TCP proxy in front of nats-server that can withhold a client's JetStream acknowledgements:
with `hold_acks` set, every message the client publishes to `$JS.ACK.…` (an ack, nak or term) is
dropped, and everything else passes both ways untouched. A service connected through it commits
its work and never settles the messages, as if it died between its commit and its acks."""

from __future__ import annotations

import asyncio
import contextlib

ACK_PREFIX = b"$JS.ACK."


class NatsProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.hold_acks = False
        self.held = 0  # acknowledgements dropped

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"nats://{host}:{port}"

    async def start(self) -> NatsProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_w.close()
            return
        pumps = [
            asyncio.create_task(self._client_to_server(client_r, server_w)),
            asyncio.create_task(_copy(server_r, client_w)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (client_w, server_w):
                w.close()

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Forward the client's protocol operations one by one, minus held acknowledgements."""
        while True:
            line = await reader.readuntil(b"\r\n")
            words = line.split()
            op = words[0].upper() if words else b""
            payload = b""
            if op in (b"PUB", b"HPUB"):
                # PUB <subject> [reply] <size>, HPUB <subject> [reply] <header size> <total size>
                payload = await reader.readexactly(int(words[-1]) + 2)
                if self.hold_acks and words[1].startswith(ACK_PREFIX):
                    self.held += 1
                    continue
            writer.write(line + payload)
            await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
