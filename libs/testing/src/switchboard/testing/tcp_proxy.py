"""A TCP proxy that can fall silent: until `silence()` it forwards every byte both ways; from then
on it swallows what either side sends and closes nothing, as a peer whose machine died or whose
network was cut looks from the other end (no FIN, no RST, no answer)."""

from __future__ import annotations

import asyncio
import contextlib


class SilentProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.silent = False

    @property
    def target(self) -> str:
        """host:port to connect to instead of the upstream."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> SilentProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    def silence(self) -> None:
        """From now on nothing gets through, either way, on any connection; none is closed."""
        self.silent = True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for writer in self._writers:
            writer.close()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.append(client_w)
        if self.silent:
            await self._swallow(client_r)
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_w.close()
            return
        self._writers.append(server_w)
        pumps = [
            asyncio.create_task(self._copy(client_r, server_w)),
            asyncio.create_task(self._copy(server_r, client_w)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.silent:
                await self._swallow(reader)
                return
            writer.write(data)
            await writer.drain()
        if not self.silent:
            writer.close()

    @staticmethod
    async def _swallow(reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass
        await asyncio.Event().wait()  # the peer closed: this side still says nothing
