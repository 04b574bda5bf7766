"""TCP proxies in front of a real server, for tests that need the network between a client and
it to misbehave. `TcpProxy` forwards every byte both ways; `SilentProxy` can fall silent, as a
peer whose machine died or whose network was cut looks from the other end (no FIN, no RST, no
answer). NatsProxy (nats_proxy.py) withholds a client's JetStream acknowledgements."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self


class TcpProxy:
    """Each connection accepted is forwarded to the upstream on a connection of its own; when
    either side closes, both are closed."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def target(self) -> str:
        """host:port to connect to instead of the upstream."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> Self:
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
            asyncio.create_task(self._copy(server_r, client_w)),
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
        await self._copy(reader, writer)

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


class SilentProxy(TcpProxy):
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self.silent = False

    def silence(self) -> None:
        """From now on nothing gets through, either way, on any connection; none is closed."""
        self.silent = True

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.silent:
            await self._swallow(client_r)
        else:
            await super()._accept(client_r, client_w)

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.silent:
                await self._swallow(reader)
            writer.write(data)
            await writer.drain()

    @staticmethod
    async def _swallow(reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass
        await asyncio.Event().wait()  # the peer closed: this side still says nothing
