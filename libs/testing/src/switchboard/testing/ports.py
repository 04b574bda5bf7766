"""Free ports for servers that listen on one port over both TCP and UDP (SIP)."""

from __future__ import annotations

import socket

from switchboard.core.embedded_nats import free_port


def free_tcp_and_udp_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` (0.0.0.0: every address), outside the
    kernel's ephemeral range (`embedded_nats.free_port`)."""
    return free_port(host, socket.SOCK_DGRAM, also=(socket.SOCK_STREAM,))
