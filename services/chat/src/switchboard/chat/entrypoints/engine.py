"""Engine.IO sockets that cost the collector less while they are held.

python-engineio gives each WebSocket a task that sleeps until its next heartbeat ping, and its
writer waits for each outgoing packet with ``asyncio.wait_for``, which on Python 3.11 wraps the
wait in one more task. Each task brings its coroutine, context, futures and handles: objects the
garbage collector walks for every socket held, thousands of them with thousands of sockets.

``LeanSocket`` schedules the heartbeat as a plain timer and waits for outgoing packets under
``asyncio.timeout`` (no extra task); it reads a WebSocket's incoming packets the same way, where
Engine.IO starts a task (and a ``wait_for``) for every packet received and keeps one waiting for
every socket held; the protocol on the wire is the same. ``LeanServer`` turns
each new socket into one, before Engine.IO schedules its first ping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import engineio
import socketio
from engineio import async_socket, exceptions, packet


class LeanSocket(async_socket.AsyncSocket):  # type: ignore[misc]
    last_ping: float | None
    connected: bool
    upgraded: bool

    async def poll(self) -> list[packet.Packet]:
        """Wait for packets to send to the client (as Engine.IO's own, without a task)."""
        try:
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                first = await self.queue.get()
            self.queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while True:
            try:
                pkt = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self.queue.task_done()
            if pkt is None:
                self.queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    async def _websocket_handler(self, ws: Any) -> None:
        """Engine.IO's WebSocket loop, reading each packet under a timeout, not in a task."""
        if self.connected:  # an upgrade from long-polling: Engine.IO's own (rare)
            await super()._websocket_handler(ws)
            return
        self.connected = True
        self.upgraded = True

        async def writer() -> None:
            while True:
                try:
                    packets = await self.poll()
                except exceptions.QueueEmpty:
                    break
                if not packets:  # the connection is closing
                    break
                try:
                    for pkt in packets:
                        await ws.send(pkt.encode())
                except Exception:
                    break
            await ws.close()

        writer_task = asyncio.ensure_future(writer())
        server = self.server
        while True:
            try:
                async with asyncio.timeout(server.ping_interval + server.ping_timeout):
                    data = await ws.wait()
            except (asyncio.CancelledError, Exception):  # as Engine.IO's: the socket ends
                break
            if data is None:  # closed by the client
                break
            if len(data) > server.max_http_buffer_size:  # Engine.IO's "packet is too large"
                break
            try:
                pkt = packet.Packet(encoded_packet=data)
                await self.receive(pkt)
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                server.logger.info("Receive error -- socket is closed")
                break
            except Exception:
                server.logger.exception("Unknown receive error")
        await self.queue.put(None)  # the writer ends
        await writer_task
        await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)

    def schedule_ping(self) -> None:
        # As Engine.IO's: only once the previous ping was answered (or on connect).
        if self.last_ping:
            self.last_ping = None
            asyncio.get_running_loop().call_later(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.queue.put_nowait(packet.Packet(packet.PING))


class LeanEngine(engineio.AsyncServer):  # type: ignore[misc]
    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect":  # the socket exists and no ping is scheduled yet
            s = self.sockets.get(args[0])
            if type(s) is async_socket.AsyncSocket:
                s.__class__ = LeanSocket
        return await super()._trigger_event(event, *args, **kwargs)


class LeanSocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server over `LeanEngine`."""

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return LeanEngine
