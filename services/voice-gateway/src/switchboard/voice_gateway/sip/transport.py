"""SIP transports (RFC 3261 section 18): UDP datagrams and TCP/TLS streams, framed by
Content-Length. Bytes become messages here; a malformed request is answered with 400 naming
the fault and the transport keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.voice_gateway.sip.message import (
    MAX_MESSAGE_BYTES,
    SipMessage,
    SipSyntaxError,
    content_length,
    has_tag,
    parse_datagram,
    parse_head,
    validate,
)

logger = logging.getLogger(__name__)

MAX_TCP_CONNECTIONS = 1024
TCP_IDLE_SECONDS = 600.0


@dataclass(frozen=True)
class Peer:
    """Where a message came from or goes to: transport (udp, tcp, tls) and address."""

    transport: str
    host: str
    port: int

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)


Receiver = Callable[[SipMessage, Peer], None]


def error_response(exc: SipSyntaxError) -> SipMessage | None:
    """The 4xx/5xx for a malformed request (section 8.2.6: Via, From, To, Call-ID and CSeq
    copied, a To tag added), or None: a response or an ACK is never answered, and a request
    without a Via cannot be addressed."""
    msg = exc.partial
    if msg is None or not msg.is_request or msg.method == "ACK" or not msg.get_all("Via"):
        return None
    if msg.get("CSeq").split()[-1:] == ["ACK"]:
        return None
    resp = SipMessage(status=exc.status, reason=exc.reason)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in msg.get_all(name)[:1] if name != "Via" else msg.get_all(name):
            if name == "To" and not has_tag(value):
                value = f"{value};tag={secrets.token_hex(6)}"
            resp.add(name, value)
    return resp


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.layer.datagram(data, Peer("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        logger.debug("udp error: %s", exc)


class TransportLayer:
    """Listens on UDP and TCP (and TLS when given a context) on one host."""

    def __init__(self, host: str, receive: Receiver) -> None:
        self.host = host
        self.receive = receive
        self.udp: asyncio.DatagramTransport | None = None
        self.servers: list[asyncio.Server] = []
        self.streams: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self.ports: dict[str, int] = {}
        self.rejected = 0  # malformed messages
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(
        self, port: int, tls_port: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        # UDP and TCP share one port number: bind UDP first (port 0 picks one), then TCP on it.
        for _ in range(20):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, port)
            )
            udp_port = transport.get_extra_info("sockname")[1]
            try:
                server = await asyncio.start_server(
                    lambda r, w: self._serve(r, w, "tcp"), self.host, udp_port
                )
            except OSError:
                transport.close()
                if port:
                    raise
                continue
            self.udp = transport  # type: ignore[assignment]
            self.servers.append(server)
            self.ports["udp"] = self.ports["tcp"] = udp_port
            break
        else:
            raise OSError("no free port for SIP over both UDP and TCP")
        if tls is not None and tls_port is not None:
            server = await asyncio.start_server(
                lambda r, w: self._serve(r, w, "tls"), self.host, tls_port, ssl=tls
            )
            self.servers.append(server)
            self.ports["tls"] = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.udp is not None:
            self.udp.close()
        for server in self.servers:
            server.close()
        for writer in list(self.streams.values()):
            writer.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    # ---- sending ---------------------------------------------------------------------------

    def send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            if self.udp is not None and not self.udp.is_closing():
                self.udp.sendto(data, peer.addr)
            return
        writer = self.streams.get(peer.addr)
        if writer is None or writer.is_closing():
            self._keep(asyncio.ensure_future(self._connect_and_send(data, peer)))
            return
        writer.write(data)

    async def _connect_and_send(self, data: bytes, peer: Peer) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(peer.host, peer.port), 5
            )
        except (OSError, TimeoutError) as exc:
            logger.info("cannot reach %s over tcp: %s", peer.addr, exc)
            return
        self.streams[peer.addr] = writer
        writer.write(data)
        self._keep(asyncio.ensure_future(self._read_stream(reader, writer, peer)))

    def _keep(self, task: asyncio.Future[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- receiving -------------------------------------------------------------------------

    def datagram(self, data: bytes, peer: Peer) -> None:
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626)
        try:
            msg = parse_datagram(data)
        except SipSyntaxError as exc:
            self._reject(exc, peer)
            return
        except Exception:  # a parser bug must not take the transport down
            logger.exception("parsing a datagram from %s", peer.addr)
            self.rejected += 1
            return
        self._deliver(msg, peer)

    def _deliver(self, msg: SipMessage, peer: Peer) -> None:
        try:
            self.receive(msg, peer)
        except SipSyntaxError as exc:
            # A fault found while handling (a header the handler parses further).
            self._reject(SipSyntaxError(exc.reason, exc.partial or msg, exc.status), peer)
        except Exception:
            logger.exception("handling %s from %s", msg.method or msg.status, peer.addr)

    def _reject(self, exc: SipSyntaxError, peer: Peer) -> None:
        self.rejected += 1
        logger.info("malformed SIP from %s:%d: %s", peer.host, peer.port, exc.reason)
        resp = error_response(exc)
        if resp is not None:
            self.send(resp.encode(), peer)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transport: str
    ) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = Peer(transport, host, port)
        if len(self.streams) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self.streams[peer.addr] = writer
        await self._read_stream(reader, writer, peer)

    async def _read_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TCP_IDLE_SECONDS)
                head = head.lstrip(b"\r\n")
                if not head:
                    writer.write(b"\r\n")  # RFC 5626 pong
                    continue
                fault: SipSyntaxError | None = None
                try:
                    msg = parse_head(head[:-4])
                except SipSyntaxError as exc:
                    if exc.partial is None:
                        self._reject(exc, peer)
                        break  # a malformed response: the stream's framing is lost
                    fault, msg = exc, exc.partial
                try:
                    length = content_length(msg)
                    if length is None:  # section 18.3: required on a stream
                        raise SipSyntaxError("Missing Content-Length header", msg)
                except SipSyntaxError as exc:
                    self._reject(exc, peer)
                    break  # the stream's framing is lost
                msg.body = await reader.readexactly(length)
                try:
                    if fault is not None:
                        raise fault
                    validate(msg)
                except SipSyntaxError as exc:
                    self._reject(exc, peer)
                    continue
                self._deliver(msg, peer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except asyncio.LimitOverrunError:
            self._reject(SipSyntaxError("Header section too large"), peer)
        finally:
            if self.streams.get(peer.addr) is writer:
                del self.streams[peer.addr]
            writer.close()


__all__ = ["MAX_MESSAGE_BYTES", "Peer", "TransportLayer", "error_response"]
