"""A TCP proxy in front of nats-server that can withhold a client's JetStream acknowledgements:
with `hold_acks` set, every message the client publishes to `$JS.ACK.…` (an ack, nak or term) is
dropped, and everything else passes both ways untouched. A service connected through it commits
its work and never settles the messages, as if it died between its commit and its acks. It also
notes the client's operations in the order they reach the server (`ops`: "PING", "SUB subject",
"PUB subject", ...)."""

from __future__ import annotations

import asyncio

from switchboard.testing.tcp_proxy import TcpProxy

ACK_PREFIX = b"$JS.ACK."


class NatsProxy(TcpProxy):
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self.hold_acks = False
        self.held = 0  # acknowledgements dropped
        self.ops: list[str] = []  # the client's operations, as forwarded (the first two words)

    @property
    def url(self) -> str:
        return f"nats://{self.target}"

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
            if words:
                self.ops.append(" ".join(w.decode(errors="replace") for w in words[:2]))
            writer.write(line + payload)
            await writer.drain()
